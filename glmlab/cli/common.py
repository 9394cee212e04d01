"""Helpers shared by the CLI verbs: turning glmlab errors into one clear line and an exit code."""

from __future__ import annotations

import contextlib
import sys

import typer

from glmlab.errors import GlmlabError


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
