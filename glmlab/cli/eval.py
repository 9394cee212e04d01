"""`glmlab eval SUITE.yaml`: run an evaluation suite from the shell and print its summary.

A thin front over `glmlab.eval.evaluate`: every evaluate argument has its flag (a test checks they
match), `--set key=value` overrides a suite field as `Suite.from_yaml(..., overrides=...)` does, and
`--check` validates the suite without loading a model.
"""

from __future__ import annotations

import datetime
import re
import warnings
from pathlib import Path

import typer

from glmlab.cli.common import clear_errors, parse_overrides, quiet_transformers
from glmlab.cli.root import app
from glmlab.loading import DEFAULT_MODEL

# Flags that are not evaluate() arguments: they pick the model, shape the suite or the output.
FRONT_ONLY_FLAGS = ("suite", "model", "server", "api_key", "overrides", "check", "report_path")


@app.command("eval")
def eval_command(
    suite: Path = typer.Argument(
        ..., help="Suite file (eval/shapes.yaml) or a shipped suite's name (chartqa)."
    ),
    model: str = typer.Option(DEFAULT_MODEL, help="Hub id, local checkpoint folder, or 'tiny'."),
    adapter: Path = typer.Option(None, help="A PEFT LoRA adapter folder to evaluate (local models)."),
    server: str = typer.Option(None, help="Evaluate a running glmlab/OpenAI-compatible server at this URL."),
    api_key: str = typer.Option(None, envvar="GLMLAB_API_KEY", help="API key of --server."),
    limit: int = typer.Option(None, help="Evaluate only the first N samples."),
    run_dir: Path = typer.Option(None, help="Run folder (default: runs/eval/<suite>-<model>-<time>)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue a run folder that has samples."),
    batch_size: int = typer.Option(
        8,
        help="Local models: samples per batched generate call (1: one at a time, per-request latency).",
    ),
    concurrency: int = typer.Option(4, help="--server: requests in flight at once."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a suite field: --set data.n=100."),
    check: bool = typer.Option(False, "--check", help="Only validate the suite (no model is loaded)."),
    report_path: Path = typer.Option(None, "--report", help="Also write an HTML report to this file."),
) -> None:
    """Evaluate a model (or a server) on a suite; print metrics with 95 % intervals and latency."""
    quiet_transformers()
    with clear_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_suite(suite, parse_overrides(overrides or [], "data.n=100"))
        loaded.check_data()
        if check:
            typer.echo(f"{suite}: valid suite {loaded.name!r} ({', '.join(m.name for m in loaded.metrics)})")
            return
        target = _target(model, adapter, server, api_key)
        label = server or model
        folder = run_dir or default_run_dir(loaded.name, label, adapter)
        run = _evaluate(loaded, target, limit, batch_size, concurrency, folder, resume)
        print_run(run)
        if report_path is not None:
            from glmlab.eval import report

            typer.echo(f"report: {report(run, report_path)}")


def load_suite(suite: Path, overrides):
    """A suite file, or, for a bare name with no such file ("chartqa"), the shipped eval/<name>.yaml."""
    from glmlab.eval.suite import Suite, shipped_suite

    if suite.suffix or suite.exists() or len(suite.parts) > 1:
        return Suite.from_yaml(suite, overrides=overrides)
    return shipped_suite(str(suite), overrides)


def _evaluate(suite, target, limit, batch_size, concurrency, run_dir, resume):
    from glmlab.eval import evaluate

    return evaluate(
        suite,
        target,
        limit=limit,
        batch_size=batch_size,
        concurrency=concurrency,
        run_dir=run_dir,
        resume=resume,
    )


def default_run_dir(suite: str, model: str, adapter: Path | None) -> Path:
    """runs/eval/<suite>-<model>[-<adapter>]-<UTC time>: a new folder per run unless --run-dir is given."""
    label = "-".join(part for part in (suite, Path(model).name, adapter.name if adapter else None) if part)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "eval" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', label)}-{stamp}"


def _target(model: str, adapter: Path | None, server: str | None, api_key: str | None):
    from glmlab.errors import ConfigError

    if server is None:
        import glmlab

        return glmlab.load(model, adapter=adapter)
    if adapter is not None:
        raise ConfigError("--adapter: with --server, load the adapter on the server and name it there.")
    try:
        from glmlab.client import Client
    except ImportError:
        raise ConfigError("--server: glmlab.Client is not available in this installation.") from None
    return Client(server, api_key=api_key)


def print_run(run) -> None:
    """The summary a terminal user wants: metrics with intervals, latency percentiles, throughput."""
    import pandas as pd

    with pd.option_context("display.width", 140, "display.max_columns", 20, "display.precision", 4):
        typer.echo(f"\n{run.name} on {run.suite.name}: {len(run.samples)} samples")
        typer.echo(run.summary.to_string(index=False))
        typer.echo("\nlatency (seconds; tokens)")
        typer.echo(run.latency.to_string(index=False))
    speed = run.throughput
    typer.echo(
        f"\nthroughput: {speed['samples_per_s']:.3f} samples/s, {speed['output_tokens_per_s']:.1f} "
        f"output tokens/s over {speed['busy_s']:.1f} s"
    )
    settings = run.config.get("settings", {})
    shaping = ("max_image_pixels", "batch_size", "concurrency", "dtype", "device")
    typer.echo("settings: " + ", ".join(f"{key}={settings.get(key)}" for key in shaping))
    if run.failed:
        typer.echo(
            f"WARNING: {run.failed} sample(s) failed; see the 'error' column of samples.jsonl", err=True
        )
    if run.run_dir is not None:
        typer.echo(f"run folder: {run.run_dir}")
