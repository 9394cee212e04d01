"""The root `glmlab` command that every verb registers on, and its global options."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    help="glmlab: ask, fine-tune, evaluate and serve GLM-V vision-language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log automatic choices and progress."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
