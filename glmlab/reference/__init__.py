"""Published facts about the real GLM-4.6V-Flash checkpoint, shipped so nothing needs a download.

`glm-4.6v-flash.config.json` is the config.json of the hub checkpoint `zai-org/GLM-4.6V-Flash` (MIT
licence): a Glm4v network of 10.29 B parameters (40 decoder layers, hidden 4096, 2 KV heads; a 24-block
vision tower). The LoRA estimator counts parameters and adapted shapes from it on PyTorch's meta
device, the tiny checkpoint copies its token ids and rope layout at small sizes, and the GPU benchmark
builds a random-weight model of the real size from it.

`glm-4.5v.config.json` is the config.json of `zai-org/GLM-4.5V` (MIT licence; its `rope_*` keys in the
`rope_parameters` layout transformers 5.x reads): a `glm4v_moe` network of 107.71 B parameters, 46
decoder layers of which the first is dense and the other 45 mixture-of-experts (128 routed experts, 8
per token, one shared expert), 96 query heads of dimension 128 over a 4096 hidden size. GLM-4.6V is the
same architecture. The tiny MoE checkpoint copies it at small sizes.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

GLM46V_FLASH_CONFIG = "glm-4.6v-flash.config.json"
GLM45V_CONFIG = "glm-4.5v.config.json"


def glm46v_flash_config() -> dict[str, Any]:
    """GLM-4.6V-Flash's config.json as a dict (a fresh copy on every call: callers may change it)."""
    return _read(GLM46V_FLASH_CONFIG)


def glm45v_config() -> dict[str, Any]:
    """GLM-4.5V's config.json (the glm4v_moe architecture) as a dict, a fresh copy on every call."""
    return _read(GLM45V_CONFIG)


def _read(name: str) -> dict[str, Any]:
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))
