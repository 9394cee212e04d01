"""`glmlab train lora/<recipe>.yaml`: one LoRA run from the shell, a thin front over `glmlab.lora.train`.

`--set section.field=value` overrides any recipe field by its dotted path (values are read as YAML:
`--set adapter.rank=32`, `--set adapter.modules_to_save=[lm_head]`), checked against `LoraRecipe` like a
field in the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from glmlab.cli.common import clear_errors, parse_overrides
from glmlab.cli.root import app


@app.command()
def train(
    recipe: str = typer.Argument(
        ..., help="A recipe YAML file (lora/shapes.yaml) or a shipped recipe's name."
    ),
    model: str = typer.Option(None, "--model", help="Base model override: hub id, folder, or 'tiny'."),
    output: Path = typer.Option(None, "--output", "-o", help="Adapter folder (default: runs/<recipe name>)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many optimiser steps."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint in the output folder."
    ),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a recipe field by dotted path: --set adapter.rank=32 (repeatable)."
    ),
) -> None:
    """Fine-tune a LoRA adapter as a recipe says; prints progress and a final summary."""
    from glmlab.lora import load_recipe
    from glmlab.lora import train as run_training

    with clear_errors(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        loaded = load_recipe(recipe)
        changes = parse_overrides(overrides or [], "adapter.rank=32")
        if model is not None:
            changes["base_model"] = model
        if max_steps is not None:
            changes["optimizer.max_steps"] = max_steps
        loaded = loaded.replace(**changes)
        folder = output or Path("runs") / loaded.name
        typer.echo(f"training {loaded.name} on {loaded.base_model} -> {folder}")
        result = run_training(loaded, folder, resume=resume)
    typer.echo(summary(result))


def summary(result) -> str:
    """The final lines: where the adapter is, steps and time, first/last loss, before/after metric."""
    losses = result.history["loss"].dropna() if "loss" in result.history else []
    lines = [
        f"\nadapter: {result.output_dir}",
        f"steps: {result.global_step} in {result.train_runtime_s:.1f} s",
    ]
    if len(losses):
        lines.append(f"loss: {losses.iloc[0]:.4f} -> {losses.iloc[-1]:.4f}")
    metric = result.recipe.evaluation.metric
    before, after = result.metrics.get(f"initial_eval_{metric}"), result.metrics.get(f"eval_{metric}")
    if after is not None:
        lines.append(f"held-out {metric}: {before if before is None else round(before, 4)} -> {after:.4f}")
    lines.append(f"load it: glmlab.load({result.recipe.base_model!r}, adapter={str(result.output_dir)!r})")
    return "\n".join(lines)
