"""LoRA adapters: what an adapter folder holds and may load (`folder`), and the named adapters injected
into a model (`injected.AdapterSet`), and adapters with random weights for demonstrations and tests
(`random.random_adapter`). Below the model, the server and the exporters, which all read
and load adapters through here.
"""

from glmlab.adapters.folder import (
    FUSED_INTO,
    MAX_LORA_RANK,
    TEXT_LAYERS,
    TEXT_MODULES,
    TOWER_FLAG,
    VISION_PREFIX,
    VLLM_LORA_RANKS,
    AdapterInfo,
    VllmModules,
    base_model_of,
    check_adapter_folder,
    check_adapter_name,
    check_for_loading,
    check_for_vllm,
    inspect_adapter,
    max_lora_rank,
    module_name,
    text_target_regex,
    vllm_modules,
    vllm_rank,
    vllm_target_regex,
)
from glmlab.adapters.injected import AdapterSet
from glmlab.adapters.random import random_adapter

__all__ = [
    "FUSED_INTO",
    "MAX_LORA_RANK",
    "TEXT_LAYERS",
    "TEXT_MODULES",
    "TOWER_FLAG",
    "VISION_PREFIX",
    "VLLM_LORA_RANKS",
    "AdapterInfo",
    "AdapterSet",
    "VllmModules",
    "base_model_of",
    "check_adapter_folder",
    "check_adapter_name",
    "check_for_loading",
    "check_for_vllm",
    "inspect_adapter",
    "max_lora_rank",
    "module_name",
    "random_adapter",
    "text_target_regex",
    "vllm_modules",
    "vllm_rank",
    "vllm_target_regex",
]
