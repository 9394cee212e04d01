"""`glmlab demo`: the main job, end to end on the embedded default model."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from glmlab.cli.common import clear_errors, quiet_transformers
from glmlab.cli.root import app


@app.command()
def demo(
    model: str = typer.Option(
        "tiny", help="Model to run on: 'tiny' (offline, random weights), a hub id or a folder."
    ),
    stage: list[str] = typer.Option(None, "--stage", help="Run only these stages (repeatable)."),
    work_dir: Path = typer.Option(None, help="Where stages write their files (default: a temporary folder)."),
) -> None:
    """Run glmlab end to end: load, ask, stream (and the later stages)."""
    from glmlab import demo as demo_module

    quiet_transformers()
    with clear_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        demo_module.run(model, stages=stage or None, work_dir=work_dir, echo=typer.echo)
    typer.echo("\ndemo finished")
