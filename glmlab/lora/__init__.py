"""LoRA fine-tuning of GLM-V models: a recipe dataclass, one `train` verb, and what a run writes.

    from glmlab.lora import LoraRecipe, train
    recipe = LoraRecipe.from_yaml("lora/shapes.yaml")
    result = train(recipe, "runs/shapes", base_model="tiny", **{"optimizer.max_steps": 20})
    result.history            # loss and held-out metric per step (pandas)
    result.plot()             # matplotlib Figure
    vlm = glmlab.load("tiny", adapter="runs/shapes")

`estimate_memory` / `estimate_time` compute a recipe's GPU memory and time from a model config.
"""

from __future__ import annotations

import importlib
from typing import Any

from glmlab.lora.recipe import (
    LANGUAGE_TARGETS,
    MOVED,
    VISION_TARGETS,
    AdapterSettings,
    CheckpointSettings,
    EvaluationSettings,
    HardwareSettings,
    LoraRecipe,
    OptimizerSettings,
    PromptSettings,
    load_recipe,
    shipped_recipe,
)

_LAZY = {
    "train": "glmlab.lora.training",
    "TrainResult": "glmlab.lora.training",
    "LoraCollator": "glmlab.lora.collator",
    "estimate_memory": "glmlab.lora.estimate",
    "estimate_time": "glmlab.lora.estimate",
    "MemoryEstimate": "glmlab.lora.estimate",
    "TimeEstimate": "glmlab.lora.estimate",
    "read_run_info": "glmlab.lora.card",
}
__all__ = [
    "LANGUAGE_TARGETS",
    "MOVED",
    "VISION_TARGETS",
    "AdapterSettings",
    "CheckpointSettings",
    "EvaluationSettings",
    "HardwareSettings",
    "OptimizerSettings",
    "PromptSettings",
    "LoraCollator",
    "LoraRecipe",
    "MemoryEstimate",
    "TimeEstimate",
    "TrainResult",
    "estimate_memory",
    "estimate_time",
    "load_recipe",
    "read_run_info",
    "shipped_recipe",
    "train",
]


def __getattr__(name: str) -> Any:
    """torch and transformers load on first use: reading and validating recipes stays light."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glmlab.lora' has no attribute {name!r}")
