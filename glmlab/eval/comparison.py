"""`compare(runs)`: runs of one suite side by side, with deltas and paired bootstrap p-values.

The natural use is base model vs adapter on the same samples. Runs are paired on sample ids: only
ids every run answered count, so a run that stopped early is compared on what it finished. For
plain metrics the p-value is `paired_bootstrap_pvalue` on per-sample scores; for structured metrics
(micro-F1, per-bucket accuracy) the same test is done on the aggregated statistic, resampling the
paired samples together (written here: `glmlab.eval.stats` tests means only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from glmlab.errors import InputError
from glmlab.eval.metrics import AGGREGATORS, aggregate_metric, sample_score
from glmlab.eval.run import EvalRun
from glmlab.eval.scoring import bootstrap_statistics, rescore
from glmlab.eval.stats import paired_bootstrap_pvalue, shifted_pvalue

logger = logging.getLogger(__name__)

__all__ = ["compare", "paired_runs", "plot_comparison", "run_labels"]


def compare(
    runs: Sequence[EvalRun], *, names: Sequence[str] | None = None, n_resamples: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Metrics of `runs` side by side; the first run is the baseline.

    Columns: metric, statistic, n (paired samples), one value column per run, then for each other run
    `delta <name>` (its value minus the baseline's) and `p <name>` (two-sided paired bootstrap
    p-value; NaN for counts). Rows follow the baseline suite's metrics and their statistics.
    """
    paired, labels = paired_runs(runs, names)
    baseline = paired[0]
    scored = [rescore(run.suite, run.samples) for run in paired]
    rows = []
    for metric in baseline.suite.metrics:
        per_run = [results[metric.name] for results in scored]
        values = [_statistics(metric.name, results) for results in per_run]
        pvalues = [_pvalues(metric.name, per_run[0], results, n_resamples, seed) for results in per_run[1:]]
        for statistic, base_value in values[0].items():
            row: dict[str, Any] = {"metric": metric.name, "statistic": statistic, "n": len(baseline.samples)}
            row.update(
                {label: value.get(statistic, np.nan) for label, value in zip(labels, values, strict=True)}
            )
            for label, value, pvalue in zip(labels[1:], values[1:], pvalues, strict=True):
                row[f"delta {label}"] = value.get(statistic, np.nan) - base_value
                row[f"p {label}"] = pvalue.get(statistic, np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(runs: Sequence[EvalRun], *, names: Sequence[str] | None = None):
    """A Figure: headline metrics of the paired runs with 95 % intervals, and their latency."""
    from glmlab.eval.figures import comparison_figure

    paired, labels = paired_runs(runs, names)
    return comparison_figure(paired, labels)


def paired_runs(
    runs: Sequence[EvalRun], names: Sequence[str] | None = None
) -> tuple[list[EvalRun], list[str]]:
    """The runs cut to the sample ids all of them hold (same order in each), and their labels."""
    runs = list(runs)
    if len(runs) < 2:
        raise InputError(f"compare: got {len(runs)} run(s); pass two or more runs of the same suite.")
    suites = {run.suite.name for run in runs}
    if len(suites) > 1:
        raise InputError(
            f"compare: the runs are of different suites {sorted(suites)}; compare runs of one suite."
        )
    labels = run_labels(runs, names)
    data = {json.dumps(run.suite.to_dict().get("data"), sort_keys=True, default=str) for run in runs}
    if len(data) > 1:  # same ids may then name different images (e.g. --set data.options.size=128)
        logger.warning(
            "compare: the runs' suites read different data; paired ids may not be the same samples"
        )
    common = set(runs[0].samples["id"])
    for run in runs[1:]:
        common &= set(run.samples["id"])
    if not common:
        raise InputError("compare: the runs share no sample id, so nothing can be paired.")
    dropped = {label: len(run.samples) - len(common) for label, run in zip(labels, runs, strict=True)}
    if any(dropped.values()):
        logger.warning("compare: pairing on %d shared samples (left out per run: %s)", len(common), dropped)
    paired = []
    for run in runs:
        samples = run.samples[run.samples["id"].isin(common)].sort_values("id").reset_index(drop=True)
        paired.append(EvalRun(samples, run.config, run.run_dir, run.thumbnails))
    return paired, labels


def run_labels(runs: list[EvalRun], names: Sequence[str] | None) -> list[str]:
    """`names` checked, or the runs' own names made unique (a repeated name gets a prime)."""
    if names is not None:
        if len(names) != len(runs):
            raise InputError(f"names: {len(names)} names for {len(runs)} runs; give one per run.")
        return list(names)
    labels: list[str] = []
    for run in runs:
        label = run.name
        while label in labels:
            label += "'"
        labels.append(label)
    return labels


def _statistics(name: str, results: list[Any]) -> dict[str, float]:
    if name in AGGREGATORS:
        return {key: float(value) for key, value in aggregate_metric(name, results).items()}
    return {"mean": float(np.mean([sample_score(result) for result in results]))}


def _pvalues(name: str, base: list[Any], other: list[Any], n_resamples: int, seed: int) -> dict[str, float]:
    """Paired p-value of every (non-count) statistic of one metric: `other` vs `base`."""
    if name not in AGGREGATORS:
        scores = ([sample_score(r) for r in other], [sample_score(r) for r in base])
        return {"mean": paired_bootstrap_pvalue(*scores, n_resamples=n_resamples, seed=seed)}
    aggregate = AGGREGATORS[name]
    observed_base, observed_other = aggregate(base), aggregate(other)
    # The same seed and length draw the same sample indices for both runs: the resamples are paired.
    base_draws = bootstrap_statistics(base, aggregate, n_resamples=n_resamples, seed=seed)
    other_draws = bootstrap_statistics(other, aggregate, n_resamples=n_resamples, seed=seed)
    pvalues = {}
    for key, base_value in observed_base.items():
        if (
            isinstance(base_value, int)
            or key not in observed_other
            or key not in base_draws.keys() & other_draws
        ):
            continue  # a count is not an estimate; a statistic one run lacks has no test
        observed = observed_other[key] - base_value
        pvalues[key] = shifted_pvalue(other_draws[key] - base_draws[key], observed)
    return pvalues
