"""Scoring a run's answers: extraction, the suite's metrics per sample, and the summary with error bars.

Everything here is a pure function of the suite and the stored rows (raw answer, references,
per-sample options), so a saved run is rescored, resumed or compared without a model, and an
interrupted-then-resumed run gets exactly the summary of an uninterrupted one (the bootstrap is
seeded). Plain metrics are summarised by their mean with `bootstrap_ci`; structured metrics
(`field_f1`, `medical_vqa`, any with a registered aggregator) by every number their aggregator
returns, each with a percentile interval from resampling samples and re-aggregating (written here:
`glmlab.eval.stats` bootstraps means only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from glmlab.eval.extract import get_extractor
from glmlab.eval.metrics import AGGREGATORS, aggregate_metric, get_metric, sample_score
from glmlab.eval.stats import bootstrap_ci
from glmlab.eval.suite import Suite

__all__ = [
    "SUMMARY_COLUMNS",
    "bootstrap_statistics",
    "metric_results",
    "primary_statistic",
    "score_answer",
    "summarize",
]

SUMMARY_COLUMNS = ["metric", "statistic", "value", "ci_low", "ci_high", "n"]
CONFIDENCE = 0.95


def metric_results(suite: Suite, raw: str, references: list[Any], options: dict[str, dict]) -> dict[str, Any]:
    """Each metric's result for one answer: extracted (the metric's or the suite's extractor), then scored.

    `options` holds the per-sample options by metric name; the suite's fixed options are added here.
    """
    results = {}
    for metric in suite.metrics:
        extracted = get_extractor(metric.extract or suite.extract)(raw)
        keywords = {**metric.options, **options.get(metric.name, {})}
        results[metric.name] = get_metric(metric.name)(extracted, references, **keywords)
    return results


def score_answer(
    suite: Suite, raw: str, references: list[Any], options: dict[str, dict]
) -> tuple[Any, dict[str, float]]:
    """(the suite extractor's output, {metric: per-sample score}) for one raw answer."""
    extracted = get_extractor(suite.extract)(raw)
    results = metric_results(suite, raw, references, options)
    return extracted, {name: sample_score(result) for name, result in results.items()}


def summarize(suite: Suite, samples: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The metric table of a run: one row per (metric, statistic), its value and 95 % interval.

    Rows are rescored from `raw`, `references` and `options`, never read from stored scores, so a
    summary always follows the suite's current extractors and metrics.
    """
    rows: list[dict[str, Any]] = []
    if samples.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    by_metric = rescore(suite, samples)
    for metric in suite.metrics:
        results = by_metric[metric.name]
        if metric.name in AGGREGATORS:
            rows += _structured_rows(metric.name, results, n_resamples, seed)
        else:
            scores = [sample_score(result) for result in results]
            low, high = bootstrap_ci(scores, n_resamples=n_resamples, confidence=CONFIDENCE, seed=seed)
            rows.append(_row(metric.name, "mean", float(np.mean(scores)), low, high, len(scores)))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


HEADLINE_STATISTICS = ("mean", "f1", "closed_accuracy", "open_recall")


def headline_statistic(names: Sequence[str]) -> str:
    """The statistic that stands for a metric: "mean", else "f1", ..., else the first one."""
    return next((name for name in HEADLINE_STATISTICS if name in names), names[0])


def primary_statistic(summary: pd.DataFrame) -> pd.Series:
    """The headline row of each metric (`headline_statistic`)."""
    picked = []
    for _, group in summary.groupby("metric", sort=False):
        head = headline_statistic(list(group["statistic"]))
        picked.append(group[group["statistic"] == head].iloc[0])
    return pd.DataFrame(picked).reset_index(drop=True)


def bootstrap_statistics(
    results: Sequence[Any],
    aggregate: Callable[[list[Any]], dict[str, float]],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Each aggregated number over `n_resamples` with-replacement resamples of `results`.

    A number missing from a resample (a bucket or field that no drawn sample had) is NaN there.
    """
    rng = np.random.default_rng(seed)
    draws: list[dict[str, float]] = []
    for _ in range(n_resamples):
        indices = rng.integers(0, len(results), size=len(results))
        draws.append(aggregate([results[i] for i in indices]))
    keys = list(dict.fromkeys(key for draw in draws for key in draw))
    return {key: np.array([draw.get(key, np.nan) for draw in draws], dtype=float) for key in keys}


def rescore(suite: Suite, samples: pd.DataFrame) -> dict[str, list[Any]]:
    """Each metric's results for every row of `samples`, in row order (from raw answers, never stored scores)."""
    by_metric: dict[str, list[Any]] = {metric.name: [] for metric in suite.metrics}
    for raw, references, options in zip(
        samples["raw"], samples["references"], samples["options"], strict=True
    ):
        for name, result in metric_results(suite, raw or "", list(references), options or {}).items():
            by_metric[name].append(result)
    return by_metric


def _structured_rows(name: str, results: list[Any], n_resamples: int, seed: int) -> list[dict[str, Any]]:
    values = aggregate_metric(name, results)
    draws = bootstrap_statistics(results, AGGREGATORS[name], n_resamples=n_resamples, seed=seed)
    rows = []
    tail = (1.0 - CONFIDENCE) / 2.0
    for statistic, value in values.items():
        if isinstance(value, int) or statistic not in draws:  # counts carry no interval
            rows.append(_row(name, statistic, float(value), np.nan, np.nan, len(results)))
            continue
        drawn = draws[statistic][~np.isnan(draws[statistic])]
        low, high = np.quantile(drawn, [tail, 1.0 - tail]) if drawn.size else (np.nan, np.nan)
        rows.append(_row(name, statistic, float(value), float(low), float(high), len(results)))
    return rows


def _row(metric: str, statistic: str, value: float, low: float, high: float, n: int) -> dict[str, Any]:
    return {"metric": metric, "statistic": statistic, "value": value, "ci_low": low, "ci_high": high, "n": n}
