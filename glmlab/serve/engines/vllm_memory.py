"""The default `--max-model-len` of `glmlab serve --engine vllm`: the longest context whose KV cache fits.

vLLM reserves KV cache for `--max-model-len` tokens when it starts and refuses to start when they do not
fit; left unset it takes the model's whole context (131,072 tokens for GLM-4.6V-Flash: 5 GiB of KV cache
next to 19.2 GiB of bf16 weights, more than a 24 GB card holds). The rule, per GPU:

    free   = gpu_memory_gib x gpu_memory_utilization (vLLM's default 0.9)
             - weights / tensor_parallel_size
             - LoRA slots: max_loras x max_lora_rank x (in + out features of the decoder's linear layers) x 2 bytes
             - OVERHEAD_GIB (vLLM's profile run: activations, the vision encoder, CUDA graphs, CUDA context)
    tokens = free / (KV bytes per token), rounded down to a multiple of 1024, capped at the model's context
    KV bytes per token = 2 (K and V) x layers x KV heads per GPU x head dim x 2 bytes (bf16 cache)

Weights are counted on PyTorch's meta device from the model's config (2 bytes a parameter in bf16/fp16;
with 4-bit bitsandbytes the decoder's linear layers take BNB_4BIT_BYTES). GLM-4.6V-Flash: 10.29 B
parameters = 19.2 GiB in bf16, KV cache 2 x 40 x 2 x 128 x 2 bytes = 40 KiB a token. The config is the
model's own where it can be read, else the shipped GLM-4.6V-Flash config (`glmlab.reference`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from glmlab.errors import ConfigError, GlmlabError

logger = logging.getLogger(__name__)

GIB = 1024**3
VLLM_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
OVERHEAD_GIB = 2.0  # a margin for what vLLM's start-up profile measures besides weights and KV cache
BNB_4BIT_BYTES = 0.5 + 4 / 64  # 4-bit codes plus one fp32 absmax per block of 64 weights
CONTEXT_STEP = 1024
MIN_CONTEXT = 2048  # below this a GLM-V conversation with one image hardly fits: refuse instead


@dataclass(frozen=True)
class Footprint:
    """What the rule needs from a Glm4v config."""

    total_params: int
    decoder_linear_params: int  # parameters of the text decoder's linear layers (4-bit with bitsandbytes)
    lora_features: int  # sum of in + out features of the decoder's linear layers (one rank's LoRA A and B)
    layers: int
    kv_heads: int
    head_dim: int
    context: int  # max_position_embeddings
    dtype: str


def footprint(config: dict[str, Any]) -> Footprint:
    """The footprint of a config.json dict (its network built on the meta device, cached)."""
    return _footprint(json.dumps(config, sort_keys=True))


@lru_cache(maxsize=4)
def _footprint(config_json: str) -> Footprint:
    import torch

    from glmlab.loading import meta_model

    model = meta_model(json.loads(config_json))
    text = model.config.get_text_config()
    decoder = [
        module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and "language_model.layers" in name
    ]
    return Footprint(
        total_params=sum(parameter.numel() for parameter in model.parameters()),
        decoder_linear_params=sum(module.weight.numel() for module in decoder),
        lora_features=sum(module.in_features + module.out_features for module in decoder),
        layers=text.num_hidden_layers,
        kv_heads=text.num_key_value_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        context=text.max_position_embeddings,
        dtype=str(json.loads(config_json).get("dtype") or "bfloat16"),
    )


def model_config(model: str) -> dict[str, Any]:
    """The model's config.json as a dict, or GLM-4.6V-Flash's (shipped) when it cannot be read from here."""
    from glmlab.loading import base_config
    from glmlab.reference import glm46v_flash_config

    try:
        return base_config(model).to_dict()
    except GlmlabError as error:
        logger.warning("%s; the default --max-model-len assumes GLM-4.6V-Flash's config", error)
        return glm46v_flash_config()


def fitting_context(
    config: dict[str, Any],
    gpu_memory_gib: float,
    *,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int = 1,
    quantize: str | None = None,
    dtype: str = "auto",
    lora_slots: int = 0,
    lora_rank: int = 0,
) -> int:
    """The longest context (tokens) whose KV cache fits on each GPU by the module's rule."""
    shape = footprint(config)
    weight_dtype = shape.dtype if dtype == "auto" else dtype
    bytes_per_param = 4 if weight_dtype == "float32" else 2
    weights = shape.total_params * bytes_per_param
    if quantize == "4bit":
        weights -= shape.decoder_linear_params * (bytes_per_param - BNB_4BIT_BYTES)
    lora = lora_slots * lora_rank * shape.lora_features * 2
    utilization = gpu_memory_utilization or VLLM_GPU_MEMORY_UTILIZATION
    free = gpu_memory_gib * GIB * utilization - weights / tensor_parallel_size - lora - OVERHEAD_GIB * GIB
    kv_heads = max(1, shape.kv_heads // tensor_parallel_size)  # vLLM replicates heads beyond their count
    per_token = 2 * shape.layers * kv_heads * shape.head_dim * 2
    tokens = min(shape.context, int(max(free, 0) // per_token) // CONTEXT_STEP * CONTEXT_STEP)
    if tokens < min(MIN_CONTEXT, shape.context):
        raise ConfigError(
            f"gpu_memory_gib={gpu_memory_gib:g}: {weights / tensor_parallel_size / GIB:.1f} GiB of weights"
            f"{f' and {lora / GIB:.1f} GiB of LoRA slots' if lora else ''} plus {OVERHEAD_GIB:g} GiB of "
            f"overhead leave room for {max(tokens, 0)} tokens of KV cache at gpu_memory_utilization="
            f"{utilization:g}; use a larger GPU, --tensor-parallel-size, --quantize 4bit, a higher "
            "--gpu-memory-utilization or fewer --max-loras, or set --max-model-len yourself."
        )
    return tokens
