"""The main job, `glmlab demo`: glmlab end to end on one model, as a list of stages.

Each stage takes the shared `DemoContext`, does one thing a researcher would do, and prints what to
look at. `STAGES` (at the end) lists them in order.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image, ImageDraw

from glmlab.loading import load

if TYPE_CHECKING:  # annotations only: no import of the model at run time
    from glmlab.model import VLM


@dataclass
class DemoContext:
    """What the stages share: the model, a work folder, and results for later stages."""

    model: str
    work_dir: Path
    echo: Callable[[str], None] = print
    vlm: VLM | None = None
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    name: str
    description: str
    run: Callable[[DemoContext], None]


def demo_image() -> Image.Image:
    """A small generated scene: a red circle and a blue square on white."""
    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 30, 100, 110), fill=(220, 30, 30))
    draw.rectangle((120, 110, 200, 190), fill=(30, 60, 220))
    return image


def stage_load(ctx: DemoContext) -> None:
    ctx.vlm = load(ctx.model)
    ctx.echo(f"loaded {ctx.vlm}")


def stage_ask(ctx: DemoContext) -> None:
    image = demo_image()
    questions = [
        "What shapes are in the image?",
        "What colour is the circle?",
        "Describe the picture briefly.",
    ]
    rows = []
    for question in questions:
        answer = ctx.vlm.ask(image, question, thinking=False, max_new_tokens=24, temperature=0)
        rows.append(
            {
                "question": question,
                "answer": answer.text,
                "ttft_s": answer.timing.ttft_s,
                "total_s": answer.timing.total_s,
                "tokens/s": answer.timing.decode_tokens_per_s,
                "prompt_tokens": answer.usage.prompt_tokens,
                "image_tokens": answer.usage.image_tokens,
            }
        )
    table = pd.DataFrame(rows)
    ctx.results["answers"] = table
    with pd.option_context("display.max_colwidth", 40, "display.width", 160, "display.precision", 3):
        ctx.echo(table.to_string(index=False))


def stage_stream(ctx: DemoContext) -> None:
    stream = ctx.vlm.stream(demo_image(), "Describe the picture.", max_new_tokens=32, temperature=0)
    pieces = [piece for piece in stream]
    ctx.echo("streamed: " + "".join(pieces))
    answer = stream.answer
    ctx.echo(
        f"(thinking: {answer.thinking!r:.60}; finish: {answer.finish_reason}; "
        f"ttft {answer.timing.ttft_s:.3f} s; {answer.usage.completion_tokens} tokens)"
    )


EVAL_LIMIT = 40  # shapes samples per evaluated model: about a minute on CPU with the tiny model


def stage_eval(ctx: DemoContext) -> None:
    """Evaluate the shapes suite on the base model and, when the train stage left one, its adapter."""
    from glmlab.eval import compare, evaluate, report
    from glmlab.eval.suite import shipped_suite

    suite = shipped_suite("shapes")
    folder = ctx.work_dir / "eval" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    options = {"limit": EVAL_LIMIT, "batch_size": 8, "progress": False}
    runs = [evaluate(suite, ctx.vlm, adapter=None, run_dir=folder / "base", name="base", **options)]
    name = trained_adapter_name(ctx)
    if name is None:
        ctx.echo(
            "no trained adapter in this demo run (the train stage did not run): evaluating the base only"
        )
    else:
        runs.append(
            evaluate(suite, ctx.vlm, adapter=name, run_dir=folder / "adapter", name="adapter", **options)
        )
    for run in runs:
        scores = [
            f"{r.metric} {r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in run.headline.itertuples()
        ]
        latency = run.latency.set_index("measure").loc["latency_s", "p50"]
        ctx.echo(f"{run.name}: {', '.join(scores)} (95 % interval); median latency {latency:.3f} s")
    if len(runs) == 2:
        with pd.option_context("display.width", 160, "display.precision", 3):
            ctx.echo(compare(runs).to_string(index=False))
            ctx.echo(
                "the suite mixes colour, shape and count questions; the adapter was trained on colour "
                "only (the train stage's held-out accuracy), so it gains on colour alone:"
            )
            ctx.echo(by_question_type(runs).to_string(index=False))
    ctx.results["eval"] = runs
    ctx.echo(f"report: {report(runs, folder / 'report.html')}")


def by_question_type(runs: list) -> pd.DataFrame:
    """Exact match per question type (colour, shape, count), one column per run."""
    columns = {run.name: run.breakdown("question_type").set_index("question_type")["value"] for run in runs}
    counts = runs[0].samples["question_type"].astype(str).value_counts()
    return pd.DataFrame(columns).assign(n=counts).rename_axis("question_type").reset_index()


def trained_adapter_name(ctx: DemoContext) -> str | None:
    """The name under which ctx.vlm holds the train stage's adapter (loaded on first use), or None."""
    adapter = trained_adapter(ctx)
    if adapter is None:
        return None
    name = next((n for n, p in ctx.vlm.adapters.items() if Path(p).resolve() == adapter.resolve()), None)
    return name or ctx.vlm.load_adapter(adapter, name="demo-shapes", activate=False)


def trained_adapter(ctx: DemoContext) -> Path | None:
    """The adapter folder the train stage wrote, if it ran."""
    result = ctx.results.get("train")
    return None if result is None else Path(result.adapter_dir)


# lora/shapes.yaml as shipped, fewer held-out images: ~1 minute on CPU (keys: dotted recipe paths)
TRAIN_OVERRIDES = {"evaluation.samples": 24}


def stage_train(ctx: DemoContext) -> None:
    """LoRA on generated shapes (lora/shapes.yaml): the loss falls and held-out colour accuracy rises."""
    from glmlab.lora import train

    # The recipe trains lm_head in full for the tiny model only; a real model learns colours without it.
    real = {
        "adapter.modules_to_save": [],
        "optimizer.learning_rate": 1e-4,
        "optimizer.loraplus_lr_ratio": None,
    }
    result = train(
        "shapes",
        ctx.work_dir / "lora-shapes",
        base_model=ctx.model,
        **TRAIN_OVERRIDES,
        **({} if ctx.model == "tiny" else real),
    )
    ctx.results["train"] = result
    history = result.history.set_index("step")
    table = history[[column for column in ("loss", "eval_exact_match") if column in history]]
    evaluated = table["eval_exact_match"].notna() if "eval_exact_match" in table else False
    shown = (table.index % 30 == 0) | evaluated
    with pd.option_context("display.precision", 3):
        ctx.echo(table[shown].to_string())
    before, after = result.metrics.get("initial_eval_exact_match"), result.metrics.get("eval_exact_match")
    figure = result.plot()
    figure.savefig(ctx.work_dir / "lora-shapes" / "loss.png")
    ctx.echo(
        f"held-out colour accuracy {before:.2f} -> {after:.2f} after {result.global_step} steps "
        f"({result.train_runtime_s:.0f} s); adapter and loss.png in {result.adapter_dir}"
    )


def run(
    model: str = "tiny",
    *,
    stages: list[str] | None = None,
    work_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> DemoContext:
    """Run the demo's stages in order (all by default) and return their shared context."""
    selected = [stage for stage in STAGES if stages is None or stage.name in stages]
    ctx = DemoContext(
        model=model, work_dir=Path(work_dir or tempfile.mkdtemp(prefix="glmlab-demo-")), echo=echo
    )
    for number, stage in enumerate(selected, 1):
        echo(f"\n== [{number}/{len(selected)}] {stage.name}: {stage.description}")
        stage.run(ctx)
    return ctx


# ---- export, serve, client (glmlab.export, glmlab.serve, glmlab.client) ---------------------------


def stage_export(ctx: DemoContext) -> None:
    """Export the trained adapter in the form vLLM can serve: the adapter, or the merged checkpoint."""
    from glmlab.export import export_for_serving
    from glmlab.loading import load as load_model

    adapter = trained_adapter(ctx)
    if adapter is None:
        ctx.echo(
            "no trained adapter in this demo run (the train stage did not run): nothing to export; "
            "the server will serve the base model only"
        )
        return
    exported = export_for_serving(adapter, ctx.work_dir / "export" / "demo", model=ctx.model, overwrite=True)
    ctx.results["export"] = exported
    if exported.format == "vllm":
        details = exported.vllm
        vision = len([module for module in details.modules if module.startswith("model.visual.")])
        served = f", {vision} vision-block/merger modules" if vision else ""
        ctx.echo(
            f"{exported.path}: a vLLM adapter, rank {details.rank}, {len(details.modules) - vision} "
            f"language-model modules{served}, {len(details.dropped_modules)} vision modules dropped"
        )
    else:
        ctx.echo(f"vLLM cannot serve this adapter as it is ({exported.reason})")
        image, question = demo_image(), "What colour is the circle?"
        greedy = {"thinking": False, "max_new_tokens": 8, "temperature": 0}
        merged = load_model(str(exported.path)).ask(image, question, **greedy).text
        adapted = ctx.vlm.ask(image, question, adapter=trained_adapter_name(ctx), **greedy).text
        ctx.echo(
            f"{exported.path}: the merged checkpoint instead; it answers {merged!r}, base + adapter "
            f"{adapted!r} ({'the same' if merged == adapted else 'NOT the same'})"
        )
    ctx.echo(f"serve it with vLLM on a GPU:\n  {exported.vllm_serve}")


def stage_serve(ctx: DemoContext) -> None:
    """Serve the loaded model (and the exported adapter) on a free loopback port, in the background."""
    from glmlab.serve import ServerSettings, start

    exported = ctx.results.get("export")
    adapters = {}
    if exported is not None:  # glmlab's server loads the adapter as trained (the export is vLLM's form)
        adapters["demo"] = str(trained_adapter(ctx))
    server = start(ctx.vlm, ServerSettings(model=ctx.model, adapters=adapters, port=0))
    ctx.results["server"] = server
    models = [ctx.model, *ctx.vlm.adapters]  # the server serves every adapter the model holds
    ctx.echo(f"glmlab serve is answering at {server.url} (models: {', '.join(models)})")


def stage_client(ctx: DemoContext) -> None:
    """Ask the server through the official openai client, then through glmlab.Client (same Answer as local)."""
    from openai import OpenAI

    from glmlab.client import Client
    from glmlab.images import image_to_data_url

    server = ctx.results.get("server")
    if server is None:
        ctx.echo("no server in this demo run (the serve stage did not run): nothing to ask")
        return
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_to_data_url(demo_image())}},
                {"type": "text", "text": "What colour is the circle?"},
            ],
        }
    ]
    openai_client = OpenAI(base_url=server.url, api_key="none")
    try:
        for model in [entry.id for entry in openai_client.models.list().data]:
            response = openai_client.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=16,
                temperature=0,
                extra_body={"chat_template_kwargs": {"enable_thinking": False}},
            )
            ctx.echo(
                f"openai client, model {model!r}: {response.choices[0].message.content!r} "
                f"({response.usage.completion_tokens} tokens)"
            )
        answer = Client(server.url).ask(
            demo_image(), "Describe the picture.", thinking=False, max_new_tokens=16, temperature=0
        )
        ctx.echo(
            f"glmlab.Client: {answer.text!r} (ttft {answer.timing.ttft_s:.3f} s, measured at the client)"
        )
    finally:
        server.stop()
        if "demo" in ctx.vlm.adapters:
            ctx.vlm.unload_adapter("demo")


STAGES: list[Stage] = [
    Stage("load", "load the model (tiny: built offline, random weights)", stage_load),
    Stage("ask", "ask questions about a generated image; a table of answers and timings", stage_ask),
    Stage("stream", "stream one answer as it is generated", stage_stream),
    Stage("train", "LoRA-train lora/shapes.yaml: the loss falls, held-out accuracy rises", stage_train),
    Stage("eval", "score the shapes suite before/after LoRA training, side by side", stage_eval),
    Stage("export", "export the trained adapter in the form vLLM serves (checks, serve line)", stage_export),
    Stage("serve", "serve the model and adapter with glmlab's OpenAI-compatible server", stage_serve),
    Stage("client", "ask the server through the official openai client and glmlab.Client", stage_client),
]
