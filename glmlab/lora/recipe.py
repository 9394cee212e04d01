"""`LoraRecipe`: everything one LoRA fine-tuning run needs, as a typed, validated dataclass.

A recipe names the base model, where the training records come from (a synthetic generator, a data
folder or a hub dataset), how each record becomes a prompt (system text, thinking on or off), the
adapter (rank, alpha, dropout, which modules), the optimisation and memory knobs, and how the run is
evaluated and checkpointed. `lora/*.yaml` files are recipes serialised: `LoraRecipe.from_yaml(path)`
reads one, `to_yaml`/`to_dict` write it back, and validation reports every bad field at once, each
with its name, so a user fixes a file in one pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glmlab.data.source import DEFAULT_GENERATED_SAMPLES  # noqa: F401 (estimate reads it here)
from glmlab.errors import ConfigError

DEFAULT_BASE_MODEL = "zai-org/GLM-4.6V-Flash"
# The text decoder's attention and MLP projections only. Anchored to `language_model.layers`: a bare
# suffix list (q_proj, ..., down_proj) would also hit the vision MLPs and miss the fused gate_up_proj.
LANGUAGE_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate_up_proj|down_proj))"
VISION_TARGETS = {
    "none": None,
    "merger": r".*visual\.merger\.(proj|gate_proj|up_proj|down_proj)",
    "all": r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))"
    r"|merger\.(proj|gate_proj|up_proj|down_proj))",
}
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PADDING_SIDES = ("right", "left")


def _help(text: str, **extra: Any) -> Any:
    """A field default with its help text in metadata (peft's LoraConfig style)."""
    return field(metadata={"help": text}, **extra)


@dataclass
class LoraRecipe:
    """One LoRA run. Every field has a default; a YAML recipe sets only what it changes."""

    name: str = _help("Short name of the recipe (used in logs and the model card).", default="custom")
    description: str = _help("What the adapter is for, one or two sentences.", default="")
    # -- base model
    base_model: str = _help(
        "Hub id, local folder or 'tiny' of the model to adapt.", default=DEFAULT_BASE_MODEL
    )
    revision: str | None = _help("Hub revision (branch, tag or commit) of base_model.", default=None)
    # -- data: exactly one of generator / data_path / hub_dataset
    generator: str | None = _help("Synthetic generator name (glmlab.data.GENERATORS).", default=None)
    generator_options: dict[str, Any] = _help(
        "Options of the generator (e.g. size, question_types).", default_factory=dict
    )
    data_path: str | None = _help(
        "A data folder or .jsonl file of records (glmlab.data.load_records).", default=None
    )
    hub_dataset: str | None = _help("A hub dataset name of records.", default=None)
    hub_split: str = _help("Split of hub_dataset to train on.", default="train")
    train_samples: int | None = _help(
        "Training records: how many to generate (None: 1000), or a cap on a folder/hub source (None: all).",
        default=None,
    )
    eval_samples: int = _help("Held-out records scored during training (0: no evaluation).", default=64)
    # -- prompt
    system: str | None = _help("System prompt put before every sample (and used at inference).", default=None)
    prompt: str | None = _help(
        "Replaces each record's question when set (a fixed instruction).", default=None
    )
    thinking: bool = _help(
        "False: train no-think answers (/nothink, target after <think></think>). True: "
        "thinking-on prompts; the target keeps the record's reasoning if any.",
        default=False,
    )
    # -- adapter
    rank: int = _help("LoRA rank r: adapter capacity; memory and adapter size grow linearly.", default=16)
    alpha: float = _help("LoRA alpha; the update is scaled by alpha / rank.", default=32.0)
    dropout: float = _help("Dropout on the adapter input (regularises small data sets).", default=0.05)
    target_modules: str = _help("Regex of the module names to adapt (full match).", default=LANGUAGE_TARGETS)
    adapt_vision: str = _help(
        "Also adapt the vision side: 'none', 'merger' or 'all' (tower + merger).", default="none"
    )
    modules_to_save: list[str] = _help(
        "Modules trained in full and saved with the adapter (e.g. lm_head).", default_factory=list
    )
    # -- optimisation
    learning_rate: float = _help("Peak learning rate of AdamW.", default=1e-4)
    loraplus_lr_ratio: float | None = _help(
        "LoRA+: the B matrices learn this many times faster (None: off).", default=None
    )
    lr_scheduler: str = _help(f"Learning-rate schedule, one of {SCHEDULERS}.", default="cosine")
    warmup_ratio: float = _help("Share of the steps spent warming the learning rate up.", default=0.03)
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    max_grad_norm: float = _help("Gradient clipping norm (0: off).", default=1.0)
    epochs: float = _help("Passes over the training records (ignored when max_steps is set).", default=1.0)
    max_steps: int | None = _help("Optimiser steps to run; overrides epochs.", default=None)
    batch_size: int = _help("Samples per device per forward pass.", default=1)
    gradient_accumulation_steps: int = _help("Forward passes per optimiser step.", default=8)
    padding_side: str = _help("Where batches are padded: 'right' or 'left'.", default="right")
    # -- memory and precision
    max_image_pixels: int = _help(
        "Largest image area kept after resizing (~784 px per image token).", default=1024 * 1024
    )
    precision: str = _help(
        "'auto' (bf16 on GPUs that have it, else fp16; fp32 on CPU), 'bf16', 'fp16', 'fp32'.", default="auto"
    )
    gradient_checkpointing: bool = _help(
        "Recompute activations in backward: much less memory, ~1/3 slower.", default=True
    )
    quantize_4bit: bool = _help(
        "QLoRA: load the base model in 4-bit NF4 (CUDA and bitsandbytes only).", default=False
    )
    # -- evaluation, checkpoints, logging
    eval_every_steps: int = _help(
        "Score the held-out records every N optimiser steps (0: only at the end).", default=100
    )
    eval_metric: str = _help("glmlab.eval metric of the held-out answers.", default="exact_match")
    eval_extractor: str = _help(
        "glmlab.eval extractor applied to each answer before scoring.", default="text"
    )
    eval_max_new_tokens: int = _help("Longest greedy answer generated when scoring.", default=32)
    save_every_steps: int = _help("Write a resumable checkpoint every N optimiser steps.", default=100)
    save_total_limit: int | None = _help("Keep only the newest N checkpoints (None: all).", default=2)
    logging_steps: int = _help("Log the loss every N optimiser steps.", default=1)
    seed: int = _help("Seed of data generation, shuffling, adapter init and dropout.", default=0)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(
                f"recipe {self.name!r}: {len(problems)} invalid field(s):\n  " + "\n  ".join(problems)
            )

    # ---- validation -----------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every invalid field as 'field=value: what is expected' (empty when the recipe is valid)."""
        checks = [
            ("name", isinstance(self.name, str) and bool(self.name.strip()), "a non-empty string"),
            (
                "base_model",
                isinstance(self.base_model, str) and bool(self.base_model),
                "a hub id, folder or 'tiny'",
            ),
            ("rank", _int(self.rank) and self.rank >= 1, "an integer >= 1"),
            ("alpha", _number(self.alpha) and self.alpha > 0, "a number > 0"),
            ("dropout", _number(self.dropout) and 0 <= self.dropout < 1, "a number in [0, 1)"),
            ("adapt_vision", self.adapt_vision in VISION_TARGETS, f"one of {tuple(VISION_TARGETS)}"),
            ("modules_to_save", _str_list(self.modules_to_save), "a list of module names"),
            (
                "learning_rate",
                _number(self.learning_rate) and 0 < self.learning_rate < 1,
                "a number in (0, 1)",
            ),
            (
                "loraplus_lr_ratio",
                self.loraplus_lr_ratio is None
                or (_number(self.loraplus_lr_ratio) and self.loraplus_lr_ratio >= 1),
                "None or a number >= 1",
            ),
            ("lr_scheduler", self.lr_scheduler in SCHEDULERS, f"one of {SCHEDULERS}"),
            ("warmup_ratio", _number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, "a number in [0, 1)"),
            ("weight_decay", _number(self.weight_decay) and self.weight_decay >= 0, "a number >= 0"),
            ("max_grad_norm", _number(self.max_grad_norm) and self.max_grad_norm >= 0, "a number >= 0"),
            ("epochs", _number(self.epochs) and self.epochs > 0, "a number > 0"),
            (
                "max_steps",
                self.max_steps is None or (_int(self.max_steps) and self.max_steps >= 1),
                "None or an integer >= 1",
            ),
            ("batch_size", _int(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            (
                "gradient_accumulation_steps",
                _int(self.gradient_accumulation_steps) and self.gradient_accumulation_steps >= 1,
                "an integer >= 1",
            ),
            ("padding_side", self.padding_side in PADDING_SIDES, f"one of {PADDING_SIDES}"),
            (
                "max_image_pixels",
                _int(self.max_image_pixels) and self.max_image_pixels >= 28 * 28,
                "an integer >= 784 (one 28x28 image token)",
            ),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            (
                "train_samples",
                self.train_samples is None or (_int(self.train_samples) and self.train_samples >= 1),
                "None or an integer >= 1",
            ),
            ("eval_samples", _int(self.eval_samples) and self.eval_samples >= 0, "an integer >= 0"),
            (
                "eval_every_steps",
                _int(self.eval_every_steps) and self.eval_every_steps >= 0,
                "an integer >= 0",
            ),
            (
                "eval_max_new_tokens",
                _int(self.eval_max_new_tokens) and self.eval_max_new_tokens >= 1,
                "an integer >= 1",
            ),
            (
                "save_every_steps",
                _int(self.save_every_steps) and self.save_every_steps >= 1,
                "an integer >= 1",
            ),
            (
                "save_total_limit",
                self.save_total_limit is None or (_int(self.save_total_limit) and self.save_total_limit >= 1),
                "None or an integer >= 1",
            ),
            ("logging_steps", _int(self.logging_steps) and self.logging_steps >= 1, "an integer >= 1"),
            ("seed", _int(self.seed) and self.seed >= 0, "an integer >= 0"),
            ("generator_options", isinstance(self.generator_options, dict), "a mapping of option: value"),
        ]
        problems = [
            f"{name}={getattr(self, name)!r}: expected {expected}" for name, ok, expected in checks if not ok
        ]
        for name in ("thinking", "gradient_checkpointing", "quantize_4bit"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name}={getattr(self, name)!r}: expected true or false")
        return problems + self._source_problems() + self._regex_problems() + self._eval_problems()

    def _source_problems(self) -> list[str]:
        sources = [name for name in ("generator", "data_path", "hub_dataset") if getattr(self, name)]
        if len(sources) != 1:
            found = ", ".join(sources) or "none"
            return [f"generator/data_path/hub_dataset: expected exactly one data source, got {found}"]
        if self.generator is None:
            return []
        from glmlab.data import GENERATORS, generator_options

        if self.generator not in GENERATORS:
            return [f"generator={self.generator!r}: expected one of {sorted(GENERATORS)}"]
        known = generator_options(self.generator)
        unknown = (
            sorted(set(self.generator_options) - set(known))
            if isinstance(self.generator_options, dict)
            else []
        )
        return (
            [
                f"generator_options: unknown option(s) {unknown} for {self.generator!r}; "
                f"it takes {sorted(known)}"
            ]
            if unknown
            else []
        )

    def _regex_problems(self) -> list[str]:
        try:
            re.compile(self.target_modules)
        except (re.error, TypeError) as error:
            return [f"target_modules={self.target_modules!r}: not a valid regular expression ({error})"]
        return []

    def _eval_problems(self) -> list[str]:
        from glmlab.eval.extract import EXTRACTORS
        from glmlab.eval.metrics import METRICS

        problems = []
        if self.eval_metric not in METRICS:
            problems.append(f"eval_metric={self.eval_metric!r}: expected one of {sorted(METRICS)}")
        if self.eval_extractor not in EXTRACTORS:
            problems.append(f"eval_extractor={self.eval_extractor!r}: expected one of {sorted(EXTRACTORS)}")
        return problems

    # ---- derived values ---------------------------------------------------------------------------

    @property
    def target_regex(self) -> str:
        """The regex handed to peft: the language targets, plus the vision ones when asked for."""
        vision = VISION_TARGETS[self.adapt_vision]
        return self.target_modules if vision is None else f"({self.target_modules})|({vision})"

    def replace(self, **changes: Any) -> LoraRecipe:
        """A validated copy with some fields changed (the recipe itself is never mutated)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ConfigError(_unknown_message(unknown, "override"))
        return dataclasses.replace(self, **changes)

    # ---- serialisation ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "recipe") -> LoraRecipe:
        """A recipe from plain values; unknown keys are a ConfigError that suggests the likely name."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of recipe fields, got {type(values).__name__}.")
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ConfigError(f"{source}: " + _unknown_message(unknown, "field"))
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

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
    return [item.name for item in dataclasses.fields(LoraRecipe)]


def field_help(name: str) -> str:
    """The help text of one recipe field (CLI help and docs read it from here)."""
    return {item.name: item.metadata.get("help", "") for item in dataclasses.fields(LoraRecipe)}[name]


def _unknown_message(unknown: list[str], kind: str) -> str:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, field_names(), n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown recipe {kind}(s) {', '.join(hints)}; the fields are listed in glmlab.lora.LoraRecipe."


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)
