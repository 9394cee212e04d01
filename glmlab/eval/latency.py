"""Latency and cost of each answer, and their summaries, defined as `vllm bench serve` defines them.

Per sample (all times in seconds, measured by the harness around the call):

- `ttft_s`: time to first token, from the call's start (image loading and preprocessing included)
  to the first generated token. Local models report generate's first token, shifted by the
  preprocessing time; a server is streamed and its first text piece timed.
- `latency_s`: end-to-end time from the call's start to the complete answer.
- `tpot_s`: time per output token after the first, (latency_s - ttft_s) / (completion_tokens - 1);
  `decode_tokens_per_s` is its inverse. Undefined (NaN) for answers of fewer than two tokens.
- `completion_tokens`, `prompt_tokens`, `image_tokens` (part of the prompt) from the answer's usage.
- `peak_memory_bytes`: on CUDA, `torch.cuda.max_memory_allocated` since the run started (reset at
  the start); on CPU, the process's peak resident set size (it cannot be reset: the whole
  process's peak). NaN for a server, whose memory is not this process's.

Batched generation (`batch_size` > 1): every sample of a batch gets the batch's TTFT and latency,
because one `generate` call produces all of them and returns them together; per-sample TPOT then
spreads the batch's decode time over that sample's own tokens.

Summaries give mean, p50, p95 and p99 of each measure, and throughput over the time the run was
busy (the union of the samples' [start, end] intervals, so pauses between resumed sessions and
overlapping concurrent requests are counted once): samples/s and completion tokens/s.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "LATENCY_COLUMNS",
    "MemoryProbe",
    "batch_timing",
    "busy_seconds",
    "latency_summary",
    "sample_timing",
    "throughput",
]

LATENCY_COLUMNS = [
    "ttft_s",
    "latency_s",
    "tpot_s",
    "decode_tokens_per_s",
    "completion_tokens",
    "prompt_tokens",
    "image_tokens",
]
PERCENTILES = (50, 95, 99)


def sample_timing(answer: Any, start: float, end: float, first_piece: float | None = None) -> dict[str, Any]:
    """The latency columns of one answer produced by a call that ran from `start` to `end`.

    first_piece: when the first streamed text arrived (remote calls); else the answer's own TTFT,
    shifted by the time the call spent outside generate (preprocessing), is used.
    """
    latency = end - start
    timing, usage = answer.timing, answer.usage
    if first_piece is not None:
        ttft = first_piece - start
    elif timing.ttft_s is not None:
        outside_generate = max(0.0, latency - (timing.total_s or 0.0))
        ttft = min(latency, timing.ttft_s + outside_generate)
    else:
        ttft = math.nan
    tokens = usage.completion_tokens
    tpot = (latency - ttft) / (tokens - 1) if tokens > 1 and not math.isnan(ttft) else math.nan
    return {
        "ttft_s": ttft,
        "latency_s": latency,
        "tpot_s": tpot,
        "decode_tokens_per_s": 1.0 / tpot if tpot > 0 else math.nan,
        "completion_tokens": tokens,
        "prompt_tokens": usage.prompt_tokens,
        "image_tokens": usage.image_tokens,
    }


def batch_timing(answers: list[Any], start: float, end: float) -> list[dict[str, Any]]:
    """The latency columns of the answers of one batched call (see the module docstring): each gets
    the call's latency and the batch's TTFT, its earliest first token (the rows' first tokens come
    from the same decode step), shifted by the time the call spent outside generate (the longest
    row's generate time is generate's); an answer without tokens keeps a NaN TTFT."""
    firsts = [answer.timing.ttft_s for answer in answers if answer.timing.ttft_s is not None]
    if not firsts:
        return [sample_timing(answer, start, end) for answer in answers]
    outside_generate = max(0.0, (end - start) - max(answer.timing.total_s or 0.0 for answer in answers))
    first_token = start + outside_generate + min(firsts)
    return [
        sample_timing(answer, start, end, None if answer.timing.ttft_s is None else first_token)
        for answer in answers
    ]


def latency_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """mean, p50, p95, p99 (and the count of defined values) of each latency column."""
    rows = []
    for column in LATENCY_COLUMNS:
        if column not in samples:
            continue
        values = pd.to_numeric(samples[column], errors="coerce").dropna().to_numpy(dtype=float)
        row: dict[str, Any] = {"measure": column, "n": int(values.size)}
        row["mean"] = float(values.mean()) if values.size else math.nan
        for percentile in PERCENTILES:
            row[f"p{percentile}"] = float(np.percentile(values, percentile)) if values.size else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["measure", "mean", *(f"p{p}" for p in PERCENTILES), "n"])


def busy_seconds(starts: Any, ends: Any) -> float:
    """Length of the union of [start, end] intervals (a sweep over sorted starts, written by hand)."""
    intervals = sorted(zip(starts, ends, strict=True))
    total, current_start, current_end = 0.0, None, None
    for start, end in intervals:
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def throughput(samples: pd.DataFrame) -> dict[str, float]:
    """samples/s and completion tokens/s over the busy time of the run, with the busy time itself."""
    if samples.empty or "started_at" not in samples:
        return {"busy_s": 0.0, "samples_per_s": math.nan, "output_tokens_per_s": math.nan}
    busy = busy_seconds(samples["started_at"], samples["finished_at"])
    tokens = float(pd.to_numeric(samples["completion_tokens"], errors="coerce").fillna(0).sum())
    return {
        "busy_s": busy,
        "samples_per_s": len(samples) / busy if busy > 0 else math.nan,
        "output_tokens_per_s": tokens / busy if busy > 0 else math.nan,
    }


class MemoryProbe:
    """Peak memory of a run: CUDA's allocator peak (reset at the start), else the process's peak RSS.

    torch is only consulted when it is already imported (a local model is loaded), so evaluating
    against a server never imports it.
    """

    def __init__(self, local: bool) -> None:
        self.kind = self._kind(local)
        if self.kind == "cuda_max_allocated":
            sys.modules["torch"].cuda.reset_peak_memory_stats()

    @staticmethod
    def _kind(local: bool) -> str | None:
        if not local:
            return None
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            return "cuda_max_allocated"
        return "process_peak_rss"

    def peak_bytes(self) -> float:
        if self.kind == "cuda_max_allocated":
            return float(sys.modules["torch"].cuda.max_memory_allocated())
        if self.kind == "process_peak_rss":
            return float(_peak_rss_bytes())
        return math.nan


def _peak_rss_bytes() -> float:
    try:
        import resource
    except ImportError:  # Windows: psutil's peak working set, if psutil is installed
        try:
            import psutil
        except ImportError:
            return math.nan
        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
