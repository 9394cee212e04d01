"""`EvalRun`: the result of an evaluation, and the run folder that holds it.

A run folder is written while the run goes and read back whole by `EvalRun.load`:

    samples.jsonl   one JSON row per finished sample, appended and fsynced as each finishes, so an
                    interrupted run resumes where it stopped (rows already there are never redone; a
                    last row cut off by a crash, even inside a character, is dropped and redone)
    config.json     suite, model, adapter, generation and run settings, library versions, git commit
    summary.json    metric table with 95 % intervals, latency summary, throughput (written at the end)
    accuracy.png, latency.png   the figures of `EvalRun.plot`
    thumbnails/     small PNGs of wrongly answered samples' first image, for `glmlab.eval.report`

Every other file is replaced whole (`glmlab.files.atomic_write`), so a crash never leaves a half
file that the next resume cannot read. The summary is always recomputed from the rows (seeded bootstrap), so `load(save(run))` gives the
same samples and the same summary, and a resumed run the summary of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from glmlab.errors import ConfigError, InputError
from glmlab.eval.latency import latency_summary, throughput
from glmlab.eval.scoring import primary_statistic, summarize
from glmlab.eval.suite import Suite
from glmlab.files import atomic_write, fsync_dir

logger = logging.getLogger(__name__)

__all__ = ["EvalRun", "SampleLog", "read_samples"]

SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
THUMBNAIL_DIR = "thumbnails"
FIGURES = {"accuracy": "accuracy.png", "latency": "latency.png"}


@dataclass
class EvalRun:
    """One evaluation: a row per sample (`samples`), its `summary` and how it was produced (`config`).

    samples: DataFrame, one row per sample, in dataset order: id, index, question, references,
        raw answer, prediction (the final text), extracted (what the metrics scored), one column per
        metric with the sample's score, kept metadata fields, error, and the latency columns of
        `glmlab.eval.latency`.
    config: what config.json holds (suite, model, settings, versions).
    thumbnails: PNG bytes of wrong samples' first image by file name (the `thumbnail` column).
    """

    samples: pd.DataFrame
    config: dict[str, Any]
    run_dir: Path | None = None
    thumbnails: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        return f"EvalRun({self.name!r}, suite={self.suite.name!r}, samples={len(self.samples)}{where})"

    @property
    def name(self) -> str:
        """How tables and plots label this run (model, plus adapter if any)."""
        return self.config.get("name", "run")

    @cached_property
    def suite(self) -> Suite:
        return Suite.from_dict(self.config["suite"], source=f"{self.run_dir or 'run'}: config.json suite")

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Metric table: metric, statistic, value, ci_low, ci_high (95 % bootstrap), n."""
        return summarize(self.suite, self.samples)

    @property
    def headline(self) -> pd.DataFrame:
        """One row per metric: its main statistic (mean, or F1 for field_f1, ...)."""
        return primary_statistic(self.summary)

    @property
    def latency(self) -> pd.DataFrame:
        """mean / p50 / p95 / p99 of TTFT, latency, TPOT, decode tokens/s and token counts."""
        return latency_summary(self.samples)

    @property
    def throughput(self) -> dict[str, float]:
        return throughput(self.samples)

    @property
    def failed(self) -> int:
        """Samples whose call failed (an `error` is recorded and they score 0)."""
        return int(self.samples["error"].notna().sum()) if "error" in self.samples else 0

    def breakdown(self, field_name: str) -> pd.DataFrame:
        """The metric table per value of a kept field (e.g. "question_type"), with intervals per group."""
        if field_name not in self.samples:
            kept = self.suite.keep_fields
            raise InputError(f"field {field_name!r}: not a column of this run; kept fields: {kept}.")
        tables = []
        for value, group in self.samples.groupby(self.samples[field_name].astype(str), sort=True):
            table = summarize(self.suite, group.reset_index(drop=True))
            table.insert(0, field_name, value)
            tables.append(table)
        return pd.concat(tables, ignore_index=True)

    def wrong(self, metric: str | None = None) -> pd.DataFrame:
        """Rows whose score on `metric` (default: the suite's first metric) is below 1."""
        metric = metric or self.suite.metrics[0].name
        if metric not in self.samples:
            raise InputError(
                f"metric {metric!r}: not in this run; it scored {[m.name for m in self.suite.metrics]}."
            )
        return self.samples[self.samples[metric] < 1.0]

    def plot(self):
        """A matplotlib Figure: headline metrics with 95 % intervals, and latency distributions."""
        from glmlab.eval.figures import run_figure

        return run_figure(self)

    def summary_dict(self) -> dict[str, Any]:
        """What summary.json holds."""
        return {
            "name": self.name,
            "suite": self.suite.name,
            "samples": len(self.samples),
            "failed": self.failed,
            "metrics": _records(self.summary),
            "latency": _records(self.latency),
            "throughput": self.throughput,
            "settings": self.config.get("settings", {}),
        }

    # ---- files ----------------------------------------------------------------------------------

    def save(self, run_dir: str | Path | None = None, *, figures: bool = True) -> Path:
        """Write the whole run folder (samples, config, summary, figures, thumbnails); returns it."""
        target = Path(run_dir) if run_dir is not None else self.run_dir
        if target is None:
            raise ConfigError("run_dir: this run has no folder yet; pass save(run_dir=...).")
        target.mkdir(parents=True, exist_ok=True)
        if target != self.run_dir or not (target / SAMPLES_FILE).exists():
            lines = (sample_line(json_row(row)) for row in self.samples.to_dict("records"))
            atomic_write(target / SAMPLES_FILE, "".join(lines))
        write_json(target / CONFIG_FILE, self.config)
        self.write_summary(target, figures=figures)
        for name, data in self.thumbnails.items():
            (target / THUMBNAIL_DIR).mkdir(exist_ok=True)
            atomic_write(target / THUMBNAIL_DIR / name, data)
        self.run_dir = target
        return target

    def write_summary(self, run_dir: Path, *, figures: bool = True) -> None:
        write_json(run_dir / SUMMARY_FILE, self.summary_dict())
        if figures and not self.samples.empty:
            from glmlab.eval.figures import save_run_figures

            save_run_figures(self, run_dir, FIGURES)

    @classmethod
    def load(cls, run_dir: str | Path) -> EvalRun:
        """Read a run folder written by `evaluate` or `save`."""
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_FILE).is_file():
            raise InputError(f"{run_dir}: not an eval run folder (no {CONFIG_FILE}).")
        config = read_config(run_dir / CONFIG_FILE)
        rows = read_samples(run_dir / SAMPLES_FILE)
        thumbnails = {}
        if (run_dir / THUMBNAIL_DIR).is_dir():
            thumbnails = {
                path.name: path.read_bytes()
                for path in sorted((run_dir / THUMBNAIL_DIR).iterdir())
                if not path.name.startswith(".")  # a write cut short leaves a hidden temporary file
            }
        return cls(samples_frame(rows), config, run_dir, thumbnails)

    def _repr_html_(self) -> str:
        title = f"<b>{self.name}</b> on suite <b>{self.suite.name}</b>: {len(self.samples)} samples"
        return f"<p>{title}</p>" + self.summary.to_html(index=False, float_format=lambda x: f"{x:.4g}")


# ---- rows ---------------------------------------------------------------------------------------


def samples_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The samples DataFrame of a list of JSON rows, in dataset order."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("index", kind="stable").reset_index(drop=True)


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON stores it (NaN -> null), so in-memory and reloaded runs are identical."""
    return json.loads(json.dumps(_plain(row), ensure_ascii=False, allow_nan=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalars and arrays
        return _plain(value.tolist())
    return value


def read_config(path: Path) -> dict[str, Any]:
    """A run folder's config.json (an InputError naming the file when it is not JSON)."""
    try:
        return json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise InputError(f"{path}: not valid JSON ({error}); the file was edited or corrupted.") from None


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Rows of a samples.jsonl; a last line cut off by a crash is dropped (it is redone on resume).

    Every row ends with a newline, written in the same call as the row, so a last line without one
    is a write cut short: it is dropped undecoded (the cut may fall inside a multi-byte character).
    """
    if not path.is_file():
        return []
    rows, seen = [], set()
    *lines, tail = path.read_bytes().split(b"\n")
    if tail:
        logger.warning("%s: dropping an incomplete last line (the run was interrupted)", path)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError: a complete line that is not JSON
            raise InputError(
                f"{path} line {number}: not valid JSON; the file was edited or corrupted."
            ) from None
        if row["id"] in seen:
            raise InputError(f"{path}: sample id {row['id']!r} appears twice; the file was edited by hand.")
        seen.add(row["id"])
        rows.append(row)
    return rows


def sample_line(stored: dict[str, Any]) -> str:
    """One samples.jsonl line: the row as JSON and its newline (the mark of a complete row)."""
    return json.dumps(stored, ensure_ascii=False) + "\n"


class SampleLog:
    """samples.jsonl opened for appending: each row is flushed and fsynced before the next sample runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.is_file()
        _drop_incomplete_last_line(path)
        self._file = path.open("ab")
        if not existed:
            fsync_dir(path.parent)

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        stored = json_row(row)
        self._file.write(sample_line(stored).encode("utf-8"))  # one write: the row, then its newline
        self._file.flush()
        os.fsync(self._file.fileno())
        return stored

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SampleLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _drop_incomplete_last_line(path: Path, block: int = 1 << 16) -> None:
    """Truncate a partial last line (no trailing newline) so the next row starts on its own line.

    Only the tail is read, backwards from the end, and the file is cut in place, never rewritten.
    """
    if not path.is_file():
        return
    with path.open("r+b") as file:
        size = end = file.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - block)
            file.seek(start)
            newline = file.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end == size:
            return
        file.truncate(end)
        file.flush()
        os.fsync(file.fileno())


def write_json(path: Path, data: Any) -> None:
    """A JSON state file of the run folder, replaced whole (see `glmlab.files.atomic_write`)."""
    atomic_write(path, json.dumps(_plain(data), ensure_ascii=False, indent=2, allow_nan=False) + "\n")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return _plain(frame.to_dict("records"))
