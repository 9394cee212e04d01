"""How much GPU memory and time a recipe needs, computed from the model's config (not guessed).

The network is built on PyTorch's meta device (shapes only, no memory), so parameter counts and the
shapes of the adapted modules are exact for any Glm4v config. Without a config, every function uses
GLM-4.6V-Flash's, shipped in the package (`glmlab.reference.glm46v_flash_config`). The formulas (stated in lora/README.md):

memory = weights + adapter states + activations + logits + vision + overhead
- element size: 2 bytes in bf16/fp16, 4 in fp32, and 4 with QLoRA: peft's
  prepare_model_for_kbit_training (which glmlab.lora.training calls) upcasts every weight that is not
  4-bit to fp32, so the embeddings' output, hence the residual stream and every activation, is fp32.
- weights: total params x element size; with QLoRA the text decoder's linear layers take NF4_BYTES/param
  (4-bit codes plus double-quantised block scales) while embeddings, norms, lm_head and vision are fp32.
- adapter states: every trainable param (LoRA A/B, modules_to_save) holds an fp32 copy, an fp32
  gradient and two fp32 AdamW moments: 16 bytes. The frozen base has no gradients or moments.
- activations per token and decoder layer, saved for backward: frozen linear layers keep no input, so
  what remains is the four RMSNorm inputs and normed values, the normed inputs the LoRA A matrices
  read, q/k/v and the attention output, and the SwiGLU tensors: 9h + 2*kv + 4*I elements (counted
  with PyTorch's saved-tensor hooks on the bench model), plus the LoRA dropout copies and their
  one-byte masks ((5h + I) x (element + 1) bytes) when dropout > 0. With gradient checkpointing only
  each layer's input (h) is kept, and one layer is recomputed at a time.
- logits: only the answer tokens get logits (glmlab's loss), vocab x (the logits + an fp32 copy
  when they are not fp32 + cross-entropy's fp32 log-softmax + the fp32 gradient).
- vision: frozen, so only one block's forward is alive at a time (patches = 4 per image token).
- overhead: CUDA context and allocator slack, OVERHEAD_GIB.

time per optimiser step = training FLOPs / (MFU x peak bf16 FLOP/s), with training FLOPs =
(2 forward + 2 backward-to-inputs [+ 2 recomputed forward with checkpointing]) x N_text x tokens
(+ attention, the vision forward and lm_head on the answer tokens). A full fine-tune's usual 6NT
also computes weight gradients (2NT) that LoRA skips for the frozen base.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from glmlab.data.source import DEFAULT_GENERATED_SAMPLES
from glmlab.lora.recipe import LoraRecipe
from glmlab.reference import glm46v_flash_config
from glmlab.settings import MIN_IMAGE_PIXELS

GIB = 1024**3
BF16_BYTES = 2
NF4_BYTES = 0.52  # 4 bits + one fp8 scale per 64 weights + one fp32 scale per 256 blocks (bnb double quant)
ADAPTER_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + two fp32 AdamW moments
OVERHEAD_GIB = 1.0  # CUDA context (~0.5 GiB) + caching-allocator fragmentation
MFU = 0.40  # achievable share of peak bf16 throughput for a 9B decoder at these sequence lengths
TOKEN_PIXELS = MIN_IMAGE_PIXELS  # one image token covers 28x28 px after the 2x2 merge of 14 px patches
DECODE_TOKENS_PER_S = 20  # transformers greedy decoding of GLM-4.1V-9B (same network) on an A100: 14-22


@dataclass(frozen=True)
class GpuProfile:
    name: str
    memory_gb: float  # as sold: 10^9 bytes
    bf16_tflops: float  # dense peak

    @property
    def memory_gib(self) -> float:
        return self.memory_gb * 1e9 / GIB


GPUS = {
    "24GB": GpuProfile("24 GB (NVIDIA A10, 125 TFLOP/s bf16)", 24, 125),
    "80GB": GpuProfile("80 GB (NVIDIA H100 SXM, 989 TFLOP/s bf16)", 80, 989),
    "A100": GpuProfile("NVIDIA A100 80 GB (312 TFLOP/s bf16)", 80, 312),
}


@dataclass(frozen=True)
class SampleShape:
    """Tokens of one typical sample: image tokens, prompt text and answer (with the end token)."""

    image_tokens: int
    prompt_tokens: int
    answer_tokens: int

    @property
    def tokens(self) -> int:
        return self.image_tokens + self.prompt_tokens + self.answer_tokens


@dataclass(frozen=True)
class ModelShapes:
    """What the formulas need from a config, counted on the meta device."""

    total_params: int
    text_linear_params: int  # linear layers of the decoder (quantised by QLoRA)
    vision_linear_params: int
    hidden: int
    kv_dim: int
    intermediate: int
    layers: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    linear_shapes: tuple[tuple[str, int, int], ...]  # (name, in_features, out_features)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak GPU memory of one training step, by part (GiB)."""

    weights_gib: float
    adapter_gib: float
    activations_gib: float
    logits_gib: float
    vision_gib: float
    overhead_gib: float
    trainable_params: int
    tokens_per_micro_batch: int

    @property
    def total_gib(self) -> float:
        return (
            self.weights_gib
            + self.adapter_gib
            + self.activations_gib
            + self.logits_gib
            + self.vision_gib
            + self.overhead_gib
        )


@dataclass(frozen=True)
class TimeEstimate:
    """Throughput-bound time of a run on one GPU."""

    gpu: str
    tokens_per_step: int
    tflops_per_step: float
    seconds_per_step: float
    steps: int

    @property
    def hours(self) -> float:
        return self.seconds_per_step * self.steps / 3600


def model_shapes(config: Any = None) -> ModelShapes:
    """Parameter counts and linear-layer shapes of a Glm4v config (a config object, dict, config.json path,
    or None for GLM-4.6V-Flash)."""
    return _shapes(json.dumps(_config_dict(config), sort_keys=True))


@lru_cache(maxsize=4)
def _shapes(config_json: str) -> ModelShapes:
    import torch

    from glmlab.loading import meta_model

    model = meta_model(json.loads(config_json))
    config = model.config
    linears = tuple(
        (name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    )
    text, vision = config.text_config, config.vision_config
    first_vision_mlp = next(
        shape for shape in linears if re.search(r"visual\.blocks\.0\.mlp\.up_proj$", shape[0])
    )
    return ModelShapes(
        total_params=sum(parameter.numel() for parameter in model.parameters()),
        text_linear_params=sum(i * o for name, i, o in linears if "language_model.layers" in name),
        vision_linear_params=sum(i * o for name, i, o in linears if ".visual." in name),
        hidden=text.hidden_size,
        kv_dim=text.num_key_value_heads * (text.hidden_size // text.num_attention_heads),
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        vision_hidden=vision.hidden_size,
        vision_intermediate=first_vision_mlp[2],
        linear_shapes=linears,
    )


def sample_shape(recipe: LoraRecipe, samples: int = 8) -> SampleShape:
    """A typical sample of the recipe's generator: image tokens from its pixel budget, text from characters.

    Text tokens are estimated from characters (GLM-4's tokenizer: ~3.5 ASCII characters per token,
    ~1.4 CJK characters per token), since the tiny checkpoint's byte-level tokenizer cannot count them.
    The template adds ~12 tokens ([gMASK]<sop>, roles, image markers, /nothink, empty think block).
    """
    from glmlab.data import generate, to_messages

    data, settings = recipe.data, recipe.prompt
    if not data.generator:
        return SampleShape(
            image_tokens=settings.max_image_pixels // TOKEN_PIXELS, prompt_tokens=64, answer_tokens=64
        )
    records = generate(data.generator, samples, seed=recipe.data_seed, **data.options)
    image, prompt, answer = [], [], []
    for record in records:
        image.append(_media_tokens(record, settings.max_image_pixels))
        messages = to_messages(record)
        prompt.append(
            12
            + _text_tokens(settings.instruction or messages[-2]["content"])
            + _text_tokens(settings.system or "")
        )
        answer.append(_text_tokens(messages[-1]["content"]) + 1)
    mean = lambda values: math.ceil(sum(values) / len(values))  # noqa: E731
    return SampleShape(mean(image), mean(prompt), mean(answer))


def estimate_memory(
    recipe: LoraRecipe, config: Any = None, *, sample: SampleShape | None = None
) -> MemoryEstimate:
    """Peak GPU memory of training `recipe` on the model of `config` (GLM-4.6V-Flash when None; see the
    module docstring)."""
    shapes = model_shapes(config)
    sample = sample or sample_shape(recipe)
    batch_size, hardware = recipe.optimizer.batch_size, recipe.hardware
    tokens = batch_size * sample.tokens
    trainable = lora_parameter_count(recipe, shapes) + _saved_module_params(recipe, shapes)
    element = element_bytes(hardware)
    weights = shapes.total_params * element
    if hardware.quantize_4bit:
        weights -= shapes.text_linear_params * (element - NF4_BYTES)
    per_layer = (9 * shapes.hidden + 2 * shapes.kv_dim + 4 * shapes.intermediate) * element
    if recipe.adapter.dropout > 0:
        per_layer += (5 * shapes.hidden + shapes.intermediate) * (element + 1)
    if hardware.gradient_checkpointing:
        activations = tokens * (shapes.layers * shapes.hidden * element + per_layer)
    else:
        activations = tokens * shapes.layers * per_layer
    fp32_copy = 0 if element == 4 else 4
    logits = batch_size * sample.answer_tokens * shapes.vocab * (element + fp32_copy + 4 + 4)
    patches = batch_size * 4 * sample.image_tokens
    vision = patches * (4 * shapes.vision_hidden + 3 * shapes.vision_intermediate) * element
    return MemoryEstimate(
        weights_gib=weights / GIB,
        adapter_gib=trainable * ADAPTER_BYTES_PER_PARAM / GIB,
        activations_gib=activations / GIB,
        logits_gib=logits / GIB,
        vision_gib=vision / GIB,
        overhead_gib=OVERHEAD_GIB,
        trainable_params=trainable,
        tokens_per_micro_batch=tokens,
    )


def element_bytes(hardware: Any) -> int:
    """Bytes per unquantised weight and per activation: 4 in fp32 and with QLoRA (peft's
    prepare_model_for_kbit_training upcasts every non-4-bit weight to fp32), else 2."""
    return 4 if hardware.quantize_4bit or hardware.precision == "fp32" else BF16_BYTES


def estimate_time(
    recipe: LoraRecipe,
    config: Any = None,
    gpu: str | GpuProfile = "80GB",
    *,
    sample: SampleShape | None = None,
) -> TimeEstimate:
    """Time of the whole run on one GPU at MFU x its peak bf16 throughput (see the module docstring)."""
    profile = GPUS[gpu] if isinstance(gpu, str) else gpu
    shapes = model_shapes(config)
    sample = sample or sample_shape(recipe)
    samples_per_step = recipe.optimizer.batch_size * recipe.optimizer.gradient_accumulation_steps
    tokens = samples_per_step * sample.tokens
    passes = (
        6 if recipe.hardware.gradient_checkpointing else 4
    )  # forward, backward to inputs, (recomputed forward)
    attention = 4 * sample.tokens * shapes.hidden * shapes.layers  # QK^T and AV, per token, forward
    flops = tokens * passes / 2 * (2 * shapes.text_linear_params + attention)
    flops += samples_per_step * 4 * sample.image_tokens * 2 * shapes.vision_linear_params  # vision forward
    flops += samples_per_step * sample.answer_tokens * 3 * 2 * shapes.hidden * shapes.vocab  # lm_head
    seconds = flops / (MFU * profile.bf16_tflops * 1e12)
    return TimeEstimate(
        gpu=profile.name,
        tokens_per_step=tokens,
        tflops_per_step=flops / 1e12,
        seconds_per_step=seconds,
        steps=total_steps(recipe),
    )


def total_steps(recipe: LoraRecipe) -> int:
    """Optimiser steps; a folder/hub source without data.n counts as DEFAULT_GENERATED_SAMPLES
    records (its size is unknown before loading)."""
    optimizer = recipe.optimizer
    if optimizer.max_steps:
        return optimizer.max_steps
    per_epoch = math.ceil(
        (recipe.data.n or DEFAULT_GENERATED_SAMPLES)
        / (optimizer.batch_size * optimizer.gradient_accumulation_steps)
    )
    return math.ceil(per_epoch * optimizer.epochs)


def lora_parameter_count(recipe: LoraRecipe, shapes: ModelShapes) -> int:
    """r x (in + out) for every linear layer the recipe's regex adapts (peft's full-match rule)."""
    pattern = re.compile(recipe.adapter.target_regex)
    return sum(
        recipe.adapter.rank * (i + o) for name, i, o in shapes.linear_shapes if pattern.fullmatch(name)
    )


def _saved_module_params(recipe: LoraRecipe, shapes: ModelShapes) -> int:
    return sum(
        i * o
        for name, i, o in shapes.linear_shapes
        if any(name == saved or name.endswith("." + saved) for saved in recipe.adapter.modules_to_save)
    )


def _media_tokens(record: dict[str, Any], max_image_pixels: int) -> int:
    """A generated record's image tokens, or its video's: per temporal pair of the frames `vlm.ask`
    samples (glmlab.videos defaults), one token per 28x28 px of the frame rounded to 28 px a side (the
    video processor neither upscales small frames nor, for the small clips of the generators, shrinks them)."""
    if "video" not in record:
        width, height = record["image"].size
        return image_tokens(width, height, max_image_pixels)
    from glmlab.videos import DEFAULT_FPS, DEFAULT_MAX_FRAMES, TEMPORAL_PATCH_SIZE, probe, sample_indices

    info = probe(record["video"])
    pairs = len(sample_indices(info, DEFAULT_FPS, DEFAULT_MAX_FRAMES)) // TEMPORAL_PATCH_SIZE
    side = math.isqrt(TOKEN_PIXELS)
    per_pair = max(1, round(info.width / side)) * max(1, round(info.height / side))
    return pairs * min(per_pair, max_image_pixels // TOKEN_PIXELS)


def image_tokens(width: int, height: int, max_image_pixels: int) -> int:
    """Image tokens the processor gives a width x height image: its own resize rule (multiples of
    28 px within the pixel budget), then one token per 28x28 px."""
    from transformers.models.glm46v.image_processing_glm46v import smart_resize

    from glmlab.prompts import pixel_budget_size

    size = pixel_budget_size(max_image_pixels)
    resized_height, resized_width = smart_resize(
        num_frames=2,
        height=height,
        width=width,
        min_pixels=size["shortest_edge"],
        max_pixels=size["longest_edge"],
    )
    return resized_height * resized_width // TOKEN_PIXELS


def _text_tokens(text: str) -> int:
    ascii_chars = sum(char.isascii() for char in text)
    return math.ceil(ascii_chars / 3.5 + (len(text) - ascii_chars) / 1.4)


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return glm46v_flash_config()
    if isinstance(config, str | Path):
        return json.loads(Path(config).read_text(encoding="utf-8"))
    if isinstance(config, dict):
        return dict(config)
    return config.to_dict()


# ---- the lora/README.md table -------------------------------------------------------------------

README_RECIPES = ("shapes", "invoices-zh", "invoices-en", "medical-phantoms", "moderation")
# How each recipe is run on the real model: shapes drops its tiny-model-only lm_head (see shapes.yaml).
REAL_MODEL_OVERRIDES = {"shapes": {"adapter.modules_to_save": []}}


def estimate_rows(config: Any = None, names: tuple[str, ...] = README_RECIPES) -> list[dict[str, Any]]:
    """One row per shipped recipe: data size, tokens, memory in bf16 and 4-bit, time on 24 and 80 GB GPUs.

    The 24 GB column uses QLoRA when the bf16 estimate leaves less than 10% of the card (22.4 GiB) free.
    """
    from glmlab.lora.recipe import shipped_recipe

    rows = []
    for name in names:
        recipe = shipped_recipe(name).replace(**REAL_MODEL_OVERRIDES.get(name, {}))
        sample = sample_shape(recipe)
        bf16 = estimate_memory(recipe, config, sample=sample)
        nf4 = estimate_memory(recipe.replace(**{"hardware.quantize_4bit": True}), config, sample=sample)
        small = GPUS["24GB"]
        small_setting, small_memory = (
            ("bf16", bf16) if bf16.total_gib <= 0.9 * small.memory_gib else ("4-bit", nf4)
        )
        rows.append(
            {
                "recipe": name,
                "train_records": recipe.data.n,
                "eval_records": recipe.evaluation.samples,
                "image_tokens": sample.image_tokens,
                "text_tokens": sample.prompt_tokens + sample.answer_tokens,
                "trainable_params": bf16.trainable_params,
                "steps": total_steps(recipe),
                "memory_bf16_gib": bf16.total_gib,
                "memory_4bit_gib": nf4.total_gib,
                "gpu24_setting": small_setting,
                "gpu24_memory_gib": small_memory.total_gib,
                "gpu24_hours": estimate_time(recipe, config, "24GB", sample=sample).hours,
                "gpu80_memory_gib": bf16.total_gib,
                "gpu80_hours": estimate_time(recipe, config, "80GB", sample=sample).hours,
                "eval_hours": evaluation_hours(recipe, sample),
            }
        )
    return rows


def anchor_estimate(config: Any = None) -> MemoryEstimate:
    """The formula on the published anchor: GLM-4.1V-9B (the same network), LoRA with frozen vision, batch 1,
    measured at 21 GB on an A100. Assumed (the anchor's settings are not published): rank 8 on the
    default targets, gradient checkpointing, 1,000 image tokens with 100 prompt and 100 answer tokens."""
    recipe = LoraRecipe.from_dict(
        {
            "data": {"generator": "shapes"},
            "adapter": {"rank": 8, "alpha": 16},
            "optimizer": {"batch_size": 1},
            "hardware": {"gradient_checkpointing": True},
        }
    )
    return estimate_memory(
        recipe, config, sample=SampleShape(image_tokens=1000, prompt_tokens=100, answer_tokens=100)
    )


def evaluation_hours(recipe: LoraRecipe, sample: SampleShape) -> float:
    """Greedy decoding of the held-out answers: before training, every evaluation.every_steps, and at the end."""
    evaluation = recipe.evaluation
    if not evaluation.samples:
        return 0.0
    steps = total_steps(recipe)
    passes = 1 + (steps // evaluation.every_steps if evaluation.every_steps else 0)
    passes += bool(not evaluation.every_steps or steps % evaluation.every_steps)
    return passes * evaluation.samples * sample.answer_tokens / DECODE_TOKENS_PER_S / 3600


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as the markdown table lora/README.md shows (written by hand: no table library needed)."""
    header = (
        "| recipe | records (train / held-out) | tokens per sample (image + text) | trainable params | "
        "steps | memory bf16 / 4-bit | 24 GB GPU | 80 GB GPU | + held-out evaluation |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"| {row['recipe']} | {row['train_records']:,} / {row['eval_records']} | "
            f"{row['image_tokens']} + {row['text_tokens']} | {row['trainable_params'] / 1e6:.1f} M | "
            f"{row['steps']} | "
            f"{row['memory_bf16_gib']:.1f} / {row['memory_4bit_gib']:.1f} GiB | "
            f"{row['gpu24_setting']}: {row['gpu24_memory_gib']:.1f} GiB, {_duration(row['gpu24_hours'])} | "
            f"bf16: {row['gpu80_memory_gib']:.1f} GiB, {_duration(row['gpu80_hours'])} | "
            f"{_duration(row['eval_hours'])} |"
        )
    return "\n".join(lines)


def _duration(hours: float) -> str:
    if hours * 60 < 1:
        return f"{hours * 3600:.0f} s"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"
