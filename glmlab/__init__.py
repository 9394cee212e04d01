"""glmlab: a Jupyter-first research toolkit for the GLM-V vision-language models.

    import glmlab
    vlm = glmlab.load("tiny")            # or "zai-org/GLM-4.6V-Flash", or a local folder
    answer = vlm.ask("photo.png", "What is in the picture?")

Heavy names (torch, transformers) load on first use, so scoring a saved eval run or using the client
does not import the model stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from glmlab.answer import Answer, Timing, Usage
from glmlab.errors import AdapterError, ConfigError, GlmlabError, InputError, ModelLoadError

__version__ = "0.1.0"
_LAZY = {
    "load": "glmlab.loading",
    "DEFAULT_MODEL": "glmlab.loading",
    "VLM": "glmlab.model",
    "Client": "glmlab.client",
    "Endpoint": "glmlab.client",
    "load_video": "glmlab.videos",
}
__all__ = [
    "DEFAULT_MODEL",
    "VLM",
    "AdapterError",
    "Answer",
    "ConfigError",
    "GlmlabError",
    "InputError",
    "ModelLoadError",
    "Timing",
    "Usage",
    "load",
    "load_video",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glmlab' has no attribute {name!r}")
