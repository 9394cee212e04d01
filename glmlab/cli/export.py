"""`glmlab export ADAPTER`: take a LoRA adapter to where it is served (a thin front over glmlab.export).

glmlab export runs/invoices/adapter --format vllm --out exports/invoices-vllm
glmlab export runs/invoices/adapter --format merged --out exports/invoices-merged
glmlab export runs/invoices/adapter --format auto --out exports/invoices   # whichever vLLM can serve
glmlab export runs/invoices/adapter --format gguf --quant q4_k_m --out exports/invoices-gguf \
    --llama-cpp ~/llama.cpp                                                 # llama.cpp, Ollama, LM Studio
glmlab export exports/invoices-vllm --to http://localhost:8080/v1 --name invoices
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import typer

from glmlab.cli.common import clear_errors, quiet_transformers
from glmlab.cli.root import app


@app.command()
def export(
    adapter: Path = typer.Argument(
        ...,
        help="A PEFT LoRA adapter folder (safetensors); for --format gguf also a checkpoint folder or tiny.",
    ),
    export_format: Literal["vllm", "merged", "auto", "gguf"] = typer.Option(
        None,
        "--format",
        help="vllm: a checked adapter + the vllm serve line; merged: a full checkpoint; "
        "auto: vllm when vLLM can serve the adapter, merged otherwise (says why); "
        "gguf: merged, then GGUF files + mmproj + Ollama Modelfile by llama.cpp's converter.",
    ),
    out: Path = typer.Option(None, "--out", help="Folder to write (with --format)."),
    to: str = typer.Option(
        None, "--to", help="Register the adapter on a running server at this URL instead."
    ),
    name: str = typer.Option(None, help="The adapter's served name (default: the folder's name)."),
    model: str = typer.Option(
        None, help="The base model (default: the adapter's own, from glmlab.json or adapter_config.json)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="vllm: refuse vision modules vLLM has no LoRA layer for (attn.qkv) instead of dropping them.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier export in --out (never a folder of other files)."
    ),
    dtype: str = typer.Option("auto", help="merged: dtype of the saved weights (auto: the checkpoint's)."),
    api_key: str = typer.Option(
        None, "--api-key", envvar="GLMLAB_API_KEY", help="--to: the server's API key."
    ),
    quant: Literal["f16", "q8_0", "q4_k_m"] = typer.Option(
        "f16", "--quant", help="gguf: the text model's type (the projector is always f16)."
    ),
    llama_cpp: Path = typer.Option(
        None,
        "--llama-cpp",
        envvar="GLMLAB_LLAMA_CPP",
        help="gguf: a llama.cpp checkout (its convert_hf_to_gguf.py converts).",
    ),
    llama_python: str = typer.Option(
        None,
        "--llama-python",
        envvar="GLMLAB_LLAMA_PYTHON",
        help="gguf: the Python with llama.cpp's converter requirements (default: this one).",
    ),
    pre_tokenizer: str = typer.Option(
        None,
        "--pre-tokenizer",
        help="gguf: llama.cpp's name for the tokenizer's pre-tokenizer when its converter does not "
        "recognise it (e.g. gpt-2; the tiny model's is given automatically).",
    ),
    num_ctx: int = typer.Option(
        None, "--num-ctx", help="gguf: the context the Modelfile and llama-server ask for (default 8192)."
    ),
) -> None:
    """Export a LoRA adapter for vLLM, merge it into its base model, or register it on a running server."""
    from glmlab import export as exporting

    if (export_format is None) == (to is None):
        raise typer.BadParameter("give exactly one of --format (with --out) or --to.")
    if export_format is not None and out is None:
        raise typer.BadParameter("--format needs --out DIR.")
    quiet_transformers()
    with clear_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the drop warning is logged and printed below
        if to is not None:
            served = exporting.register(adapter, to, name=name, api_key=api_key)
            typer.echo(f"registered {served!r} on {to}; ask it with model={served!r}.")
        elif export_format == "vllm":
            result = exporting.export_vllm(
                adapter, out, model=model, name=name, strict=strict, overwrite=overwrite
            )
            if result.dropped_modules:
                typer.echo(
                    f"dropped {len(result.dropped_modules)} vision-tower modules vLLM ignores: "
                    f"{', '.join(result.dropped_modules)}",
                    err=True,
                )
            if result.tower_connector_lora:
                typer.echo(
                    "holds vision-block/merger modules: vLLM applies them with "
                    "--enable-tower-connector-lora (in the line below; experimental in vLLM)",
                    err=True,
                )
            typer.echo(
                f"wrote {result.path} (rank {result.rank}, {len(result.modules)} modules, base "
                f"{result.base_model}); serve it with:\n  {result.vllm_serve}"
            )
        elif export_format == "auto":
            result = exporting.export_for_serving(adapter, out, model=model, name=name, overwrite=overwrite)
            typer.echo(f"format {result.format}: {result.reason}")
            typer.echo(f"wrote {result.path}; serve it with:\n  {result.vllm_serve}")
        elif export_format == "gguf":
            exported = exporting.export_gguf(
                adapter,
                out,
                quant=quant,
                llama_cpp=llama_cpp,
                llama_python=llama_python,
                pre_tokenizer=pre_tokenizer,
                model=model,
                name=name,
                num_ctx=num_ctx,
                overwrite=overwrite,
            )
            files = ", ".join(f"{file} ({size / 2**20:.1f} MiB)" for file, size in exported.sizes.items())
            commands = "\n  ".join(exported.commands.values())
            typer.echo(
                f"wrote {exported.path}: {files} in {sum(exported.seconds.values()):.0f} s "
                f"(pre-tokenizer {exported.pre_tokenizer}, {exported.pre_tokenizer_source}); run it with:\n"
                f"  {commands}"
            )
        else:
            path = exporting.export_merged(adapter, out, model=model, dtype=dtype, overwrite=overwrite)
            typer.echo(
                f"wrote the merged checkpoint {path}; load it with glmlab.load({str(path)!r}) or serve "
                f"it with:\n  {exporting.merged_serve_line(path)}"
            )
