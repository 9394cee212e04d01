"""`glmlab ask FILE... -q QUESTION`: one question about images or videos, from the shell."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from glmlab.cli.common import clear_errors, quiet_transformers
from glmlab.cli.root import app
from glmlab.loading import DEFAULT_MODEL


@app.command()
def ask(
    images: list[Path] = typer.Argument(
        None,
        help="Image, PDF, DICOM or video (MP4, MOV, WebM, MKV, AVI) files (none for a text-only question).",
    ),
    question: str = typer.Option(..., "--question", "-q", help="The question to ask."),
    model: str = typer.Option(DEFAULT_MODEL, help="Hub id, local checkpoint folder, or 'tiny'."),
    adapter: Path = typer.Option(None, help="A PEFT LoRA adapter folder to apply."),
    system: str = typer.Option(None, help="System prompt."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it is generated."),
    no_thinking: bool = typer.Option(False, "--no-thinking", help="Answer without thinking (/nothink)."),
    json_output: bool = typer.Option(False, "--json", help="Print the whole Answer (timing, usage) as JSON."),
    max_new_tokens: int = typer.Option(None, help="Cap on generated tokens."),
    temperature: float = typer.Option(None, help="Sampling temperature; 0 for greedy decoding."),
    seed: int = typer.Option(None, help="Seed for reproducible sampling."),
    max_thinking_tokens: int = typer.Option(
        None, help="Most tokens the model may think before its thinking is ended and it answers."
    ),
    max_image_pixels: int = typer.Option(
        None, help="Largest image area kept after resizing (latency lever)."
    ),
    fps: float = typer.Option(None, help="Video frames sampled per second of video (default 2)."),
    max_frames: int = typer.Option(
        None, help="Most video frames kept, spread over the clip when fps would give more (default 32)."
    ),
) -> None:
    """Ask one question about images or videos and print the answer."""
    import glmlab

    quiet_transformers()
    gen = {
        k: v
        for k, v in dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            max_thinking_tokens=max_thinking_tokens,
        ).items()
        if v is not None
    }
    with clear_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vlm = glmlab.load(model, adapter=adapter, max_image_pixels=max_image_pixels)
        vlm.video_options = {k: v for k, v in dict(fps=fps, max_frames=max_frames).items() if v is not None}
        options = dict(system=system, thinking=False if no_thinking else None, **gen)
        if stream:
            streamed = vlm.stream(images or [], question, **options)
            for piece in streamed:
                typer.echo(piece, nl=False)
            typer.echo()
            answer = streamed.answer
        else:
            answer = vlm.ask(images or [], question, **options)
    if json_output:
        typer.echo(answer.to_json(indent=2))
    elif not stream:
        typer.echo(answer.text)
