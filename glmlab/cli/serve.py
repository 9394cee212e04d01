"""`glmlab serve`: glmlab's OpenAI-compatible server, or `vllm serve` with --engine vllm.

The settings options are generated from `glmlab.serve.ServerSettings` (its fields, types, defaults
and help), so the command and the library cannot drift. Options after `--` go to vLLM unchanged.

    glmlab serve --model tiny --adapter invoices=runs/invoices/adapter --port 8080
    glmlab serve --engine vllm --adapter invoices=exports/invoices-vllm --gpu-memory-gib 24 --dry-run
    glmlab serve --engine vllm --vllm-python ~/.venvs/vllm/bin/python --adapter invoices=exports/invoices-vllm
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

import typer

from glmlab.cli.common import clear_errors, quiet_transformers
from glmlab.cli.root import app
from glmlab.serve.settings import VLLM_ONLY, ServerSettings, parse_adapter_args

Engine = typing.Literal["glmlab", "vllm"]


def serve_command(ctx: typer.Context, engine: str, dry_run: bool, **values: Any) -> None:
    """Serve a GLM-V model (and LoRA adapters) over an OpenAI-compatible API."""
    with clear_errors():
        values["adapters"] = parse_adapter_args(values["adapters"] or [])
        for name in ("adapter_roots", "allowed_hosts"):  # repeatable options given no times
            values[name] = values[name] or []
        settings = ServerSettings(**values)
        if engine == "vllm":
            _run_vllm(settings, ctx.args, dry_run)
            return
        if ctx.args:
            raise typer.BadParameter(
                f"unknown options {ctx.args}; options after `--` are for --engine vllm only."
            )
        _warn_vllm_only(settings)
        if dry_run:
            typer.echo(
                f"glmlab would serve {settings.model!r} on {settings.scheme}://{settings.host}:{settings.port}/v1 with "
                f"adapters {list(settings.adapters) or 'none'}."
            )
            return
        from glmlab.serve import serve

        quiet_transformers()
        address = f"{settings.scheme}://{settings.host}:{settings.port}"
        typer.echo(
            f"loading {settings.model!r} in the background; GET {address}/health says when it is ready; "
            f"the chat page is {address}/",
            err=True,
        )
        serve(settings)


def _run_vllm(settings: ServerSettings, extra: list[str], dry_run: bool) -> None:
    import shutil

    from glmlab.serve.engines.vllm import INSTALL_HINT, run_vllm, vllm_command

    if dry_run:
        typer.echo(vllm_command(settings, extra).shell())
        if settings.vllm_python is None and shutil.which("vllm") is None:
            typer.echo(f"note: {INSTALL_HINT}", err=True)
        return
    raise typer.Exit(run_vllm(settings, extra, report=lambda line: typer.echo(line, err=True)))


def _warn_vllm_only(settings: ServerSettings) -> None:
    """glmlab's own server has no use for the vLLM-only settings: say so rather than ignore them quietly."""
    default = ServerSettings(model=settings.model)
    given = [
        item.metadata.get("flag", "--" + item.name.replace("_", "-"))
        for item in fields(ServerSettings)
        if item.name in VLLM_ONLY and getattr(settings, item.name) != getattr(default, item.name)
    ]
    if given:
        flags = ", ".join(given)
        typer.echo(f"note: {flags} only apply with --engine vllm; glmlab's server ignores them.", err=True)


def _settings_parameters() -> list[inspect.Parameter]:
    """One typer option per ServerSettings field: its flag, type, default and help from the dataclass."""
    hints = typing.get_type_hints(ServerSettings)
    parameters = []
    for item in fields(ServerSettings):
        meta = item.metadata
        kind = hints[item.name]
        cli_type: Any = list[str] if typing.get_origin(kind) in (dict, list) else kind
        if isinstance(kind, types.UnionType):  # `int | None` as typer knows it
            cli_type = typing.Optional[next(arg for arg in typing.get_args(kind) if arg is not type(None))]  # noqa: UP045
        default = None if item.default is MISSING else item.default
        flag = meta.get("flag", "--" + item.name.replace("_", "-"))
        option = typer.Option(
            default, flag, help=meta["help"], metavar=meta.get("metavar"), show_default=default is not None
        )
        parameters.append(
            inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=cli_type)
        )
    return parameters


def _register() -> None:
    fixed = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "engine",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Engine,
            default=typer.Option(
                "glmlab",
                "--engine",
                help="glmlab: this package's server (CPU or GPU); vllm: run `vllm serve` (GPU, throughput).",
            ),
        ),
        inspect.Parameter(
            "dry_run",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(
                False, "--dry-run", help="Print what would run (the vllm serve command) and exit."
            ),
        ),
    ]
    parameters = fixed + _settings_parameters()
    serve_command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    serve_command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        serve_command
    )


_register()
