"""`Suite`: what an evaluation measures, as a typed config that a YAML file under `eval/` serialises.

A suite names its data (a generator of `glmlab.data`, a data folder, or a hub dataset with a column
mapping), how each record becomes a prompt (template, system prompt, thinking on/off), the generation
settings, how the scored part is taken out of the answer (an extractor of `glmlab.eval.extract`), the
metrics with their options (fixed, or per sample from a metadata field), and which metadata fields
each sample row keeps. Validation walks the whole document and reports every bad field at once, each
named by its path (`metrics[1].name`), so a typo fails before any model is loaded or called.

The suite knows nothing of models: `glmlab.eval.harness.evaluate` runs it, and the rows it writes
can be rescored from the suite alone (`glmlab.eval.scoring`).
"""

from __future__ import annotations

import copy
import difflib
import inspect
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from glmlab.errors import ConfigError, InputError
from glmlab.eval.extract import EXTRACTORS
from glmlab.eval.latency import LATENCY_COLUMNS
from glmlab.eval.metrics import METRICS
from glmlab.settings import GenerationSettings

__all__ = [
    "DataSource",
    "MetricSpec",
    "PromptSpec",
    "RESERVED_COLUMNS",
    "Suite",
    "shipped_suite",
    "suite_problems",
]

GENERATION_FIELDS = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "stop",
    "do_sample",
    "max_image_pixels",
)
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
ON_ERROR = ("raise", "skip")
# YAML-level types; the value ranges are glmlab.settings.GenerationSettings' own checks (torch-free).
_GENERATION_TYPES: dict[str, tuple[type, ...]] = {
    "max_new_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "repetition_penalty": (int, float),
    "seed": (int,),
    "stop": (str, list),
    "do_sample": (bool,),
}


@dataclass
class DataSource:
    """Where the records come from: exactly one of `generator`, `folder`, `hub`."""

    generator: str | None = field(default=None, metadata={"help": "a name in glmlab.data.GENERATORS"})
    folder: str | None = field(default=None, metadata={"help": "a data folder or .jsonl file"})
    hub: str | None = field(default=None, metadata={"help": "a hub dataset name (datasets.load_dataset)"})
    n: int | None = field(default=None, metadata={"help": "records to generate (generator only)"})
    seed: int = field(default=0, metadata={"help": "generator seed; eval seeds differ from training seeds"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "generator options"})
    split: str | None = field(default=None, metadata={"help": "hub split, or <split>.jsonl in a folder"})
    config: str | None = field(default=None, metadata={"help": "hub configuration name"})
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "source column -> record field"})
    references: str | None = field(
        default=None, metadata={"help": "metadata field with every accepted answer (default: the answer)"}
    )
    hub_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "more load_dataset kwargs"})
    on_error: str = field(default="raise", metadata={"help": "bad rows: 'raise' or 'skip' (and report)"})

    @property
    def kind(self) -> str:
        return "generator" if self.generator else "folder" if self.folder else "hub"

    @property
    def label(self) -> str:
        """What a log line or report calls this source."""
        return f"{self.kind} {self.generator or self.folder or self.hub}"


@dataclass
class PromptSpec:
    """How a record's question becomes the user turn."""

    template: str = field(
        default="{question}", metadata={"help": "str.format template: {question} and metadata fields"}
    )
    system: str | None = field(default=None, metadata={"help": "system prompt (overrides the record's)"})
    thinking: bool | None = field(default=False, metadata={"help": "False: /nothink; None: model default"})


@dataclass
class MetricSpec:
    """One metric of `glmlab.eval.metrics` with its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "fixed keyword options"})
    per_sample: dict[str, str] = field(
        default_factory=dict, metadata={"help": "option -> metadata field giving its value per sample"}
    )
    extract: str | None = field(default=None, metadata={"help": "extractor for this metric only"})


@dataclass
class Suite:
    """An evaluation suite; build it with `Suite.from_yaml(path)` or from keyword arguments."""

    name: str
    data: DataSource
    metrics: list[MetricSpec]
    description: str = ""
    prompt: PromptSpec = field(default_factory=PromptSpec)
    generation: dict[str, Any] = field(default_factory=dict, metadata={"help": "GenerationSettings fields"})
    extract: str = field(default="text", metadata={"help": "a name in glmlab.eval.extract.EXTRACTORS"})
    keep_fields: list[str] = field(default_factory=list, metadata={"help": "metadata fields kept per row"})

    def __post_init__(self) -> None:
        if isinstance(self.data, Mapping):
            self.data = DataSource(**self.data)
        if isinstance(self.prompt, Mapping):
            self.prompt = PromptSpec(**self.prompt)
        self.metrics = [_metric_spec(metric) for metric in self.metrics]
        _raise_problems(suite_problems(self.to_dict()), f"suite {self.name!r}")

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
        _raise_problems(suite_problems(data), source)
        return cls(**data)

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
        """Check what only the disk can tell: the data folder exists, generator options are known."""
        problems = []
        if self.data.folder is not None and not _has_records(Path(self.data.folder), self.data.split):
            problems.append(
                f"data.folder: {self.data.folder!r} holds no records (expected a folder with "
                f"{self.data.split or 'data'}.jsonl, or a .jsonl file; relative paths are taken from "
                f"the current directory {Path.cwd()})"
            )
        if self.data.generator is not None:
            problems += _generator_option_problems(self.data.generator, self.data.options)
        _raise_problems(problems, f"suite {self.name!r}")

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


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `data` with `{"a.b.c": value}` set; list items by index (`metrics.0.options`)."""
    result = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        node: Any = result
        keys = dotted.split(".")
        for key in keys[:-1]:
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict):
                node = node.setdefault(key, {})
            else:
                raise ConfigError(f"override {dotted!r}: {key!r} is not a field or list index there.")
        if isinstance(node, list) and keys[-1].isdigit() and int(keys[-1]) < len(node):
            node[int(keys[-1])] = value
        elif isinstance(node, dict):
            node[keys[-1]] = value
        else:
            raise ConfigError(f"override {dotted!r}: cannot set {keys[-1]!r} there.")
    return result


# ---- validation ---------------------------------------------------------------------------------


def suite_problems(data: Mapping[str, Any]) -> list[str]:
    """Every problem of a suite document, each naming its field; an empty list means valid."""
    problems = _unknown_keys(data, Suite, "")
    for required in ("name", "data", "metrics"):
        if data.get(required) is None:
            problems.append(f"{required}: missing (every suite needs name, data and metrics)")
    _expect(problems, "name", data.get("name"), str)
    _expect(problems, "description", data.get("description"), str)
    if isinstance(data.get("data"), Mapping):
        problems += _data_problems(data["data"])
    elif data.get("data") is not None:
        problems.append(f"data: expected a mapping, got {type(data['data']).__name__}")
    problems += _prompt_problems(data.get("prompt"))
    problems += _generation_problems(data.get("generation"))
    extract = data.get("extract", "text")
    if extract not in EXTRACTORS:
        problems.append(f"extract: unknown extractor {extract!r}; known: {', '.join(sorted(EXTRACTORS))}")
    problems += _metrics_problems(data.get("metrics"))
    problems += _keep_problems(data.get("keep_fields"))
    problems += _column_clashes(data.get("metrics"), data.get("keep_fields"))
    return problems


def _data_problems(data: Mapping[str, Any]) -> list[str]:
    problems = _unknown_keys(data, DataSource, "data.")
    sources = [key for key in ("generator", "folder", "hub") if data.get(key) is not None]
    if len(sources) != 1:
        problems.append(f"data: give exactly one of generator, folder, hub (got {sources or 'none'})")
    for key in ("generator", "folder", "hub", "split", "config", "references"):
        _expect(problems, f"data.{key}", data.get(key), str)
    for key in ("options", "columns", "hub_options"):
        _expect(problems, f"data.{key}", data.get(key), Mapping)
    generator = data.get("generator")
    if isinstance(generator, str):
        from glmlab.data import GENERATORS

        if generator not in GENERATORS:
            problems.append(
                f"data.generator: unknown generator {generator!r}; known: {', '.join(GENERATORS)}"
            )
        n = data.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            problems.append(f"data.n: {n!r}; a generator needs a number of records >= 1")
    elif data.get("n") is not None:
        problems.append("data.n: only a generator takes n; use the run's limit to cut a folder or hub set")
    if not isinstance(data.get("seed", 0), int):
        problems.append(f"data.seed: {data.get('seed')!r}; expected an integer")
    if data.get("on_error", "raise") not in ON_ERROR:
        problems.append(f"data.on_error: {data.get('on_error')!r}; expected one of {ON_ERROR}")
    columns = data.get("columns") or {}
    if isinstance(columns, Mapping) and not all(isinstance(v, str) for v in columns.values()):
        problems.append("data.columns: every value must be a record field name (a string)")
    return problems


def _prompt_problems(prompt: Any) -> list[str]:
    if prompt is None:
        return []
    if not isinstance(prompt, Mapping):
        return [f"prompt: expected a mapping, got {type(prompt).__name__}"]
    problems = _unknown_keys(prompt, PromptSpec, "prompt.")
    _expect(problems, "prompt.system", prompt.get("system"), str)
    if prompt.get("thinking") is not None and not isinstance(prompt.get("thinking"), bool):
        problems.append(f"prompt.thinking: {prompt['thinking']!r}; expected true, false or null")
    template = prompt.get("template", "{question}")
    if not isinstance(template, str):
        problems.append(f"prompt.template: expected a string, got {type(template).__name__}")
    else:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as error:
            return [*problems, f"prompt.template: not a str.format template ({error})"]
        bad = [name for name in names if not name.isidentifier()]
        if bad:
            problems.append(f"prompt.template: placeholders must be plain field names, got {bad}")
    return problems


def _generation_problems(generation: Any) -> list[str]:
    if generation is None:
        return []
    if not isinstance(generation, Mapping):
        return [f"generation: expected a mapping, got {type(generation).__name__}"]
    problems = [
        f"generation.{key}: unknown setting{_suggest(key, GENERATION_FIELDS)}; known: {', '.join(GENERATION_FIELDS)}"
        for key in generation
        if key not in GENERATION_FIELDS
    ]
    pixels = generation.get("max_image_pixels")
    if pixels is not None and (not isinstance(pixels, int) or pixels < 784):
        problems.append(f"generation.max_image_pixels: {pixels!r}; expected an integer >= 784 (28x28)")
    for key, value in generation.items():
        kinds = _GENERATION_TYPES.get(key)
        if (
            kinds
            and value is not None
            and (isinstance(value, bool) is not (bool in kinds) or not isinstance(value, kinds))
        ):
            names = " or ".join(kind.__name__ for kind in kinds)
            problems.append(f"generation.{key}: {value!r}; expected {names}")
    if not problems:  # types are right: now the value ranges, the same check a model call makes
        try:
            GenerationSettings(**{k: v for k, v in generation.items() if k != "max_image_pixels"})
        except InputError as error:
            problems.append(f"generation.{error}")
    return problems


def _metrics_problems(metrics: Any) -> list[str]:
    if metrics is None:
        return []
    if not isinstance(metrics, list) or not metrics:
        return ["metrics: expected a non-empty list of metric names or {name, options} mappings"]
    problems = []
    for index, metric in enumerate(metrics):
        where = f"metrics[{index}]"
        if isinstance(metric, str):
            metric = {"name": metric}
        if not isinstance(metric, Mapping):
            problems.append(f"{where}: expected a metric name or a mapping, got {type(metric).__name__}")
            continue
        problems += _unknown_keys(metric, MetricSpec, f"{where}.")
        name = metric.get("name")
        if name not in METRICS:
            problems.append(
                f"{where}.name: unknown metric {name!r}{_suggest(str(name), METRICS)}; "
                f"known: {', '.join(sorted(METRICS))}"
            )
            continue
        for key in ("options", "per_sample"):
            _expect(problems, f"{where}.{key}", metric.get(key), Mapping)
        accepted = _metric_options(name)
        given = [*(metric.get("options") or {}), *(metric.get("per_sample") or {})]
        for option in given:
            if accepted is not None and option not in accepted:
                problems.append(
                    f"{where}.options.{option}: {name} takes no option {option!r}; "
                    f"it takes {', '.join(accepted) or 'none'}"
                )
        extract = metric.get("extract")
        if extract is not None and extract not in EXTRACTORS:
            problems.append(f"{where}.extract: unknown extractor {extract!r}; known: {', '.join(EXTRACTORS)}")
    return problems


def _keep_problems(keep: Any) -> list[str]:
    if keep is None:
        return []
    if not isinstance(keep, list) or not all(isinstance(name, str) for name in keep):
        return ["keep_fields: expected a list of metadata field names"]
    clashes = [name for name in keep if name in RESERVED_COLUMNS]
    return [f"keep_fields: {clashes} clash with sample columns {RESERVED_COLUMNS}"] if clashes else []


def _column_clashes(metrics: Any, keep: Any) -> list[str]:
    """Each metric's score is a sample column named after it: names must be unique and free."""
    if not isinstance(metrics, list):
        return []
    names = [m if isinstance(m, str) else m.get("name") for m in metrics if isinstance(m, str | Mapping)]
    problems = [
        f"metrics: {name!r} listed twice; each metric's scores fill one column"
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    kept = keep if isinstance(keep, list) else []
    problems += [
        f"keep_fields: {name!r} is also a metric (its score column)" for name in kept if name in names
    ]
    return problems


def _metric_options(name: str) -> list[str] | None:
    """Keyword-only options of a registered metric; None when it takes **kwargs (anything goes)."""
    parameters = inspect.signature(METRICS[name]).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]


def _generator_option_problems(generator: str, options: Mapping[str, Any]) -> list[str]:
    from glmlab.data import GENERATORS, generator_options

    if generator not in GENERATORS:
        return []
    known = generator_options(generator)
    return [
        f"data.options.{key}: generator {generator!r} takes no option {key!r}; it takes {', '.join(known)}"
        for key in options
        if key not in known
    ]


def _unknown_keys(data: Mapping[str, Any], cls: type, prefix: str) -> list[str]:
    known = [f.name for f in fields(cls)]
    return [
        f"{prefix}{key}: unknown field{_suggest(str(key), known)}; known: {', '.join(known)}"
        for key in data
        if key not in known
    ]


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _expect(problems: list[str], where: str, value: Any, kind: type) -> None:
    if value is not None and not isinstance(value, kind):
        expected = "a mapping" if kind is Mapping else f"a {kind.__name__}"
        problems.append(f"{where}: expected {expected}, got {type(value).__name__} {value!r:.40}")


def _raise_problems(problems: list[str], source: str) -> None:
    if problems:
        listed = "\n  - ".join(problems)
        raise ConfigError(f"{source}: {len(problems)} invalid field(s):\n  - {listed}")


def _metric_spec(metric: Any) -> MetricSpec:
    if isinstance(metric, MetricSpec):
        return metric
    if isinstance(metric, str):
        return MetricSpec(name=metric)
    if isinstance(metric, Mapping):
        return MetricSpec(**metric)
    raise ConfigError(f"metrics: {metric!r:.60} is not a metric name or mapping.")


def _has_records(path: Path, split: str | None) -> bool:
    if path.is_file():
        return path.suffix == ".jsonl"
    return (path / f"{split or 'data'}.jsonl").is_file()
