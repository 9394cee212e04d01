"""`random_adapter`: a LoRA adapter with random weights, to show (and test) adapter handling in seconds.

Training even a tiny adapter takes a while; switching, serving, exporting and merging only need an
adapter that changes the answers. The LoRA shapes come from a skeleton of the model built on the meta
device (no memory, no weights read), A and B are random, and the folder is PEFT's format that
`VLM.load_adapter`, peft and vLLM read. Its answers mean nothing: a demonstration, not a fine-tune.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The text decoder's q and v projections, anchored to language_model.layers as the recipes' targets are
# (glmlab.lora.recipe.LANGUAGE_TARGETS), so the vision tower is never adapted.
TARGET_MODULES = r".*language_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"


def random_adapter(
    base: Any,
    out_dir: str | Path,
    *,
    rank: int = 4,
    alpha: int | None = None,
    std: float = 0.5,
    seed: int = 0,
    target_modules: str = TARGET_MODULES,
    modules_to_save: list[str] | None = None,
) -> Path:
    """Write a random LoRA adapter for `base` (a loaded VLM, or a checkpoint folder) to `out_dir`.

    rank / alpha: LoRA rank and alpha (default alpha = rank). std: standard deviation of the A and B
    weights (large enough to change the tiny model's greedy answers). seed: the same seed writes the same
    weights. modules_to_save: whole modules the adapter carries too (e.g. ["lm_head"], as the tiny shapes
    recipe trains), the base's own weights plus noise; this reads the base weights.
    """
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir).expanduser()
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha or rank,
        target_modules=target_modules,
        lora_dropout=0.0,
        modules_to_save=modules_to_save,
    )
    model, name = _base_model(base, weights=bool(modules_to_save))
    shapes = get_peft_model_state_dict(get_peft_model(model, config))
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, value in sorted(shapes.items()):
        noise = torch.randn(value.shape, generator=generator) * std
        weights[key] = noise if value.is_meta else (value.detach().float() + noise).to(value.dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.base_model_name_or_path = name
    config.save_pretrained(str(out_dir))
    save_file(weights, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    logger.info("random LoRA adapter (rank %d, %d tensors) written to %s", rank, len(weights), out_dir)
    return out_dir


def _base_model(base: Any, *, weights: bool) -> tuple[Any, str]:
    """A model to read the adapter's shapes from (a meta skeleton unless weights are needed), and its name."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    if isinstance(base, str | Path):
        name = str(base)
        if weights:
            return AutoModelForImageTextToText.from_pretrained(name), name
        config = AutoConfig.from_pretrained(name)
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config), name
    if weights:
        import copy

        return copy.deepcopy(base.model), base.name
    with torch.device("meta"):
        return type(base.model)(base.model.config), base.name
