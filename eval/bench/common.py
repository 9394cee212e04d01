"""Shared pieces of the benchmarks: the bench checkpoint, alternating timing, and result files.

Each benchmark runs glmlab and its baseline in the same process, alternating, after a warm-up, and
prints a table and one `RATIO name=value` line per comparison. Results also go to
`eval/bench/results/<name>.json`. Benchmarks are scripts, not tests: they measure, they do not assert.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

RESULTS = Path(__file__).parent / "results"
# Larger than "tiny" so compute dominates on a CPU, as in a real model.
BENCH_TEXT = dict(
    hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2, intermediate_size=1536
)
BENCH_VISION = dict(depth=4, hidden_size=256, num_heads=4, intermediate_size=768)
BENCH_IMAGE_PIXELS = 448 * 448


def bench_checkpoint() -> Path:
    """The bench checkpoint (random weights), built once under GLMLAB_HOME/bench."""
    from glmlab import tiny
    from glmlab.loading import glmlab_home

    path = glmlab_home() / "bench" / "h512-l8-v4"
    if not (path / "model.safetensors").exists():
        print(f"building the bench checkpoint in {path} ...", flush=True)
        tiny.build(path, seed=0, text=BENCH_TEXT, vision=BENCH_VISION, max_image_pixels=BENCH_IMAGE_PIXELS)
    return path


def load_bench_vlm():
    from transformers.utils import logging as hf_logging

    import glmlab

    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return glmlab.load(bench_checkpoint(), device="cpu", dtype="float32")


def bench_image(seed: int = 0, size: int = 448) -> Image.Image:
    """A 448x448 picture with a few shapes; different seeds give different pictures."""
    image = Image.new("RGB", (size, size), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    for index in range(4):
        x, y = (seed * 97 + index * 131) % (size - 120), (seed * 53 + index * 71) % (size - 120)
        draw.ellipse((x, y, x + 100, y + 100), fill=((seed * 40 + index * 60) % 255, 80, 200 - index * 30))
    return image


def time_call(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def alternate(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each candidate in turn, `repeats` rounds after `warmup` rounds; seconds per call."""
    for _ in range(warmup):
        for function in candidates.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, function in candidates.items():
            times[name].append(time_call(function))
    return times


def summarise(times: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {
            "run": name,
            "median_s": statistics.median(values),
            "mean_s": statistics.fmean(values),
            "min_s": min(values),
            "max_s": max(values),
            "n": len(values),
        }
        for name, values in times.items()
    ]
    return pd.DataFrame(rows)


def machine() -> dict[str, str]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "gpu": gpu,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def report(name: str, table: pd.DataFrame, ratios: dict[str, float], extra: dict | None = None) -> None:
    """Print the table and RATIO lines; write eval/bench/results/<name>.json."""
    with pd.option_context("display.width", 160, "display.precision", 4):
        print(table.to_string(index=False))
    for key, value in ratios.items():
        print(f"RATIO {key}={value:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "ratios": ratios,
        "table": table.to_dict(orient="records"),
        **(extra or {}),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
