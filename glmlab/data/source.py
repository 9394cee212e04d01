"""`DataSource`: where records come from, for a training recipe and an eval suite alike, and
`load_source`, the one function that loads it.

A source is exactly one of a synthetic generator (`glmlab.data.GENERATORS`), a data folder or file, or
a hub dataset (renamed into the record format by `columns`); `format` names the layout of a folder or
hub set's rows (glmlab's own, ShareGPT/LLaVA, LLaMA-Factory, or a CSV beside its images). Whatever it is, `load_source`
returns a `datasets.Dataset` in glmlab's record format, so training and evaluation read the same
records the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmlab.config import Check, checked_field, integer, mapping, one_of, text
from glmlab.data.formats import FORMATS
from glmlab.data.generators import GENERATORS, generate, generator_options
from glmlab.data.hub_layouts import HUB_LAYOUTS
from glmlab.data.loaders import ON_ERROR, load_records
from glmlab.errors import ConfigError, InputError

DEFAULT_GENERATED_SAMPLES = 1000  # a generator source without n


@dataclass
class DataSource:
    """Where the records come from: exactly one of `generator`, `folder`, `hub`."""

    generator: str | None = checked_field(
        None, help="A synthetic generator's name (glmlab.data.GENERATORS).", check=one_of(GENERATORS)
    )
    folder: str | None = checked_field(
        None, help="A data folder or file of records in `format` (glmlab.data.load_records).", check=text()
    )
    hub: str | None = checked_field(None, help="A hub dataset name (datasets.load_dataset).", check=text())
    n: int | None = checked_field(
        None,
        help=f"How many records: a generator makes n (None: {DEFAULT_GENERATED_SAMPLES}); a folder or hub "
        "set is cut to n (None: all).",
        check=integer(1),
    )
    seed: int | None = checked_field(
        None,
        help="Seed of a generator (and of a recipe's shuffling); None: the recipe's seed, 0 in a suite.",
        check=integer(0),
    )
    options: dict[str, Any] = checked_field(
        help="The generator's own options (glmlab.data.generator_options).",
        check=mapping,
        default_factory=dict,
    )
    split: str | None = checked_field(
        None, help="Hub split (None: train), or read <split>.jsonl in a folder.", check=text()
    )
    config: str | None = checked_field(None, help="Hub configuration name.", check=text())
    layout: str | None = checked_field(
        None,
        help="A benchmark's hub row handling (glmlab.data.hub_layouts.HUB_LAYOUTS), applied before columns.",
        check=one_of(HUB_LAYOUTS),
    )
    columns: dict[str, str] = checked_field(
        help="Renames source columns to record fields ({question_id: id}).",
        check=Check(
            lambda v: isinstance(v, Mapping) and all(isinstance(name, str) for name in v.values()),
            "a mapping of source column: record field name",
        ),
        default_factory=dict,
    )
    references: str | None = checked_field(
        None, help="Metadata field with every accepted answer (default: the answer).", check=text()
    )
    hub_options: dict[str, Any] = checked_field(
        help="More datasets.load_dataset keyword arguments (revision, cache_dir, ...).",
        check=mapping,
        default_factory=dict,
    )
    format: str = checked_field(
        "glmlab",
        help="Layout of a folder's or hub set's rows: glmlab (data.jsonl), sharegpt (LLaVA conversations), "
        "llama_factory (messages + images), csv (data.csv: image, question, answer).",
        check=one_of(FORMATS),
    )
    image_root: str | None = checked_field(
        None,
        help="Folder that relative image paths are read from (None: the data file's folder; a hub set: "
        "the current directory).",
        check=text(),
    )
    on_error: str = checked_field(
        "raise",
        help="Bad rows: 'raise' stops, 'skip' leaves them out (and reports them).",
        check=one_of(ON_ERROR),
    )

    def extra_problems(self) -> list[tuple[str, str]]:
        sources = [key for key in ("generator", "folder", "hub") if getattr(self, key) is not None]
        if len(sources) != 1:
            return [("", f"give exactly one of generator, folder, hub (got {sources or 'none'})")]
        if self.layout is not None and self.hub is None:
            return [("layout", "shapes hub rows; give it with hub (a data folder holds records already)")]
        if self.generator not in GENERATORS or not isinstance(self.options, Mapping):
            return []
        known = generator_options(self.generator)
        return [
            (
                f"options.{key}",
                f"generator {self.generator!r} takes no option {key!r}; it takes {', '.join(known)}",
            )
            for key in self.options
            if key not in known
        ]

    @property
    def kind(self) -> str:
        return "generator" if self.generator else "folder" if self.folder else "hub"

    @property
    def label(self) -> str:
        """What a log line or report calls this source."""
        label = f"{self.kind} {self.generator or self.folder or self.hub}"
        return label if self.format == "glmlab" else f"{label} ({self.format})"

    def disk_problems(self) -> list[tuple[str, str]]:
        """What only the disk can tell: the data folder holds records."""
        if self.folder is None or self.format not in FORMATS:
            return []
        suffixes = FORMATS[self.format].suffixes
        if _has_records(Path(self.folder), self.split, suffixes):
            return []
        files = " or ".join(f"{self.split or 'data'}{suffix}" for suffix in suffixes)
        return [
            (
                "folder",
                f"{self.folder!r} holds no records (expected a folder with {files}, or a "
                f"{' or '.join(suffixes)} file; relative paths are taken from the current directory "
                f"{Path.cwd()})",
            )
        ]


def load_source(source: DataSource, *, limit: int | None = None):
    """The source's records as a `datasets.Dataset` in the record format: at most `n` and `limit`.

    A generator makes `n` records (default 1000) with `seed` (default 0); a folder is read with `split`
    and `columns`; a hub set is loaded with `config`, `split` and `hub_options`, then renamed. Both are
    read in `format`, relative image paths from `image_root`. Bad rows follow `on_error`."""
    count = min((value for value in (source.n, limit) if value is not None), default=None)
    if source.generator is not None:
        seed = source.seed if source.seed is not None else 0
        records = generate(source.generator, count or DEFAULT_GENERATED_SAMPLES, seed, **source.options)
        return load_records(records, on_error=source.on_error)
    if source.folder is not None:
        return load_records(
            source.folder,
            split=source.split,
            on_error=source.on_error,
            limit=count,
            columns=source.columns or None,
            format=source.format,
            image_root=source.image_root,
        )
    return load_records(
        _hub_dataset(source, count),
        on_error=source.on_error,
        format=source.format,
        image_root=source.image_root,
    )


def _hub_dataset(source: DataSource, limit: int | None):
    """The hub set cut to `limit`, shaped by its layout, renamed into record fields, with `answer` from
    `references` if absent."""
    import datasets

    split = source.split or "train"
    try:
        dataset = datasets.load_dataset(source.hub, source.config, split=split, **source.hub_options)
    except Exception as error:  # datasets raises many types (network, missing split, bad config)
        raise InputError(
            f"data.hub: loading {source.hub!r} (config {source.config!r}, split {split!r}) failed "
            f"({type(error).__name__}: {error}). Check the name, config and split, or use a data folder."
        ) from error
    if limit is not None:  # before the layout: it may decode images of every row it sees
        dataset = dataset.select(range(min(limit, len(dataset))))
    if source.layout is not None:
        dataset = HUB_LAYOUTS[source.layout](dataset)
    missing = [column for column in source.columns if column not in dataset.column_names]
    if missing:
        raise ConfigError(
            f"data.columns: {missing} not in {source.hub!r}; its columns are {dataset.column_names}."
        )
    dataset = dataset.rename_columns(dict(source.columns))
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    has_answer = "answer" in dataset.column_names or "messages" in dataset.column_names
    if not has_answer and source.references in dataset.column_names:
        # Records need one answer; a hub set with a list of accepted answers lends its first.
        dataset = dataset.map(
            lambda refs: {"answer": as_list(refs)[0] if as_list(refs) else ""},
            input_columns=[source.references],
        )
    return dataset


def _has_records(path: Path, split: str | None, suffixes: tuple[str, ...]) -> bool:
    if path.is_file():
        return path.suffix in suffixes
    return any((path / f"{split or 'data'}{suffix}").is_file() for suffix in suffixes)


def as_list(value: Any) -> list[Any]:
    """A field that holds one value or several (references, accepted answers) as a list."""
    if value is None:
        return []
    if isinstance(value, str | dict):
        return [value]
    return list(value)
