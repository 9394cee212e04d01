"""Single-label classification scored per label: precision, recall and F1 of each class, macro F1.

A moderation judge answers one label per sample ({"label": "medical_claim", ...}); accuracy alone hides
a judge that never flags a rare label. Each sample's result keeps the expected and the predicted label,
and `aggregate_labels` counts, per label L: TP (expected L, predicted L), FP (predicted L, expected
another) and FN (expected L, predicted another or nothing). Precision or recall with an empty
denominator is 0, as scikit-learn's `zero_division=0`; macro F1 is the mean F1 over every label that was
expected or predicted (scikit-learn's `average="macro"`). An answer with no readable label is
`unparsed`: an FN of its expected label, an FP of none. The intervals come from the suite's bootstrap
(resampling samples and recounting), like every structured metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glmlab.answer import parse_json_object

__all__ = ["LabelPrediction", "aggregate_labels", "label_of"]


@dataclass(frozen=True)
class LabelPrediction:
    """One sample: `score` 1.0 when the predicted label is the expected one."""

    score: float
    expected: str | None
    predicted: str | None


def label_of(value: Any, key: str = "label") -> str | None:
    """The label in a prediction or reference: `value[key]` of a dict or of the JSON object in a text,
    else the stripped text itself ("allowed"); None when there is none."""
    if isinstance(value, str):
        parsed = parse_json_object(value)
        if parsed is None:
            return value.strip() or None
        value = parsed
    if isinstance(value, Mapping):
        label = value.get(key)
        return label.strip() or None if isinstance(label, str) else None
    return None


def aggregate_labels(results: list[LabelPrediction]) -> dict[str, float]:
    """macro_f1, accuracy, the counts (samples, unparsed), then precision, recall, F1 and support per label."""
    labels = sorted({r.expected for r in results} | {r.predicted for r in results} - {None})
    summary: dict[str, float] = {
        "macro_f1": 0.0,
        "accuracy": sum(r.score for r in results) / len(results),
        "samples": len(results),
        "unparsed": sum(r.predicted is None for r in results),
    }
    f1s = []
    for label in labels:
        tp = sum(r.expected == label and r.predicted == label for r in results)
        fp = sum(r.predicted == label and r.expected != label for r in results)
        fn = sum(r.expected == label and r.predicted != label for r in results)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        summary |= {
            f"{label}/precision": precision,
            f"{label}/recall": recall,
            f"{label}/f1": f1,
            f"{label}/support": tp + fn,
        }
    summary["macro_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
    return summary
