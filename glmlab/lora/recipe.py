"""`LoraRecipe`: everything one LoRA fine-tuning run needs, as a typed, validated dataclass.

A recipe names the base model and, in sections like an eval suite's: `data` (a `glmlab.data.DataSource`:
a synthetic generator, a data folder or a hub dataset, and how many records), `prompt` (system text,
a fixed instruction, thinking on or off, image size), `adapter` (rank, alpha, dropout, which modules),
`optimizer` (learning rate, schedule, steps, batches), `hardware` (precision, memory, DeepSpeed/FSDP),
`evaluation` (held-out records, their metric, best-checkpoint selection and early stopping),
`checkpoints` and `tracking` (the experiment trackers the Trainer reports to). `lora/*.yaml` files are recipes serialised:
`LoraRecipe.from_yaml(path)` reads one, `to_yaml`/`to_dict` write it back, `replace(**{"adapter.rank":
8})` changes fields by dotted path. Validation (`glmlab.config`) reports every bad field at once, each
by its path, so a user fixes a file in one pass; a key of the earlier flat layout says where it moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from glmlab.config import (
    Check,
    InvalidConfig,
    apply_overrides,
    boolean,
    checked_field,
    coerce_sections,
    field_paths,
    integer,
    mapping,
    number,
    one_of,
    problems,
    raise_if_problems,
    regex,
    text,
    text_list,
    unknown_keys,
)
from glmlab.data.source import DataSource
from glmlab.errors import ConfigError
from glmlab.settings import MIN_IMAGE_PIXELS

DEFAULT_BASE_MODEL = "zai-org/GLM-4.6V-Flash"
# The text decoder's attention and MLP projections only. Anchored to `language_model.layers`: a bare
# suffix list (q_proj, ..., down_proj) would also hit the vision MLPs and miss the fused gate_up_proj.
LANGUAGE_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate_up_proj|down_proj))"
# The default on mixture-of-experts bases (glm4v_moe: GLM-4.5V/4.6V): the attention projections only.
# peft (0.21, on transformers 5.x) reads gate_proj / up_proj / down_proj on these models as the
# transformers-4 names of the routed experts: it reduces any regex to leaf names and retargets those at
# the fused 3-D expert parameters (one LoRA per expert, 128 per layer), so the shared experts and the
# dense first layer's MLP cannot be named, and the regex's anchoring is lost. docs/MOE.md says more.
MOE_LANGUAGE_TARGETS = r".*language_model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj"
MOE_MODEL_TYPES = ("glm4v_moe",)
VISION_TARGETS = {
    "none": None,
    "merger": r".*visual\.merger\.(proj|gate_proj|up_proj|down_proj)",
    "all": r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))"
    r"|merger\.(proj|gate_proj|up_proj|down_proj))",
}
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PADDING_SIDES = ("right", "left")


def _section(cls: type, help: str) -> Any:
    return dataclasses.field(default_factory=cls, metadata={"help": help})


@dataclass
class PromptSettings:
    """How each record becomes the prompt the adapter learns to answer (and inference must repeat)."""

    system: str | None = checked_field(
        None, help="System prompt put before every sample (and used at inference).", check=text(False)
    )
    instruction: str | None = checked_field(
        None, help="Replaces each record's question when set (a fixed instruction).", check=text(False)
    )
    thinking: bool = checked_field(
        False,
        help="False: train no-think answers (/nothink, target after <think></think>). True: "
        "thinking-on prompts; the target keeps the record's reasoning if any.",
        check=boolean,
    )
    max_image_pixels: int = checked_field(
        1024 * 1024,
        help=f"Largest image area kept after resizing (~{MIN_IMAGE_PIXELS} px per image token).",
        check=integer(MIN_IMAGE_PIXELS),
        expected=f"an integer >= {MIN_IMAGE_PIXELS} (one 28x28 image token)",
    )


@dataclass
class AdapterSettings:
    """The LoRA adapter: its size and which modules it adapts."""

    rank: int = checked_field(
        16, help="LoRA rank r: adapter capacity; memory and adapter size grow linearly.", check=integer(1)
    )
    alpha: float = checked_field(
        32.0, help="LoRA alpha; the update is scaled by alpha / rank.", check=number(0, bounds="(]")
    )
    dropout: float = checked_field(
        0.05,
        help="Dropout on the adapter input (regularises small data sets).",
        check=number(0, 1, bounds="[)"),
    )
    targets: str = checked_field(
        LANGUAGE_TARGETS, help="Regex of the module names to adapt (full match).", check=regex
    )
    adapt_vision: str = checked_field(
        "none",
        help="Also adapt the vision side: 'none', 'merger' or 'all' (tower + merger).",
        check=one_of(VISION_TARGETS),
    )
    modules_to_save: list[str] = checked_field(
        help="Modules trained in full and saved with the adapter (e.g. lm_head).",
        check=text_list("module names"),
        default_factory=list,
    )

    @property
    def target_regex(self) -> str:
        """The regex handed to peft: the language targets, plus the vision ones when asked for."""
        vision = VISION_TARGETS[self.adapt_vision]
        return self.targets if vision is None else f"({self.targets})|({vision})"

    def target_regex_for(self, model_type: str) -> str:
        """`target_regex` for a base of this model_type: on a mixture-of-experts base the default
        language targets become MOE_LANGUAGE_TARGETS (a regex the recipe sets itself is kept)."""
        if model_type not in MOE_MODEL_TYPES or self.targets != LANGUAGE_TARGETS:
            return self.target_regex
        return dataclasses.replace(self, targets=MOE_LANGUAGE_TARGETS).target_regex


@dataclass
class OptimizerSettings:
    """Optimisation: learning rate and schedule, steps, batches."""

    learning_rate: float = checked_field(
        1e-4, help="Peak learning rate of AdamW.", check=number(0, 1, bounds="()")
    )
    loraplus_lr_ratio: float | None = checked_field(
        None, help="LoRA+: the B matrices learn this many times faster (None: off).", check=number(1)
    )
    lr_scheduler: str = checked_field(
        "cosine", help=f"Learning-rate schedule, one of {SCHEDULERS}.", check=one_of(SCHEDULERS)
    )
    warmup_ratio: float = checked_field(
        0.03, help="Share of the steps spent warming the learning rate up.", check=number(0, 1, bounds="[)")
    )
    weight_decay: float = checked_field(0.0, help="AdamW weight decay.", check=number(0))
    max_grad_norm: float = checked_field(1.0, help="Gradient clipping norm (0: off).", check=number(0))
    epochs: float = checked_field(
        1.0,
        help="Passes over the training records (ignored when max_steps is set).",
        check=number(0, bounds="(]"),
    )
    max_steps: int | None = checked_field(
        None, help="Optimiser steps to run; overrides epochs.", check=integer(1)
    )
    batch_size: int = checked_field(1, help="Samples per device per forward pass.", check=integer(1))
    gradient_accumulation_steps: int = checked_field(
        8, help="Forward passes per optimiser step.", check=integer(1)
    )
    padding_side: str = checked_field(
        "right", help="Where batches are padded: 'right' or 'left'.", check=one_of(PADDING_SIDES)
    )


@dataclass
class HardwareSettings:
    """Precision and memory: how the run fits the machine."""

    precision: str = checked_field(
        "auto",
        help="'auto' (bf16 on GPUs that have it, else fp16; fp32 on CPU), 'bf16', 'fp16', 'fp32'.",
        check=one_of(PRECISIONS),
    )
    gradient_checkpointing: bool = checked_field(
        True, help="Recompute activations in backward: much less memory, ~1/3 slower.", check=boolean
    )
    quantize_4bit: bool = checked_field(
        False, help="QLoRA: load the base model in 4-bit NF4 (CUDA and bitsandbytes only).", check=boolean
    )
    deepspeed: str | None = checked_field(
        None,
        help="DeepSpeed config JSON file handed to the Trainer (CUDA GPUs and the deepspeed package only).",
        check=text(),
    )
    fsdp: str = checked_field(
        "",
        help="The Trainer's FSDP options, e.g. 'full_shard auto_wrap' ('': off; CUDA GPUs only).",
        check=text(False),
    )
    fsdp_config: dict[str, Any] = checked_field(
        help="The Trainer's fsdp_config mapping (e.g. {transformer_layer_cls_to_wrap: [...]}).",
        check=mapping,
        default_factory=dict,
    )


def _metrics() -> Any:
    from glmlab.eval.metrics import METRICS

    return METRICS


def _extractors() -> Any:
    from glmlab.eval.extract import EXTRACTORS

    return EXTRACTORS


@dataclass
class EvaluationSettings:
    """Held-out records scored while training (greedy answers, a glmlab.eval metric)."""

    samples: int = checked_field(
        64, help="Held-out records scored during training (0: no evaluation).", check=integer(0)
    )
    every_steps: int = checked_field(
        100, help="Score the held-out records every N optimiser steps (0: only at the end).", check=integer(0)
    )
    metric: str = checked_field(
        "exact_match", help="glmlab.eval metric of the held-out answers.", check=one_of(_metrics)
    )
    extractor: str = checked_field(
        "text", help="glmlab.eval extractor applied to each answer before scoring.", check=one_of(_extractors)
    )
    max_new_tokens: int = checked_field(
        32, help="Longest greedy answer generated when scoring.", check=integer(1)
    )
    select_best: bool = checked_field(
        False,
        help="The final adapter is the checkpoint with the best held-out score, not the last one "
        "(the Trainer's load_best_model_at_end).",
        check=boolean,
    )
    early_stopping_patience: int | None = checked_field(
        None,
        help="Stop after this many evaluations without a better held-out score (None: never).",
        check=integer(1),
    )
    early_stopping_threshold: float = checked_field(
        0.0, help="Least gain of the held-out score that counts as better.", check=number(0)
    )


@dataclass
class CheckpointSettings:
    """Resumable checkpoints written while training."""

    every_steps: int = checked_field(
        100, help="Write a resumable checkpoint every N optimiser steps.", check=integer(1)
    )
    total_limit: int | None = checked_field(
        2, help="Keep only the newest N checkpoints (None: all).", check=integer(1)
    )


def _trackers() -> Any:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return sorted(INTEGRATION_TO_CALLBACK)


def _tracker_list() -> Check:
    """A list of the Trainer's tracker names (its report_to); [] reports to none."""

    def valid(value: Any) -> bool:
        return isinstance(value, list) and all(name in _trackers() for name in value)

    return Check(valid, lambda value: f"a list of tracker names, from {', '.join(_trackers())}")


@dataclass
class TrackingSettings:
    """Experiment tracking: the trackers the Trainer logs the loss and held-out scores to."""

    report_to: list[str] = checked_field(
        help="The Trainer's report_to: [tensorboard] (offline, events in <output>/tensorboard), wandb, "
        "mlflow, ...; each needs its package. []: none.",
        check=_tracker_list(),
        default_factory=list,
    )
    run_name: str | None = checked_field(
        None, help="The run's name in the trackers (None: the recipe's name).", check=text()
    )


@dataclass
class LoraRecipe:
    """One LoRA run. Every field has a default; a YAML recipe sets only what it changes."""

    name: str = checked_field(
        "custom", help="Short name of the recipe (used in logs and the model card).", check=text()
    )
    description: str = checked_field(
        "", help="What the adapter is for, one or two sentences.", check=text(False)
    )
    base_model: str = checked_field(
        DEFAULT_BASE_MODEL, help="Hub id, local folder or 'tiny' of the model to adapt.", check=text()
    )
    revision: str | None = checked_field(
        None, help="Hub revision (branch, tag or commit) of base_model.", check=text()
    )
    data: DataSource = _section(DataSource, "Where the training records come from (exactly one source).")
    prompt: PromptSettings = _section(PromptSettings, "How each record becomes a prompt.")
    adapter: AdapterSettings = _section(AdapterSettings, "The LoRA adapter: size and targets.")
    optimizer: OptimizerSettings = _section(OptimizerSettings, "Learning rate, schedule, steps, batches.")
    hardware: HardwareSettings = _section(HardwareSettings, "Precision and memory.")
    evaluation: EvaluationSettings = _section(EvaluationSettings, "Held-out scoring during training.")
    checkpoints: CheckpointSettings = _section(CheckpointSettings, "Resumable checkpoints.")
    tracking: TrackingSettings = _section(TrackingSettings, "Experiment trackers (TensorBoard, W&B, MLflow).")
    logging_steps: int = checked_field(1, help="Log the loss every N optimiser steps.", check=integer(1))
    seed: int = checked_field(
        0, help="Seed of data generation, shuffling, adapter init and dropout.", check=integer(0)
    )

    def __post_init__(self) -> None:
        found = coerce_sections(self)
        raise_if_problems(found + problems(self), f"recipe {self.name!r}")

    def extra_problems(self) -> list[tuple[str, str]]:
        """Best-checkpoint selection and early stopping need held-out scores, on checkpointed steps."""
        evaluation, found = self.evaluation, []
        selects = evaluation.select_best or evaluation.early_stopping_patience is not None
        if selects and (evaluation.samples == 0 or evaluation.every_steps == 0):
            found.append(
                (
                    "evaluation",
                    "select_best and early_stopping_patience need held-out scores during training; "
                    "set evaluation.samples and evaluation.every_steps above 0",
                )
            )
        elif evaluation.select_best and self.checkpoints.every_steps % evaluation.every_steps:
            found.append(
                (
                    "checkpoints.every_steps",
                    f"{self.checkpoints.every_steps} is not a multiple of evaluation.every_steps="
                    f"{evaluation.every_steps}; select_best picks among evaluated checkpoints, so "
                    "checkpoints must fall on evaluation steps",
                )
            )
        return found

    # ---- derived values ---------------------------------------------------------------------------

    @property
    def data_seed(self) -> int:
        """The seed of the records: data.seed when set, else the recipe's seed."""
        return self.data.seed if self.data.seed is not None else self.seed

    def replace(self, **changes: Any) -> LoraRecipe:
        """A validated copy with some fields changed (the recipe itself is never mutated).

        Keys are dotted paths (`**{"adapter.rank": 8}`, `--set adapter.rank=8`); a mapping given for a
        whole section (`adapter={...}`) replaces that section."""
        return LoraRecipe.from_dict(apply_overrides(self.to_dict(), changes), source=f"recipe {self.name!r}")

    # ---- serialisation ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Any, *, source: str = "recipe") -> LoraRecipe:
        """A recipe from plain values (nested sections); every unknown, moved or invalid field is reported
        at once in one ConfigError, with the likely name or the field's new place."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected a mapping of recipe fields, got {type(values).__name__}.")
        moved = {key: MOVED[key] for key in values if key in MOVED and not _is_new_prompt(key, values[key])}
        found = [f"{key}: moved to {target}" for key, target in moved.items()]
        rest = {key: value for key, value in values.items() if key not in moved}
        known = set(_FIELDS)
        found += unknown_keys(cls, rest, kind="field", aliases=_leaf_paths())
        try:
            recipe = cls(**{key: value for key, value in rest.items() if key in known})
        except InvalidConfig as error:
            found += error.problems
        raise_if_problems(found, source)
        return recipe

    @classmethod
    def from_yaml(cls, path: str | Path) -> LoraRecipe:
        """Read a recipe YAML file (see lora/*.yaml)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such recipe file; recipes live in lora/*.yaml.")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error}).") from None
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The recipe as YAML text (written to `path` when given); `from_yaml` reads it back."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


_FIELDS = [item.name for item in dataclasses.fields(LoraRecipe)]

# Where each field of the earlier flat recipe lives now: an old key is refused with its new place.
MOVED = {
    "generator": "data.generator",
    "generator_options": "data.options",
    "data_path": "data.folder",
    "hub_dataset": "data.hub",
    "hub_split": "data.split",
    "train_samples": "data.n",
    "eval_samples": "evaluation.samples",
    "system": "prompt.system",
    "prompt": "prompt.instruction",
    "thinking": "prompt.thinking",
    "max_image_pixels": "prompt.max_image_pixels",
    "rank": "adapter.rank",
    "alpha": "adapter.alpha",
    "dropout": "adapter.dropout",
    "target_modules": "adapter.targets",
    "adapt_vision": "adapter.adapt_vision",
    "modules_to_save": "adapter.modules_to_save",
    **{
        name: f"optimizer.{name}"
        for name in (
            "learning_rate",
            "loraplus_lr_ratio",
            "lr_scheduler",
            "warmup_ratio",
            "weight_decay",
            "max_grad_norm",
            "epochs",
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "padding_side",
        )
    },
    "precision": "hardware.precision",
    "gradient_checkpointing": "hardware.gradient_checkpointing",
    "quantize_4bit": "hardware.quantize_4bit",
    "eval_every_steps": "evaluation.every_steps",
    "eval_metric": "evaluation.metric",
    "eval_extractor": "evaluation.extractor",
    "eval_max_new_tokens": "evaluation.max_new_tokens",
    "save_every_steps": "checkpoints.every_steps",
    "save_total_limit": "checkpoints.total_limit",
}


def _is_new_prompt(key: str, value: Any) -> bool:
    """`prompt` is both the old flat instruction (a string or null) and the new section (a mapping)."""
    return key == "prompt" and not isinstance(value, str | type(None))


def _leaf_paths() -> dict[str, str]:
    """Each nested field's own name -> its dotted path, so 'learning_rat' suggests 'optimizer.learning_rate'."""
    return {path.rsplit(".", 1)[-1]: path for path in field_paths(LoraRecipe) if "." in path}


def shipped_recipe(name: str) -> LoraRecipe:
    """A recipe shipped in the repository's lora/ folder by name ("shapes"), or ./lora/ as a fallback."""
    for folder in (Path(__file__).resolve().parents[2] / "lora", Path.cwd() / "lora"):
        if (folder / f"{name}.yaml").is_file():
            return LoraRecipe.from_yaml(folder / f"{name}.yaml")
    raise ConfigError(
        f"recipe {name!r}: no lora/{name}.yaml next to the glmlab package or in the current "
        "directory; pass the path of the recipe file instead."
    )


def load_recipe(recipe: LoraRecipe | str | Path) -> LoraRecipe:
    """A LoraRecipe as given, read from a YAML path, or a shipped recipe's name ("shapes")."""
    if isinstance(recipe, LoraRecipe):
        return recipe
    if isinstance(recipe, str) and not recipe.endswith((".yaml", ".yml")) and not Path(recipe).exists():
        return shipped_recipe(recipe)
    return LoraRecipe.from_yaml(recipe)


def field_names() -> list[str]:
    """Every recipe field as a dotted path (`adapter.rank`), the names `--set` and `replace` take."""
    return list(field_paths(LoraRecipe))


def field_help(name: str) -> str:
    """The help text of one recipe field by dotted path (CLI help and docs read it from here)."""
    return field_paths(LoraRecipe)[name]
