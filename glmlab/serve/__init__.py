"""glmlab's OpenAI-compatible server over a local GLM-V model, and the bridge to vLLM at scale.

    from glmlab.serve import ServerSettings, create_app, start
    app = create_app(ServerSettings(model="tiny", adapters={"invoices": "runs/invoices/adapter"}))
    server = start(vlm)                       # a loaded VLM, served from a background thread

`glmlab serve` runs the same app under uvicorn; `glmlab serve --engine vllm` runs `vllm serve` instead
(`glmlab.serve.engines.vllm`). Names load on first use, so the CLI does not import FastAPI to start.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "create_app": "glmlab.serve.app",
    "APIError": "glmlab.serve.errors",
    "ServerSettings": "glmlab.serve.settings",
    "ServerThread": "glmlab.serve.runner",
    "serve": "glmlab.serve.runner",
    "start": "glmlab.serve.runner",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glmlab.serve' has no attribute {name!r}")
