"""glmlab's data side of fine-tuning and evaluation: one record format, loaders, synthetic generators.

- `load_records(source, ...)` / `load_records_with_report(...)` turn a data folder, a .jsonl file, a
  DataFrame, a list of dicts or a hub dataset into a `datasets.Dataset` with columns `id`, `images`,
  `messages`, `metadata`; `save_records` writes the folder they read back; `to_messages(record)` is the
  conversation of one record, the single place training and eval take prompts and answers from.
- Generators (`generate_shapes`, `generate_invoices`, `generate_phantoms`) make records with exact
  ground truth, deterministic given a seed; `GENERATORS` names them for recipes and suites, and
  `generate(name, n, ...)` calls one by name.

Loading and generating know nothing of models, tokens or chat templates: images stay images and the
text stays plain, so every model path builds its prompt the same way from the same record.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glmlab.data.amounts import amount_in_words_zh
from glmlab.data.fonts import find_cjk_font
from glmlab.data.invoices import generate_invoices
from glmlab.data.loaders import (
    LoadReport,
    SkippedRow,
    features,
    load_records,
    load_records_with_report,
    save_records,
)
from glmlab.data.phantoms import generate_phantoms
from glmlab.data.records import REASONS, Dialogue, RecordError, to_dialogue, to_messages
from glmlab.data.shapes import generate_shapes
from glmlab.errors import ConfigError

GENERATORS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "shapes": generate_shapes,
    "invoices-zh": functools.partial(generate_invoices, language="zh"),
    "invoices-en": functools.partial(generate_invoices, language="en"),
    "medical-phantoms": generate_phantoms,
}


def generator_options(name: str) -> dict[str, Any]:
    """The options generator `name` takes, with their defaults (what a recipe or suite may set)."""
    if name not in GENERATORS:
        raise ConfigError(f"generator {name!r}: unknown; expected one of {sorted(GENERATORS)}.")
    function = GENERATORS[name]
    fixed = (
        function.keywords if isinstance(function, functools.partial) else {}
    )  # e.g. the invoices' language
    parameters = inspect.signature(getattr(function, "func", function)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in fixed}


def generate(
    name: str, n: int, seed: int = 0, out_dir: str | Path | None = None, **options: Any
) -> list[dict]:
    """Run the generator registered as `name` (a key of `GENERATORS`) with its own options."""
    unknown = sorted(set(options) - set(generator_options(name)))
    if unknown:
        raise ConfigError(
            f"generator {name!r}: unknown option(s) {unknown}; it takes {sorted(generator_options(name))}."
        )
    return GENERATORS[name](n, seed, out_dir, **options)


__all__ = [
    "GENERATORS",
    "REASONS",
    "LoadReport",
    "Dialogue",
    "RecordError",
    "SkippedRow",
    "amount_in_words_zh",
    "features",
    "find_cjk_font",
    "generate",
    "generator_options",
    "generate_invoices",
    "generate_phantoms",
    "generate_shapes",
    "load_records",
    "load_records_with_report",
    "save_records",
    "to_dialogue",
    "to_messages",
]
