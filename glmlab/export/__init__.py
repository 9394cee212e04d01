"""Taking a trained LoRA adapter to where it is served.

    from glmlab.export import export_vllm, export_merged, register
    export_vllm("runs/invoices/adapter", "exports/invoices-vllm")      # vLLM-ready adapter + manifest
    export_merged("runs/invoices/adapter", "exports/invoices-merged")  # full checkpoint, no adapter
    export_for_serving("runs/invoices/adapter", "exports/invoices")     # whichever of the two vLLM serves
    export_gguf("runs/invoices/adapter", "exports/invoices-gguf", quant="q4_k_m")  # llama.cpp, Ollama
    register("exports/invoices-vllm", "http://localhost:8000/v1")      # load it on a running server

`glmlab export` is the command-line front of these functions (`--format auto` is `export_for_serving`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from glmlab.adapters import AdapterInfo, base_model_of, inspect_adapter, max_lora_rank
from glmlab.export.auto import ServingExport, export_for_serving, servable_format
from glmlab.export.gguf import GgufExport, export_gguf
from glmlab.export.merged import export_merged
from glmlab.export.vllm import MANIFEST, VllmExport, export_vllm, merged_serve_line

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST",
    "AdapterInfo",
    "GgufExport",
    "ServingExport",
    "VllmExport",
    "base_model_of",
    "export_for_serving",
    "export_gguf",
    "export_merged",
    "export_vllm",
    "inspect_adapter",
    "max_lora_rank",
    "merged_serve_line",
    "register",
    "servable_format",
]


def register(
    adapter: str | Path,
    url: str,
    *,
    name: str | None = None,
    api_key: str | None = None,
    check: bool = True,
    timeout_s: float = 120.0,
) -> str:
    """Load `adapter` on a running server (glmlab serve, or vLLM with run-time LoRA updating) and
    check that it answers; returns the name it is served under (default: the folder's name).

    The server reads the folder itself, so it must see the same filesystem (a path under its
    --adapter-root for glmlab's server).
    """
    from glmlab.adapters import check_adapter_folder
    from glmlab.client import Client, ServerError

    folder = Path(adapter).expanduser().resolve()
    check_adapter_folder(folder)
    client = Client(url, api_key=api_key, timeout=timeout_s)
    try:
        name = client.load_adapter(folder, name)
    except ServerError as error:
        if error.status in (404, 405):
            raise ServerError(
                f"{error} The server does not load adapters at run time: start glmlab serve with "
                "--adapter-root, or vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.",
                url=error.url,
                status=error.status,
                server_message=error.server_message,
            ) from None
        raise
    if check:
        if name not in client.models():
            raise ServerError(
                f"{client.base_url}: accepted adapter {name!r} but does not list it in /v1/models.",
                url=client.base_url,
            )
        answer = client.ask(None, "Hello", adapter=name, max_new_tokens=1, temperature=0)
        logger.info(
            "adapter %r answers on %s (%d token)", name, client.base_url, answer.usage.completion_tokens
        )
    return name
