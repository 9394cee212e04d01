"""`Suite`: what an evaluation measures, as a typed config that a YAML file under `eval/` serialises.

A suite names its data (a `glmlab.data.DataSource`: a generator, a data folder, or a hub dataset with
a column mapping, the same source a training recipe names), how each record becomes a prompt (template, system prompt, thinking on/off), the generation
settings, how the scored part is taken out of the answer (an extractor of `glmlab.eval.extract`), the
metrics with their options (fixed, or per sample from a metadata field), and which metadata fields
each sample row keeps. Validation walks the whole document and reports every bad field at once, each
named by its path (`metrics[1].name`), so a typo fails before any model is loaded or called.

The suite knows nothing of models: `glmlab.eval.harness.evaluate` runs it, and the rows it writes
can be rescored from the suite alone (`glmlab.eval.scoring`).
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from glmlab.config import (
    Check,
    InvalidConfig,
    apply_overrides,
    build_section,
    checked_field,
    coerce_sections,
    integer,
    mapping,
    mapping_problems,
    one_of,
    problems,
    raise_if_problems,
    text,
    text_list,
    unknown_keys,
)
from glmlab.data.source import DataSource
from glmlab.errors import ConfigError
from glmlab.eval.extract import EXTRACTORS
from glmlab.eval.latency import LATENCY_COLUMNS
from glmlab.eval.metrics import METRICS
from glmlab.settings import MIN_IMAGE_PIXELS, GenerationSettings

__all__ = [
    "DataSource",
    "GenerationSpec",
    "MetricSpec",
    "PromptSpec",
    "RESERVED_COLUMNS",
    "Suite",
    "apply_overrides",
    "shipped_suite",
    "suite_problems",
]

# Columns of a run's sample rows; a kept metadata field may not take one of these names.
RESERVED_COLUMNS = (
    "id",
    "index",
    "question",
    "references",
    "options",
    "raw",
    "prediction",
    "thinking",
    "extracted",
    "error",
    "finish_reason",
    *LATENCY_COLUMNS,
    "batch_size",
    "started_at",
    "finished_at",
    "peak_memory_bytes",
    "session",
    "thumbnail",
)


def _is_template(template: Any) -> bool:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    return all(name.isidentifier() for name in names)


@dataclass
class PromptSpec:
    """How a record's question becomes the user turn."""

    template: str = checked_field(
        "{question}",
        help="str.format template: {question} and metadata fields",
        check=Check(_is_template, "a str.format template whose placeholders are plain field names"),
    )
    system: str | None = checked_field(None, help="system prompt (overrides the record's)", check=text(False))
    thinking: bool | None = checked_field(
        False,
        help="False: /nothink; None: model default",
        check=Check(lambda v: v is None or isinstance(v, bool), "true, false or null"),
    )


@dataclass
class MetricSpec:
    """One metric of `glmlab.eval.metrics` with its options."""

    name: str = checked_field(help="a name in glmlab.eval.metrics.METRICS", check=one_of(METRICS))
    options: dict[str, Any] = checked_field(help="fixed keyword options", check=mapping, default_factory=dict)
    per_sample: dict[str, str] = checked_field(
        help="option -> metadata field giving its value per sample", check=mapping, default_factory=dict
    )
    extract: str | None = checked_field(None, help="extractor for this metric only", check=one_of(EXTRACTORS))

    def extra_problems(self) -> list[tuple[str, str]]:
        if (
            self.name not in METRICS
            or not isinstance(self.options, Mapping)
            or not isinstance(self.per_sample, Mapping)
        ):
            return []
        accepted = _metric_options(self.name)
        if accepted is None:
            return []
        return [
            (
                f"options.{option}",
                f"{self.name} takes no option {option!r}; it takes {', '.join(accepted) or 'none'}",
            )
            for option in [*self.options, *self.per_sample]
            if option not in accepted
        ]


@dataclass
class GenerationSpec(GenerationSettings):
    """A suite's generation section: the per-call settings of `GenerationSettings`, plus the image budget."""

    max_image_pixels: int | None = checked_field(
        None,
        help="Largest image area the model sees after resizing.",
        check=integer(MIN_IMAGE_PIXELS),
        expected=f"an integer >= {MIN_IMAGE_PIXELS} (one 28x28 image token)",
    )


@dataclass
class Suite:
    """An evaluation suite; build it with `Suite.from_yaml(path)` or from keyword arguments."""

    name: str = checked_field("", help="the suite's name (runs and reports show it)", check=text())
    data: DataSource = field(default_factory=DataSource, metadata={"help": "where the records come from"})
    metrics: list[MetricSpec] = checked_field(
        help="metric names or {name, options} mappings",
        check=Check(lambda v: isinstance(v, list) and bool(v), "a non-empty list of metrics"),
        default_factory=list,
    )
    description: str = checked_field("", help="what the suite measures", check=text(False))
    prompt: PromptSpec = field(default_factory=PromptSpec, metadata={"help": "how questions are asked"})
    generation: dict[str, Any] = checked_field(
        help="GenerationSettings fields and max_image_pixels", check=mapping, default_factory=dict
    )
    extract: str = checked_field(
        "text", help="a name in glmlab.eval.extract.EXTRACTORS", check=one_of(EXTRACTORS)
    )
    keep_fields: list[str] = checked_field(
        help="metadata fields kept per row", check=text_list("metadata field names"), default_factory=list
    )

    def __post_init__(self) -> None:
        found = coerce_sections(self)
        self.metrics, metric_problems = _metric_specs(self.metrics)
        raise_if_problems(found + metric_problems + problems(self), f"suite {self.name!r}")

    def extra_problems(self) -> list[tuple[str, str] | str]:
        found: list[tuple[str, str] | str] = []
        if isinstance(self.generation, Mapping):
            found += mapping_problems(GenerationSpec, self.generation, "generation.", kind="setting")
        names = [metric.name for metric in self.metrics if isinstance(metric, MetricSpec)]
        found += [
            ("metrics", f"{name!r} listed twice; each metric's scores fill one column")
            for name in sorted({n for n in names if names.count(n) > 1})
        ]
        if isinstance(self.keep_fields, list):
            clashes = [name for name in self.keep_fields if name in RESERVED_COLUMNS]
            if clashes:
                found.append(("keep_fields", f"{clashes} clash with sample columns {RESERVED_COLUMNS}"))
            found += [
                ("keep_fields", f"{name!r} is also a metric (its score column)")
                for name in self.keep_fields
                if name in names
            ]
        return found

    # ---- serialisation --------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Suite:
        """Read a suite file; `overrides` maps dotted paths to values (`{"data.n": 100}`)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such suite file. Suites live in eval/*.yaml.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error}).") from None
        return cls.from_dict(data, overrides=overrides, source=str(path))

    @classmethod
    def from_dict(
        cls, data: Any, overrides: Mapping[str, Any] | None = None, *, source: str = "suite"
    ) -> Suite:
        """Build a suite from plain data, reporting every invalid field at once (ConfigError)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of suite fields, got {type(data).__name__}.")
        data = apply_overrides(data, overrides or {})
        found = unknown_keys(cls, data)
        known = {item.name for item in fields(cls)}
        try:
            suite = cls(**{key: value for key, value in data.items() if key in known})
        except InvalidConfig as error:
            found += error.problems
        raise_if_problems(found, source)
        return suite

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `from_dict` reads back (and that a run's config.json stores)."""
        return asdict(self)

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    def with_overrides(self, overrides: Mapping[str, Any]) -> Suite:
        """A new suite with dotted-path overrides applied (this one is left unchanged)."""
        return Suite.from_dict(self.to_dict(), overrides, source=f"suite {self.name!r}")

    # ---- checks needing the file system -----------------------------------------------------------

    def check_data(self) -> None:
        """Check what only the disk can tell: the data folder holds records."""
        found = [f"data.{name}: {message}" for name, message in self.data.disk_problems()]
        raise_if_problems(found, f"suite {self.name!r}")

    def generation_settings(self) -> dict[str, Any]:
        """The keyword arguments every model call of this suite gets (thinking included)."""
        return {**self.generation, "thinking": self.prompt.thinking}


def shipped_suite(name: str, overrides: Mapping[str, Any] | None = None) -> Suite:
    """A suite shipped in the repository's eval/ folder by name ("shapes"), or ./eval/ as a fallback."""
    for folder in (Path(__file__).resolve().parents[2] / "eval", Path.cwd() / "eval"):
        if (folder / f"{name}.yaml").is_file():
            return Suite.from_yaml(folder / f"{name}.yaml", overrides)
    raise ConfigError(
        f"suite {name!r}: no eval/{name}.yaml next to the glmlab package or in the current directory; "
        "pass the path of the suite file instead."
    )


def suite_problems(data: Mapping[str, Any]) -> list[str]:
    """Every problem of a suite document, each naming its field; an empty list means valid."""
    try:
        Suite.from_dict(data)
    except InvalidConfig as error:
        return error.problems
    return []


def _metric_specs(metrics: Any) -> tuple[Any, list[str]]:
    """Metric names and mappings as MetricSpecs, with the problems of those that are neither."""
    if not isinstance(metrics, list):
        return metrics, []
    specs, found = [], []
    for index, metric in enumerate(metrics):
        where = f"metrics[{index}]"
        if isinstance(metric, str):
            metric = {"name": metric}
        if isinstance(metric, MetricSpec | Mapping):
            spec = build_section(MetricSpec, metric, where, found)
            if spec is not None:
                specs.append(spec)
        else:
            found.append(f"{where}: expected a metric name or a mapping, got {type(metric).__name__}")
    return specs, found


def _metric_options(name: str) -> list[str] | None:
    """Keyword-only options of a registered metric; None when it takes **kwargs (anything goes)."""
    parameters = inspect.signature(METRICS[name]).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
