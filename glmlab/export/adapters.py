"""What a LoRA adapter folder holds, and what of it vLLM can serve.

`inspect_adapter` reads an adapter without loading a model: its rank (largest of `r` and
`rank_pattern`), the modules its safetensors weights adapt (by their transformers names), and its base
model (glmlab.json beside it, written by glmlab's training, else adapter_config.json). `vllm_modules`
sorts those modules the way vLLM's Glm4vForConditionalGeneration will treat them: LoRA on the
language model only (its vision tower is not LoRA-enabled), ranks up to 512.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from glmlab.errors import AdapterError, ConfigError

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values
TEXT_LAYERS = "model.language_model.layers."
VISION_PREFIX = "model.visual."
# Glm4v text decoder linears vLLM accepts LoRA on (q/k/v are packed into qkv_proj by vLLM itself).
TEXT_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_up_proj",
    "mlp.down_proj",
)
_WEIGHT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?:lora_A|lora_B|lora_embedding_A|"
    r"lora_embedding_B|lora_magnitude_vector)(?:\.[^.]+)?(?:\.weight)?$"
)


@dataclass
class AdapterInfo:
    """A PEFT LoRA adapter folder as read from its files."""

    path: Path
    config: dict
    base_model: str | None
    rank: int
    # adapted modules, by their transformers names ("model.language_model.layers.0.self_attn.q_proj")
    modules: list[str]

    def require_base(self, model: str | None = None) -> str:
        """`model` if given, else the adapter's own base model; an error naming the fix when neither."""
        base = model or self.base_model
        if not base:
            raise ConfigError(
                f"{self.path}: names no base model (no glmlab.json, no base_model_name_or_path); "
                "pass model= (--model)."
            )
        return base


def inspect_adapter(path: str | Path) -> AdapterInfo:
    """Read an adapter folder (safetensors only: pickled weights are refused)."""
    from safetensors import safe_open

    from glmlab.model import check_adapter_folder

    folder = Path(path).expanduser()
    check_adapter_folder(folder)
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as weights:
            keys = sorted(weights.keys())
    except (OSError, ValueError) as error:
        raise AdapterError(f"{folder}: unreadable adapter files ({error}).") from None
    ranks = [int(config.get("r", 0)), *(int(value) for value in (config.get("rank_pattern") or {}).values())]
    modules = sorted({module_name(key) for key in keys})
    return AdapterInfo(folder, config, base_model_of(folder, config), max(ranks), modules)


def base_model_of(folder: Path, config: dict | None = None) -> str | None:
    """The adapter's base model: glmlab.json's `base_model` (glmlab training writes it), else PEFT's
    `base_model_name_or_path`."""
    marker = folder / "glmlab.json"
    if marker.exists():
        try:
            meta = json.loads(marker.read_text())
        except ValueError as error:
            raise AdapterError(f"{marker}: not valid JSON ({error}).") from None
        for key in ("base_model", "model"):
            if isinstance(meta.get(key), str) and meta[key]:
                return meta[key]
    if config is None:
        config = json.loads((folder / "adapter_config.json").read_text())
    return config.get("base_model_name_or_path") or None


def module_name(key: str) -> str:
    """The adapted module a safetensors key belongs to, by its transformers name."""
    match = _WEIGHT_KEY.match(key)
    return match.group("module") if match else key.removeprefix("base_model.model.")


def max_lora_rank(rank: int) -> int:
    """vLLM's --max-lora-rank for an adapter of `rank`: the smallest allowed value >= rank."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ConfigError(
        f"LoRA rank {rank}: vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}; retrain with a smaller r."
    )


@dataclass
class VllmModules:
    """An adapter's modules sorted by what vLLM does with them."""

    text: list[str]  # served
    vision: list[str]  # vLLM ignores them (no LoRA on Glm4v's vision tower)
    unsupported: list[str]  # vLLM would refuse the adapter


def vllm_modules(info: AdapterInfo, num_layers: int | None = None) -> VllmModules:
    """Sort `info.modules`; `num_layers` (the base's text layers) also catches out-of-range layers."""
    text, vision, unsupported = [], [], []
    for module in info.modules:
        if module.startswith(VISION_PREFIX):
            vision.append(module)
            continue
        layer, _, name = module.removeprefix(TEXT_LAYERS).partition(".")
        in_range = layer.isdigit() and (num_layers is None or int(layer) < num_layers)
        (
            text if module.startswith(TEXT_LAYERS) and name in TEXT_MODULES and in_range else unsupported
        ).append(module)
    return VllmModules(text, vision, unsupported)


def check_for_vllm(info: AdapterInfo, num_layers: int | None = None) -> VllmModules:
    """Refuse what vLLM cannot serve (DoRA, modules_to_save, non-LoRA or unknown modules, rank > 512)."""
    config = info.config
    if config.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"{info.path}: a {config['peft_type']} adapter; vLLM serves LoRA adapters only.")
    if config.get("use_dora"):
        raise ConfigError(
            f"{info.path}: a DoRA adapter; vLLM cannot serve DoRA. Merge it instead "
            "(glmlab export --format merged)."
        )
    if config.get("modules_to_save"):
        raise ConfigError(
            f"{info.path}: trains whole modules {config['modules_to_save']} (modules_to_save), which "
            "vLLM does not load; merge it instead (glmlab export --format merged)."
        )
    max_lora_rank(info.rank)
    modules = vllm_modules(info, num_layers)
    if modules.unsupported:
        shown = ", ".join(modules.unsupported[:6]) + (" ..." if len(modules.unsupported) > 6 else "")
        raise ConfigError(
            f"{info.path}: adapts modules vLLM has no LoRA slot for in the language model: {shown}. "
            f"vLLM serves LoRA on {', '.join(TEXT_MODULES)} under {TEXT_LAYERS}N; merge it instead "
            "(glmlab export --format merged)."
        )
    if not modules.text:
        raise ConfigError(
            f"{info.path}: adapts no language-model module, so vLLM would serve the base model "
            "unchanged; merge it instead (glmlab export --format merged)."
        )
    return modules


def text_target_regex(modules: list[str]) -> str:
    """A PEFT target_modules regex for exactly these text modules' kinds, anchored to the language model.

    No group but one final group of bare names: the form vLLM's `is_regex_target_modules` understands.
    """
    names = sorted({module.rsplit(".", 1)[-1] for module in modules})
    return r".*language_model\.layers\.\d+\.[a-z_]+\.(" + "|".join(names) + ")$"


def base_config(model: str):
    """The base model's transformers config (local folder, 'tiny', or hub id from the cache/hub)."""
    from transformers import AutoConfig

    from glmlab.errors import ModelLoadError
    from glmlab.loading import resolve_source

    try:
        return AutoConfig.from_pretrained(resolve_source(model))
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{model}: the base model's config could not be read ({error}); pass --model with "
            "a local checkpoint folder or a hub id reachable from here."
        ) from None
