"""Published facts about the real GLM-4.6V-Flash checkpoint, shipped so nothing needs a download.

`glm-4.6v-flash.config.json` is the config.json of the hub checkpoint `zai-org/GLM-4.6V-Flash` (MIT
licence): a Glm4v network of 10.29 B parameters (40 decoder layers, hidden 4096, 2 KV heads; a 24-block
vision tower). The LoRA estimator counts parameters and adapted shapes from it on PyTorch's meta
device, the tiny checkpoint copies its token ids and rope layout at small sizes, and the GPU benchmark
builds a random-weight model of the real size from it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

GLM46V_FLASH_CONFIG = "glm-4.6v-flash.config.json"


def glm46v_flash_config() -> dict[str, Any]:
    """GLM-4.6V-Flash's config.json as a dict (a fresh copy on every call: callers may change it)."""
    text = resources.files(__name__).joinpath(GLM46V_FLASH_CONFIG).read_text(encoding="utf-8")
    return json.loads(text)
