"""The synthetic record generators by name: what a recipe's or suite's `generator` field names."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glmlab.data.invoices import generate_invoices
from glmlab.data.moderation import generate_moderation
from glmlab.data.moving_shapes import generate_moving_shapes
from glmlab.data.phantoms import generate_phantoms
from glmlab.data.shapes import generate_shapes
from glmlab.errors import ConfigError

GENERATORS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "shapes": generate_shapes,
    "invoices-zh": functools.partial(generate_invoices, language="zh"),
    "invoices-en": functools.partial(generate_invoices, language="en"),
    "medical-phantoms": generate_phantoms,
    "moderation": generate_moderation,
    "moving-shapes": generate_moving_shapes,  # video records ("video", not "image"): the library only for now
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
