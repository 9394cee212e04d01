"""`export_merged`: a LoRA adapter folded into its base weights, saved as a full checkpoint.

The result is an ordinary checkpoint folder (safetensors weights, config, generation config, and the
processor, tokenizer and chat template beside them) that `glmlab.load(DIR)`, transformers and
`vllm serve DIR` load with no adapter machinery, and that answers like base + adapter. Merging needs
full-precision base weights: a quantized base is refused (its rounding would change the answers).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from glmlab.adapters import inspect_adapter
from glmlab.errors import ConfigError
from glmlab.export.vllm import MANIFEST, prepare_output
from glmlab.loading import base_config

logger = logging.getLogger(__name__)


def export_merged(
    adapter: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    overwrite: bool = False,
) -> Path:
    """Merge `adapter` into its base model and save the checkpoint to `out`; returns `out`.

    model: the base model (default: the adapter's own). dtype: "auto" keeps the checkpoint's own dtype
    (bf16 for GLM-4.6V-Flash); "float32" etc. to choose. device: where the merge runs (CPU needs RAM
    for the whole model: ~21 GB in bf16 for GLM-4.6V-Flash).
    """
    from peft import PeftModel

    from glmlab.loading import load

    info = inspect_adapter(adapter)
    base = info.require_base(model)
    config = base_config(base)
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = (
            quantization.get("quant_method")
            if isinstance(quantization, dict)
            else getattr(quantization, "quant_method", None)
        ) or "quantized"
        raise ConfigError(
            f"{base}: a {method} checkpoint; merging into quantized weights would round the adapter "
            "away. Merge into the full-precision base (--model zai-org/GLM-4.6V-Flash or its folder), "
            "or serve the adapter unmerged (glmlab export --format vllm)."
        )
    dtype = _merge_dtype(config, dtype)
    out = Path(out).expanduser()
    with prepare_output(out, overwrite, info.path) as staging:  # `out` is replaced only on success
        vlm = load(base, dtype=dtype, device=device)
        merged = PeftModel.from_pretrained(vlm.model, str(info.path)).merge_and_unload()
        merged.save_pretrained(staging)
        vlm.processor.save_pretrained(staging)
        manifest = {
            "format": "merged",
            "base_model": base,
            "adapter": str(info.path.resolve()),
            "rank": info.rank,
            "modules": info.modules,
            "dtype": dtype,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    logger.info("merged %s into %s: %s", info.path, base, out)
    return out


def _merge_dtype(config, dtype: str) -> str:
    if dtype != "auto":
        return dtype
    saved = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    chosen = saved.removeprefix("torch.")
    logger.info("dtype='auto' -> %s (the checkpoint's own dtype; the merged weights are saved in it)", chosen)
    return chosen
