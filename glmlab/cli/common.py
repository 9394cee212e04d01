"""Helpers shared by the CLI verbs: turning glmlab errors into one clear line and an exit code."""

from __future__ import annotations

import contextlib
import sys

import typer

from glmlab.errors import ConfigError, GlmlabError


@contextlib.contextmanager
def clear_errors():
    """Print a glmlab error as one line on stderr and exit 2, instead of a traceback."""
    try:
        yield
    except GlmlabError as error:
        typer.echo(f"{type(error).__name__}: {error}", err=True)
        sys.exit(2)


def quiet_transformers() -> None:
    """Hide transformers' weight-loading progress bars in CLI output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def parse_overrides(items: list[str], example: str) -> dict[str, object]:
    """`--set` values: `["data.n=100", "prompt.thinking=null"]` -> {"data.n": 100, "prompt.thinking": None}
    (values are read as YAML)."""
    import yaml

    parsed = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set {example}.")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed
