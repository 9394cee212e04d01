"""Figures of eval runs, and `report(runs, path)`: one self-contained HTML file about them.

Figures (`EvalRun.plot`, `plot_comparison`, the PNGs of a run folder) show headline metrics with 95 %
intervals and latency distributions. They are built with `matplotlib.figure.Figure`, not pyplot: no
global figure state, no backend choice, nothing shown twice in Jupyter (a returned Figure displays
itself), and a figure is freed when dropped.

The report holds, per run, the settings that shaped the numbers, the metric table with 95 %
intervals, the latency table and throughput; for several runs the paired comparison; the figures as
base64 PNG; and a sample of wrong answers with their image as a base64 thumbnail. Nothing is linked,
so the file can be mailed or attached to an issue. All text that came from a model or a dataset is
escaped (`html.escape`; tables through pandas' `to_html`, which escapes too): an answer holding
`<script>` is shown, never run.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmlab.eval.run import EvalRun
from glmlab.files import atomic_write

__all__ = ["comparison_figure", "figure_png", "report", "run_figure", "save_run_figures"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img.figure { max-width: 100%; }
td.text { max-width: 360px; white-space: pre-wrap; word-break: break-word; }
.note { color: #666; font-size: 0.9em; }
"""


def report(
    runs: EvalRun | Sequence[EvalRun],
    path: str | Path,
    *,
    names: Sequence[str] | None = None,
    max_wrong: int = 12,
    title: str | None = None,
) -> Path:
    """Write the HTML report of `runs` (one run, or several of one suite, baseline first) to `path`.

    max_wrong: wrong answers shown per run (those with a thumbnail first).
    """
    runs = [runs] if isinstance(runs, EvalRun) else list(runs)
    from glmlab.eval.comparison import run_labels

    names = run_labels(runs, names)
    title = title or f"glmlab eval: {runs[0].suite.name}"
    parts = [f"<h1>{_text(title)}</h1>"]
    if len(runs) > 1:
        parts.append(_comparison_section(runs, names))
    for run, name in zip(runs, names, strict=True):
        parts.append(_run_section(run, name, max_wrong))
    document = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{_text(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


def _comparison_section(runs: list[EvalRun], names: list[str]) -> str:
    from glmlab.eval.comparison import compare, plot_comparison

    table = compare(runs, names=names)
    return (
        "<h2>Comparison</h2><p class='note'>Paired on shared sample ids; p: two-sided paired bootstrap "
        f"p-value against {_text(names[0])}.</p>"
        + _table(table)
        + _figure(plot_comparison(runs, names=names))
    )


def _run_section(run: EvalRun, name: str, max_wrong: int) -> str:
    settings = {
        "suite": run.suite.name,
        "model": run.config.get("model", {}).get("name"),
        "adapter": run.config.get("model", {}).get("adapter"),
        **{k: v for k, v in run.config.get("settings", {}).items() if k != "generation"},
        "generation": run.config.get("settings", {}).get("generation"),
        "samples": len(run.samples),
        "failed": run.failed,
        "git commit": (run.config.get("git") or {}).get("commit"),
    }
    throughput = {key: round(value, 4) for key, value in run.throughput.items()}
    parts = [
        f"<h2>{_text(name)}</h2>",
        _table(pd.DataFrame([{"setting": k, "value": str(v)} for k, v in settings.items()])),
        "<h3>Metrics</h3>",
        _table(run.summary),
        "<h3>Latency</h3>",
        _table(run.latency),
        f"<p>Throughput: {_text(str(throughput))}</p>",
    ]
    if not run.samples.empty:
        parts.append(_figure(run.plot()))
    parts.append(_wrong_section(run, max_wrong))
    return "\n".join(parts)


def _wrong_section(run: EvalRun, max_wrong: int) -> str:
    wrong = run.wrong()
    metric = run.suite.metrics[0].name
    if wrong.empty:
        return f"<h3>Wrong answers</h3><p>None: every sample scored 1 on {_text(metric)}.</p>"
    with_image = wrong["thumbnail"].notna() if "thumbnail" in wrong else pd.Series(False, index=wrong.index)
    shown = pd.concat([wrong[with_image], wrong[~with_image]]).head(max_wrong)
    rows = []
    for sample in shown.to_dict("records"):
        picture = run.thumbnails.get(sample.get("thumbnail") or "")
        image = (
            f"<img alt='{_text(sample['id'])}' src='data:image/png;base64,{base64.b64encode(picture).decode()}'>"
            if picture
            else ""
        )
        rows.append(
            "<tr>"
            f"<td>{image}</td><td>{_text(sample['id'])}</td><td class='text'>{_text(sample['question'])}</td>"
            f"<td class='text'>{_text(' | '.join(map(str, sample['references'])))}</td>"
            f"<td class='text'>{_text(sample['raw'] if sample.get('error') is None else sample['error'])}</td>"
            f"<td>{sample[metric]:.3f}</td></tr>"
        )
    header = "<tr><th>image</th><th>id</th><th>question</th><th>reference</th><th>answer</th>"
    header += f"<th>{_text(metric)}</th></tr>"
    note = f"<p class='note'>{len(shown)} of {len(wrong)} samples scoring below 1 on {_text(metric)}.</p>"
    return "<h3>Wrong answers</h3>" + note + "<table>" + header + "".join(rows) + "</table>"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, na_rep="", float_format=lambda value: f"{value:.4g}")


def _figure(figure: Any) -> str:
    encoded = base64.b64encode(figure_png(figure)).decode()
    return f"<img class='figure' src='data:image/png;base64,{encoded}'>"


def _text(value: Any) -> str:
    return html.escape(str(value))


# ---- figures --------------------------------------------------------------------------------------

_LATENCY_MEASURES = (("ttft_s", "TTFT"), ("latency_s", "latency"))


def run_figure(run: Any):
    """One run: headline metrics (left) and TTFT / latency distributions (right)."""
    return comparison_figure([run], [run.name])


def comparison_figure(runs: Sequence[Any], names: Sequence[str]):
    """Runs side by side: grouped metric bars with 95 % intervals, and latency box plots."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    accuracy, latency = figure.subplots(1, 2, width_ratios=[3, 2])
    draw_accuracy(accuracy, runs, names)
    draw_latency(latency, runs, names)
    figure.suptitle(f"suite {runs[0].suite.name}: " + " vs ".join(names))
    return figure


def draw_accuracy(axes: Any, runs: Sequence[Any], names: Sequence[str]) -> None:
    """Grouped horizontal bars: one group per metric's headline statistic, one bar per run."""
    tables = [run.headline for run in runs]
    labels = [f"{row.metric} ({row.statistic})" for row in tables[0].itertuples()]
    height = 0.8 / len(runs)
    positions = np.arange(len(labels))
    for offset, (table, name) in enumerate(zip(tables, names, strict=True)):
        values = table["value"].to_numpy(dtype=float)
        low = values - table["ci_low"].to_numpy(dtype=float)
        high = table["ci_high"].to_numpy(dtype=float) - values
        errors = np.nan_to_num(np.vstack([low, high]))
        axes.barh(positions + offset * height, values, height, xerr=errors, capsize=3, label=name)
        for y, value in zip(positions + offset * height, values, strict=True):
            axes.annotate(f"{value:.3f}", (value, y), xytext=(4, 0), textcoords="offset points", va="center")
    axes.set_yticks(positions + height * (len(runs) - 1) / 2, labels)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.15)
    axes.set_xlabel("score (bars: 95 % bootstrap interval)")
    axes.set_title("accuracy")
    if len(runs) > 1:
        axes.legend(loc="lower right")


def draw_latency(axes: Any, runs: Sequence[Any], names: Sequence[str]) -> None:
    """Box plots of TTFT and end-to-end latency per run, in seconds."""
    data, labels = [], []
    for run, name in zip(runs, names, strict=True):
        for column, label in _LATENCY_MEASURES:
            values = run.samples[column].dropna().to_numpy(dtype=float) if column in run.samples else []
            data.append(values if len(values) else np.array([np.nan]))
            labels.append(label if len(runs) == 1 else f"{name}\n{label}")
    axes.boxplot(data, tick_labels=labels, showfliers=True)
    axes.set_ylabel("seconds")
    axes.set_title("latency per sample")
    axes.tick_params(axis="x", labelsize=8)


def save_run_figures(run: Any, run_dir: Path, files: dict[str, str]) -> None:
    """accuracy.png and latency.png of one run, each a figure of its own."""
    from matplotlib.figure import Figure

    for kind, file_name in files.items():
        figure = Figure(figsize=(6, 4), layout="constrained")
        axes = figure.subplots()
        (draw_accuracy if kind == "accuracy" else draw_latency)(axes, [run], [run.name])
        atomic_write(run_dir / file_name, figure_png(figure))


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (for embedding in HTML)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
