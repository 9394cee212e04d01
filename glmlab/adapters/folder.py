"""What a LoRA adapter folder holds, whether glmlab may load it, and what of it vLLM can serve.

`inspect_adapter` reads an adapter without loading a model: its rank (largest of `r` and
`rank_pattern`), the modules its safetensors weights adapt (by their transformers names), each tensor's
shape and dtype (from the safetensors header, no tensor data read), and its base model (glmlab.json
beside it, written by glmlab's training, else adapter_config.json). `check_for_loading` decides, before
the model is touched, whether `VLM.load_adapter` may inject it: plain LoRA only, nothing that rewrites
the base weights or the model's structure, rank at most `MAX_LORA_RANK`, every tensor named after a
linear layer of the base model with the shapes that layer and the rank require. `vllm_modules` sorts
the modules the way vLLM's Glm4vForConditionalGeneration will treat them: LoRA on the language model,
on the vision blocks and merger with vLLM's tower/connector LoRA (not on the blocks' qkv), ranks up to
512 (its docstring gives vLLM's rules). `check_adapter_folder` and
`check_adapter_name` are the folder and name rules every loader (model, server, export) shares.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmlab.errors import AdapterError, ConfigError

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values
# The largest LoRA rank glmlab loads: an adapter's memory grows with its rank, and an adapter a server
# cannot hand on to vLLM (whose limit this is) is not worth the memory either.
MAX_LORA_RANK = VLLM_LORA_RANKS[-1]
# init_lora_weights values that only initialise the LoRA factors (which the saved weights then replace).
# Every other value (pissa, pissa_niter_N, olora, corda, loftq, eva, orthogonal, lora_ga, mica, ...)
# is refused: several rewrite the base weights at load time, which unloading does not undo.
PLAIN_INITS = (True, False, "gaussian")
# LoraConfig options that change the model's structure, a layer's computation or the base weights, with
# what each does; an adapter that sets any of them is refused (glmlab loads plain LoRA only).
STRUCTURAL_OPTIONS = {
    "layer_replication": "duplicates decoder layers",
    "megatron_config": "builds Megatron parallel layers",
    "trainable_token_indices": "trains embedding rows",
    "target_parameters": "wraps raw parameters",
    "use_dora": "is a DoRA adapter (weight-decomposed LoRA)",
    "lora_bias": "adds a bias to lora_B",
    "alora_invocation_tokens": "is an activated LoRA (aLoRA)",
    "use_qalora": "is a QA-LoRA adapter",
    "velora_config": "is a VeLoRA adapter",
    "monteclora_config": "is a MonteCLoRA adapter",
    "kasa_config": "is a KaSA adapter (truncates the base weights)",
    "lora_ga_config": "is a LoRA-GA adapter (rewrites the base weights)",
    "use_bdlora": "is a block-diagonal LoRA",
    "arrow_config": "routes between adapters (Arrow)",
    "ensure_weight_tying": "ties adapters across tied layers",
}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors dtype names a LoRA factor may have
PEFT_PREFIX = "base_model.model."  # how PEFT names every saved tensor
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<factor>lora_A|lora_B)\.weight$")
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
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
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
    shapes: dict[str, tuple[int, ...]]  # safetensors key -> shape, from the header
    dtypes: dict[str, str]  # safetensors key -> dtype name ("F32", "BF16", ...)

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
    from safetensors import SafetensorError, safe_open

    folder = Path(path).expanduser()
    check_adapter_folder(folder)
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        shapes, dtypes = {}, {}
        # safe_open parses and checks the header (offsets against the file's size) without reading data
        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as weights:
            for key in sorted(weights.keys()):
                tensor = weights.get_slice(key)
                shapes[key], dtypes[key] = tuple(tensor.get_shape()), tensor.get_dtype()
    except (OSError, ValueError, SafetensorError) as error:
        raise AdapterError(f"{folder}: unreadable adapter files ({error}).") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{folder}: adapter_config.json is not a JSON object.")
    modules = sorted({module_name(key) for key in shapes})
    return AdapterInfo(
        folder, config, base_model_of(folder, config), _rank(folder, config), modules, shapes, dtypes
    )


def _rank(folder: Path, config: dict) -> int:
    """The largest of `r` and the `rank_pattern` values; each must be a positive integer."""
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise AdapterError(f"{folder}: adapter_config.json's rank_pattern is not a mapping.")
    ranks = {"r": config.get("r", 8), **{f"rank_pattern[{key!r}]": value for key, value in pattern.items()}}
    for field, value in ranks.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AdapterError(
                f"{folder}: adapter_config.json's {field} is {value!r}, not a positive integer."
            )
    return max(ranks.values())


def check_for_loading(
    info: AdapterInfo, modules: Mapping[str, Any], *, max_rank: int = MAX_LORA_RANK
) -> None:
    """Refuse, before the model is touched, an adapter that `VLM.load_adapter` must not inject.

    `modules`: the base model's modules by name, PEFT's wrappers seen through to the layers they wrap.
    Every refusal is an AdapterError that names the file, the field or tensor, and the reason.
    """
    _check_lora_config(info, max_rank)
    _check_lora_tensors(info, modules)


def _check_lora_config(info: AdapterInfo, max_rank: int) -> None:
    config, where = info.config, f"{info.path}: adapter_config.json"
    if config.get("peft_type") != "LORA":
        raise AdapterError(
            f'{where}: peft_type is {config.get("peft_type")!r}; glmlab loads LoRA adapters only ("LORA").'
        )
    init = config.get("init_lora_weights", True)
    if not any(init is plain if isinstance(plain, bool) else init == plain for plain in PLAIN_INITS):
        raise AdapterError(
            f"{where}: init_lora_weights is {init!r}; glmlab loads adapters with plain initialisation only "
            '(true, false or "gaussian"): PiSSA, OLoRA, CorDA, LoftQ and the other initialisations rewrite '
            "the base model's weights as they load. Save it as plain LoRA first (peft's save_pretrained(..., "
            "path_initial_model_for_weight_conversion=...)), or retrain with init_lora_weights=true."
        )
    if config.get("bias", "none") != "none":
        raise AdapterError(
            f"{where}: bias is {config['bias']!r}; the adapter carries the base model's own biases, which "
            'loading would overwrite. glmlab loads adapters with bias "none" only.'
        )
    for option, what in STRUCTURAL_OPTIONS.items():
        if config.get(option):
            raise AdapterError(
                f"{where}: {option} is set (the adapter {what}); glmlab loads plain LoRA adapters only. "
                f"Retrain without {option}."
            )
    if info.rank > max_rank:
        raise AdapterError(
            f"{where}: rank {info.rank} is above the largest glmlab loads ({max_rank}); retrain with a smaller r."
        )
    alphas = {"lora_alpha": config.get("lora_alpha", 8)}
    alpha_pattern = config.get("alpha_pattern") or {}
    if not isinstance(alpha_pattern, dict):
        raise AdapterError(f"{where}: alpha_pattern is not a mapping.")
    alphas.update({f"alpha_pattern[{key!r}]": value for key, value in alpha_pattern.items()})
    for field, value in alphas.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AdapterError(f"{where}: {field} is {value!r}, not a finite number.")


def _check_lora_tensors(info: AdapterInfo, modules: Mapping[str, Any]) -> None:
    """Every tensor is a LoRA factor of a linear layer of the base model (or an entry of a modules_to_save
    module's copy), with the shape that layer and the rank require; every factor has its partner."""
    if not info.shapes:
        raise AdapterError(f"{info.path}: adapter_model.safetensors holds no tensors.")
    factors: dict[str, set[str]] = {}
    for key, shape in info.shapes.items():
        where = f"{info.path}: tensor {key!r}"
        if info.dtypes[key] not in FLOAT_DTYPES:
            raise AdapterError(
                f"{where} has dtype {info.dtypes[key]}; LoRA weights are {'/'.join(FLOAT_DTYPES)}."
            )
        if not key.startswith(PEFT_PREFIX):
            raise AdapterError(f"{where}: not a PEFT tensor name (they start with {PEFT_PREFIX!r}).")
        name = key.removeprefix(PEFT_PREFIX)
        match = _LORA_KEY.match(name)
        if match is None:
            _check_saved_module_tensor(info, where, name, shape, modules)
            continue
        module_name, factor = match["module"], match["factor"]
        expected = _factor_shape(info, where, module_name, factor, modules)
        if shape != expected:
            raise AdapterError(
                f"{where} has shape {list(shape)}; {module_name} with this adapter's rank needs {list(expected)}."
            )
        factors.setdefault(module_name, set()).add(factor)
    for module_name, found in factors.items():
        if found != {"lora_A", "lora_B"}:
            (missing,) = {"lora_A", "lora_B"} - found
            raise AdapterError(f"{info.path}: {module_name} has a {found.pop()} tensor but no {missing}.")


def _factor_shape(
    info: AdapterInfo, where: str, module_name: str, factor: str, modules: Mapping[str, Any]
) -> tuple[int, int]:
    """lora_A is (rank, in_features), lora_B (out_features, rank), the rank after rank_pattern."""
    import torch
    from peft.utils.other import get_pattern_key  # peft's own rule, so the rank is the one it will build

    module = modules.get(module_name)
    if module is None:
        fused = module_name.startswith(VISION_PREFIX) and module_name.endswith(".gate_up_proj")
        hint = (
            " It is a vLLM export (vision gate_proj and up_proj fused into vLLM's gate_up_proj); load the "
            "adapter it was exported from."
            if fused
            else ""
        )
        raise AdapterError(f"{where}: the base model has no module {module_name!r}.{hint}")
    if not isinstance(module, torch.nn.Linear):
        raise AdapterError(
            f"{where}: {module_name} is a {type(module).__name__}; glmlab loads LoRA on linear layers only."
        )
    pattern = info.config.get("rank_pattern") or {}
    try:
        rank = pattern.get(get_pattern_key(list(pattern), module_name), info.config.get("r", 8))
    except re.error as error:
        raise AdapterError(
            f"{info.path}: adapter_config.json: a rank_pattern key is not a regex ({error})."
        ) from None
    return (rank, module.in_features) if factor == "lora_A" else (module.out_features, rank)


def _check_saved_module_tensor(
    info: AdapterInfo, where: str, name: str, shape: tuple[int, ...], modules: Mapping[str, Any]
) -> None:
    """An entry of a modules_to_save module's own copy, shaped like the base module's entry."""
    saved = info.config.get("modules_to_save") or []
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the innermost module named by modules_to_save (peft's rule)
        module_name, entry = ".".join(parts[:cut]), ".".join(parts[cut:])
        if module_name in modules and any(module_name.endswith(suffix) for suffix in saved):
            break
    else:
        raise AdapterError(
            f"{where}: neither a LoRA factor (<module>.lora_A.weight, <module>.lora_B.weight) of a base-model "
            "layer nor an entry of a modules_to_save module."
        )
    own = modules[module_name].state_dict()
    if entry not in own:
        raise AdapterError(f"{where}: {module_name} has no entry {entry!r}.")
    if tuple(own[entry].shape) != shape:
        raise AdapterError(
            f"{where} has shape {list(shape)}; {module_name}.{entry} is {list(own[entry].shape)}."
        )


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


# ---- what vLLM serves --------------------------------------------------------------------------------
# The Glm4v vision modules vLLM wraps in a LoRA layer with --enable-tower-connector-lora, by their
# transformers names relative to VISION_PREFIX (a block's number as N): vLLM's own names, so an adapter
# holding them loads as it is.
TOWER_MODULES = ("attn.proj", "mlp.down_proj", "mlp.gate_up_proj")  # in each of blocks.N
CONNECTOR_MODULES = ("proj", "down_proj", "gate_up_proj")  # in the merger
# transformers' separate gate and up projections (tower MLP and merger), which vLLM builds as one layer
FUSED_INTO = {"gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}
VISION_BLOCKS = VISION_PREFIX + "blocks."
MERGER = VISION_PREFIX + "merger."
TOWER_FLAG = "--enable-tower-connector-lora"


@dataclass
class VllmModules:
    """An adapter's modules sorted by what vLLM does with them (`vllm_modules` says why)."""

    text: list[str]  # served: the language model's
    tower: list[str]  # served with TOWER_FLAG: vision blocks and merger, names vLLM loads as they are
    fuse: list[str]  # served with TOWER_FLAG once fused in pairs into gate_up_proj (export_vllm does)
    dropped: list[str]  # vision modules vLLM has no LoRA layer for: export_vllm leaves them out
    unsupported: list[str]  # vLLM would refuse the adapter

    @property
    def needs_tower_lora(self) -> bool:
        """Whether serving the export needs vLLM's tower/connector LoRA (TOWER_FLAG)."""
        return bool(self.tower or self.fuse)


def vllm_modules(
    info: AdapterInfo, num_layers: int | None = None, vision_depth: int | None = None
) -> VllmModules:
    """Sort `info.modules` as vLLM 0.33 serves them on Glm4vForConditionalGeneration; `num_layers` (the
    base's text layers) and `vision_depth` (its vision blocks) also catch out-of-range layers.

    What vLLM's code does (and engines/checks/vllm_lora.py runs with vLLM itself):
    - Language model: LoRA on each decoder layer's qkv_proj (packed by vLLM from the adapter's q_proj,
      k_proj and v_proj), o_proj, gate_up_proj (one module in transformers too) and down_proj.
    - Vision tower and merger only when vLLM runs with --enable-tower-connector-lora
      (LoRAConfig.enable_tower_connector_lora): Glm4v declares supports_tower_connector_lora and maps
      its tower to the prefix `visual.` and its connector to `visual.merger.`. Without the flag vLLM
      loads their LoRA weights and applies none of them.
    - There vLLM wraps the linear layers it builds: blocks.N.attn.proj and mlp.down_proj, merger.proj and
      merger.down_proj one to one (TOWER_MODULES, CONNECTOR_MODULES), and blocks.N.mlp.gate_up_proj and
      merger.gate_up_proj, one layer for transformers' gate_proj and up_proj. Glm4v's
      packed_modules_mapping maps gate_up_proj to itself, so vLLM takes one LoRA on that layer, and its
      loader refuses an adapter with vision gate_proj/up_proj weights (names it does not expect); the
      pair is served once fused into one gate_up_proj LoRA (FUSED_INTO; `export_vllm` fuses it).
    - blocks.N.attn.qkv gets no LoRA: vLLM builds it as a QKVParallelLinear, which no LoRA layer takes
      without a "qkv" entry in the packed_modules_mapping, and Glm4v's has none (Qwen2.5-VL's has); vLLM
      logs that it ignores the module. Nor do the convolutions (patch_embed.proj, downsample).
    - Weight names are PEFT's (base_model.model.model.language_model..., base_model.model.model.visual...),
      renamed by vLLM through Glm4v's hf_to_vllm_mapper (model.language_model. to language_model.model.,
      model.visual. to visual.).
    These are the dense Glm4v's rules (GLM-4.6V-Flash, the tiny model). vLLM's MoE class
    (Glm4vMoeForConditionalGeneration) maps gate_up_proj to gate_proj and up_proj instead, so it would
    take the unfused pair and not the fused LoRA.
    """
    text, tower, fuse, dropped, unsupported = [], [], [], [], []
    for module in info.modules:
        if module.startswith(VISION_PREFIX):
            _sort_vision(module, vision_depth, tower, fuse, dropped, unsupported)
            continue
        layer, _, name = module.removeprefix(TEXT_LAYERS).partition(".")
        in_range = layer.isdigit() and (num_layers is None or int(layer) < num_layers)
        (
            text if module.startswith(TEXT_LAYERS) and name in TEXT_MODULES and in_range else unsupported
        ).append(module)
    return VllmModules(text, tower, fuse, dropped, unsupported)


def _sort_vision(
    module: str,
    depth: int | None,
    tower: list[str],
    fuse: list[str],
    dropped: list[str],
    unsupported: list[str],
) -> None:
    """Put one vision module in its list: vLLM's LoRA layers, a half of gate_up_proj, or none."""
    if module.startswith(VISION_BLOCKS):
        block, _, name = module.removeprefix(VISION_BLOCKS).partition(".")
        if not block.isdigit() or (depth is not None and int(block) >= depth):
            unsupported.append(module)  # no such block in this model
            return
        served, kind = name in TOWER_MODULES, name.removeprefix("mlp.")
        halves = name.startswith("mlp.") and kind in FUSED_INTO
    elif module.startswith(MERGER):
        name = module.removeprefix(MERGER)
        served, halves = name in CONNECTOR_MODULES, name in FUSED_INTO
    else:
        served = halves = False
    (tower if served else fuse if halves else dropped).append(module)


def vllm_rank(info: AdapterInfo) -> int:
    """The largest LoRA rank vLLM must hold for the adapter (its --max-lora-rank needs at least this):
    `r` and rank_pattern (vLLM checks those), each module's lora_A rows, and for a vision gate_proj /
    up_proj pair the rows of both (vLLM takes the pair as one gate_up_proj LoRA)."""
    rows: dict[str, int] = {}
    for key, shape in info.shapes.items():
        match = _LORA_KEY.match(key.removeprefix(PEFT_PREFIX))
        if match is None or match["factor"] != "lora_A" or not shape:
            continue
        module = match["module"]
        parent, _, name = module.rpartition(".")
        if module.startswith(VISION_PREFIX) and name in FUSED_INTO:
            module = f"{parent}.{FUSED_INTO[name]}"
        rows[module] = rows.get(module, 0) + shape[0]
    return max([info.rank, *rows.values()])


def check_for_vllm(
    info: AdapterInfo, num_layers: int | None = None, vision_depth: int | None = None
) -> VllmModules:
    """Refuse what vLLM cannot serve (DoRA, modules_to_save, non-LoRA or unknown modules, a rank above
    512, nothing vLLM would apply); returns the modules sorted (`vllm_modules`)."""
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
    modules = vllm_modules(info, num_layers, vision_depth)
    if modules.unsupported:
        shown = ", ".join(modules.unsupported[:6]) + (" ..." if len(modules.unsupported) > 6 else "")
        raise ConfigError(
            f"{info.path}: adapts modules vLLM has no LoRA slot for: {shown}. vLLM serves LoRA on "
            f"{', '.join(TEXT_MODULES)} under {TEXT_LAYERS}N (and the base model's vision blocks and "
            "merger); merge it instead (glmlab export --format merged)."
        )
    if not modules.text and not modules.needs_tower_lora:
        raise ConfigError(
            f"{info.path}: adapts no module vLLM applies LoRA to, so vLLM would serve the base model "
            "unchanged; merge it instead (glmlab export --format merged)."
        )
    rank = vllm_rank(info)
    if rank > VLLM_LORA_RANKS[-1]:
        raise ConfigError(
            f"{info.path}: vLLM takes each vision gate_proj / up_proj pair as one gate_up_proj LoRA of "
            f"rank {rank} (the two ranks together), above the {VLLM_LORA_RANKS[-1]} it serves; retrain "
            f"with r <= {VLLM_LORA_RANKS[-1] // 2}, or merge it instead (glmlab export --format merged)."
        )
    return modules


def text_target_regex(modules: list[str]) -> str:
    """A PEFT target_modules regex for exactly these text modules' kinds, anchored to the language model."""
    names = sorted({module.rsplit(".", 1)[-1] for module in modules})
    return r".*language_model\.layers\.\d+\.[a-z_]+\.(" + "|".join(names) + ")$"


def vllm_target_regex(modules: list[str]) -> str:
    """A PEFT target_modules regex for the modules of a vLLM export: `text_target_regex` for the language
    model's, each vision module's own name (any block number) for the tower's and merger's. vLLM goes by
    the weights' names, not by this field; it tells a reader (and peft) what the export holds."""
    text = [module for module in modules if not module.startswith(VISION_PREFIX)]
    vision = sorted({_vision_pattern(module) for module in modules if module.startswith(VISION_PREFIX)})
    if not vision:
        return text_target_regex(text)
    vision_regex = r".*visual\.(" + "|".join(vision) + ")$"
    return f"({text_target_regex(text)}|{vision_regex})" if text else vision_regex


def _vision_pattern(module: str) -> str:
    relative = module.removeprefix(VISION_PREFIX)
    block = re.match(r"blocks\.\d+\.", relative)
    return r"blocks\.\d+\." + re.escape(relative[block.end() :]) if block else re.escape(relative)


def check_adapter_folder(path: Path) -> None:
    """A PEFT adapter folder with safetensors weights (pickled .bin weights are refused: unsafe)."""
    if not path.is_dir():
        raise AdapterError(f"{path}: no such adapter folder.")
    if not (path / "adapter_config.json").exists():
        raise AdapterError(f"{path}: not a PEFT adapter folder (no adapter_config.json).")
    if not (path / "adapter_model.safetensors").exists():
        pickled = (
            " (only a pickled adapter_model.bin, refused as unsafe)"
            if (path / "adapter_model.bin").exists()
            else ""
        )
        raise AdapterError(f"{path}: no adapter_model.safetensors{pickled}; save adapters with safetensors.")


def check_adapter_name(name: str) -> str:
    """Adapter names travel in URLs and JSON: letters, digits, '.', '_' and '-', up to 64 characters."""
    if not ADAPTER_NAME.match(name or ""):
        raise ConfigError(
            f"adapter name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)."
        )
    return name
