"""`glmlab train lora/<recipe>.yaml`: one LoRA run from the shell, a thin front over `glmlab.lora.train`.

`--set section.field=value` overrides any recipe field by its dotted path (values are read as YAML:
`--set adapter.rank=32`, `--set adapter.modules_to_save=[lm_head]`), checked against `LoraRecipe` like a
field in the file. `--nproc N` runs the same command in N processes under torchrun
(`torch.distributed.run`): data parallelism (DDP; gloo on CPUs, NCCL on GPUs), each process taking
`optimizer.batch_size` samples per step, so the global batch is N times larger.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="Train in N processes with torchrun (DDP: gloo on CPUs, one GPU each on GPUs); "
        "the global batch is N x optimizer.batch_size x gradient_accumulation_steps.",
    ),
) -> None:
    """Fine-tune a LoRA adapter as a recipe says; prints progress and a final summary."""
    from glmlab.lora import load_recipe
    from glmlab.lora import train as run_training

    if nproc > 1:
        raise typer.Exit(launch(nproc, recipe, model, output, max_steps, resume, overrides or []))
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
        main = int(os.environ.get("RANK", "0")) == 0  # under torchrun, only the first process speaks
        if main:
            typer.echo(f"training {loaded.name} on {loaded.base_model} -> {folder}")
        result = run_training(loaded, folder, resume=resume)
    if main:
        typer.echo(summary(result))


def launch(
    nproc: int,
    recipe: str,
    model: str | None,
    output: Path | None,
    max_steps: int | None,
    resume: bool,
    overrides: list[str],
) -> int:
    """Run this same `glmlab train` command in `nproc` processes under torchrun on this machine;
    returns torchrun's exit status (non-zero when any process failed)."""
    arguments = [recipe]
    for flag, value in (("--model", model), ("--output", output), ("--max-steps", max_steps)):
        if value is not None:
            arguments += [flag, str(value)]
    arguments += ["--resume"] if resume else []
    for override in overrides:
        arguments += ["--set", override]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "glmlab.cli",
        "train",
        *arguments,
    ]
    typer.echo(f"launching {nproc} processes: torchrun --standalone --nproc-per-node={nproc} ...")
    return subprocess.run(command, check=False).returncode


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
