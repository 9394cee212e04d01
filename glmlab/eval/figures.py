"""Figures of eval runs: headline metrics with 95 % intervals and latency distributions.

`EvalRun.plot`, `plot_comparison`, the PNGs of a run folder and the HTML report all draw with these.
They are built with `matplotlib.figure.Figure`, not pyplot: no global figure state, no backend choice,
nothing shown twice in Jupyter (a returned Figure displays itself), and a figure is freed when
dropped. Runs are taken by what they offer (`headline`, `samples`, `suite`, `name`), so this module
imports no run code and every part of eval may draw.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glmlab.files import atomic_write

__all__ = [
    "comparison_figure",
    "draw_accuracy",
    "draw_latency",
    "figure_png",
    "run_figure",
    "save_run_figures",
]

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
