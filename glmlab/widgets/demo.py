"""A LoRA adapter with random weights, so notebooks and tests can show adapter switching in seconds.

Training even a tiny adapter takes a while; switching only needs an adapter that changes the answers.
The adapter's shapes come from a skeleton of the model built on the meta device (no memory, no weights
read), its LoRA A and B are random, and it is written in PEFT's format that `VLM.load_adapter` reads.
The loaded model is never touched. Its answers mean nothing: it is a demonstration, not a fine-tune.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The text decoder's q and v projections, anchored to language_model.layers as the recipes' targets are
# (glmlab.lora.recipe.LANGUAGE_TARGETS), so the vision tower is never adapted.
TARGET_MODULES = r".*language_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"


def random_adapter(vlm: Any, out_dir: str | Path, *, rank: int = 4, std: float = 0.5, seed: int = 0) -> Path:
    """Write a random LoRA adapter for `vlm`'s architecture to `out_dir`; returns the folder.

    rank: LoRA rank. std: standard deviation of the A and B weights (large enough to change the tiny
    model's greedy answers). seed: the same seed writes the same weights.
    """
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir).expanduser()
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGET_MODULES, lora_dropout=0.0)
    with torch.device("meta"):
        skeleton = type(vlm.model)(vlm.model.config)
    shapes = get_peft_model_state_dict(get_peft_model(skeleton, config))
    generator = torch.Generator().manual_seed(seed)
    weights = {
        key: torch.randn(value.shape, generator=generator) * std for key, value in sorted(shapes.items())
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    config.base_model_name_or_path = vlm.name
    config.save_pretrained(str(out_dir))
    save_file(weights, str(out_dir / "adapter_model.safetensors"))
    logger.info("random LoRA adapter (rank %d, %d tensors) written to %s", rank, len(weights), out_dir)
    return out_dir
