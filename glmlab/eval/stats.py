"""How sure is a score: bootstrap confidence intervals and a paired bootstrap test.

An eval set of a few hundred samples gives a mean that can move by several points on another draw
of the same kind of data; these two functions say by how much, and whether run B really beats run A
on the same samples. Both resample sample-level scores with replacement (numpy, seeded, so a report
is reproducible); resamples are drawn in chunks so memory stays bounded for large sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glmlab.errors import ConfigError, InputError

__all__ = ["bootstrap_ci", "paired_bootstrap_pvalue"]

_CHUNK_ELEMENTS = 1 << 20  # indices drawn at once: 8 MiB of int64


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) of the mean of `values`.

    Args:
        values: one score per sample (e.g. 0/1 correctness, ANLS).
        n_resamples: bootstrap resamples; 1000 is enough for a 95% interval to ~0.5 points.
        confidence: coverage of the interval, in (0, 1).
        seed: numpy Generator seed; the same inputs and seed give the same interval.
    """
    scores = _as_scores(values, "values")
    _check_resamples(n_resamples)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r}: must lie strictly between 0 and 1, e.g. 0.95.")
    means = _resampled_means(scores, n_resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap_pvalue(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0
) -> float:
    """Two-sided p-value that runs `a` and `b`, scored on the same samples, have equal means.

    The per-sample differences d = a - b are resampled; under the null hypothesis their resampled
    means scatter around the observed mean as they would around 0, so the p-value is the share of
    resamples whose mean lies at least as far from the observed mean as the observed mean lies
    from 0, with the usual +1 correction so it is never exactly 0:
    p = (1 + #{|mean* - mean| >= |mean|}) / (n_resamples + 1).
    Identical runs give p = 1.

    Args:
        a, b: per-sample scores of two runs, in the same sample order.
        n_resamples: bootstrap resamples; the smallest reachable p is 1 / (n_resamples + 1).
        seed: numpy Generator seed.
    """
    first, second = _as_scores(a, "a"), _as_scores(b, "b")
    if len(first) != len(second):
        raise InputError(
            f"a has {len(first)} scores and b has {len(second)}: a paired test needs the same "
            "samples in both runs. Score both runs on the same sample list."
        )
    _check_resamples(n_resamples)
    differences = first - second
    observed = differences.mean()
    means = _resampled_means(differences, n_resamples, np.random.default_rng(seed))
    return shifted_pvalue(means, observed)


def shifted_pvalue(draws: Sequence[float], observed: float) -> float:
    """Two-sided bootstrap p-value of an observed difference from its resampled values: the share
    lying at least as far from `observed` as `observed` lies from 0, +1 corrected (never exactly 0).
    Undefined draws (NaN: a statistic a resample lacked) are left out."""
    values = np.asarray(draws, dtype=float)
    values = values[np.isfinite(values)]
    extreme = np.count_nonzero(np.abs(values - observed) >= abs(observed))
    return float((1 + extreme) / (values.size + 1))


def _resampled_means(scores: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` with-replacement resamples of `scores`."""
    size = len(scores)
    per_chunk = max(1, _CHUNK_ELEMENTS // size)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, per_chunk):
        stop = min(start + per_chunk, n_resamples)
        indices = rng.integers(0, size, size=(stop - start, size))
        means[start:stop] = scores[indices].mean(axis=1)
    return means


def _as_scores(values: Sequence[float], name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=float).reshape(-1)
    if scores.size == 0:
        raise InputError(f"{name}: no scores. Pass at least one per-sample score.")
    if not np.all(np.isfinite(scores)):
        raise InputError(f"{name}: contains NaN or infinity. Score every sample with a finite number.")
    return scores


def _check_resamples(n_resamples: int) -> None:
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError(f"n_resamples={n_resamples!r}: must be a positive integer, e.g. 1000.")
