"""Sample-level metrics, and the registry through which an eval suite names them.

The uniform signature
---------------------
Every registered metric is called the same way, one sample at a time::

    result = metric(prediction, references, **options)

- `prediction`: what the suite's extractor returned for the sample (`glmlab.eval.extract`): a str
  ("text", "choice", "yes_no"), a float ("number"), a dict ("json"), or None when extraction found
  nothing. None scores 0 (field_f1: every reference field missed).
- `references`: the acceptable answers, a list (a lone str or dict is taken as a one-item list).
  Several references mean "any of these" (the best score counts), except in `vqa_accuracy` and
  `vqa_accuracy_lenient`, where they are the human answers that vote.
- `options`: keyword-only settings of that metric, from the suite YAML (`threshold=0.5`) or, for
  per-sample ones such as medical_vqa's `question_type`, from the data row. A misspelt option is a
  TypeError, never silently ignored.
- The result is a float in [0, 1], or, for the structured metrics (`field_f1`, `medical_vqa`, `label_f1`), a
  dataclass whose `.score` float is the sample's number and whose other fields carry what the
  corpus-level numbers need. `sample_score(result)` gives the float for either kind.

A run's results are summarised with `aggregate_metric(name, results)` -> dict[str, float]: the mean
for plain metrics, micro-averaged P/R/F1 for field_f1, per-bucket numbers for medical_vqa, macro F1 and
per-label P/R/F1 for label_f1.
`bootstrap_ci` and `paired_bootstrap_pvalue` (from `glmlab.eval.stats`) put error bars on a mean.

A user metric joins the registry with `@register_metric("name")` (plus `aggregate=` if a mean is
not the right summary) and is then usable from a suite like the built-in ones.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein

from glmlab.errors import ConfigError, InputError
from glmlab.eval.extract import extract_choice, extract_yes_no
from glmlab.eval.fields import FieldScores, aggregate_field_scores, score_fields
from glmlab.eval.labels import LabelPrediction, aggregate_labels, label_of
from glmlab.eval.mmmu import judge as mmmu_judge
from glmlab.eval.numbers import NumberRules, parse_number
from glmlab.eval.stats import bootstrap_ci, paired_bootstrap_pvalue
from glmlab.eval.vqa_normalize import normalize_vqa_answer

__all__ = [
    "AGGREGATORS",
    "METRICS",
    "MedicalVQAScore",
    "aggregate_medical_vqa",
    "aggregate_metric",
    "anls",
    "bootstrap_ci",
    "box_accuracy",
    "box_iou",
    "exact_match",
    "field_f1",
    "get_metric",
    "label_f1",
    "medical_vqa",
    "mmmu_accuracy",
    "ocrbench",
    "normalize_text",
    "paired_bootstrap_pvalue",
    "register_metric",
    "relaxed_accuracy",
    "relaxed_accuracy_lenient",
    "sample_score",
    "textvqa_accuracy",
    "vqa_accuracy",
    "vqa_accuracy_lenient",
]

MetricFn = Callable[..., Any]
Aggregator = Callable[[list[Any]], dict[str, float]]
METRICS: dict[str, MetricFn] = {}
AGGREGATORS: dict[str, Aggregator] = {}

_THOUSANDS_COMMA_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TOKEN_RE = re.compile(r"[\u3400-\u9fff]|[^\s\u3400-\u9fff]+")  # each CJK character is one token
_CLOSED_TYPES = ("closed", "yes_no", "choice")
_OPEN_TYPES = ("open",)
_REFERENCE_FLOAT = NumberRules(python_float=True, percent="fraction")
_OCRBENCH_HME = "Handwritten Mathematical Expression Recognition"
_YES_NO_WORDS = {"yes", "no", "true", "false", "是", "否", "有", "没有", "无", "不是"}


def register_metric(
    name: str, *, aggregate: Aggregator | None = None, replace: bool = False
) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering a metric under `name` (and optionally how to summarise a run of it).

    Registering a taken name is a ConfigError unless `replace=True`, so a user metric cannot
    silently shadow a built-in one.
    """

    def decorator(fn: MetricFn) -> MetricFn:
        if name in METRICS and not replace:
            taken = f"{METRICS[name].__module__}.{METRICS[name].__qualname__}"
            raise ConfigError(
                f"metric {name!r}: already registered ({taken}). "
                "Choose another name, or pass replace=True to override it on purpose."
            )
        METRICS[name] = fn
        if aggregate is not None:
            AGGREGATORS[name] = aggregate
        else:
            AGGREGATORS.pop(name, None)
        return fn

    return decorator


def get_metric(name: str) -> MetricFn:
    """The metric registered as `name`; ConfigError naming the known ones if there is none."""
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(
            f"metric {name!r}: unknown metric. Known metrics: {', '.join(sorted(METRICS))}. "
            "Use one of these, or register yours with @glmlab.eval.metrics.register_metric(name)."
        ) from None


def sample_score(result: Any) -> float:
    """The float of one metric result: the number itself, or a structured result's `.score`."""
    return float(getattr(result, "score", result))


def aggregate_metric(name: str, results: list[Any]) -> dict[str, float]:
    """Corpus-level numbers of one metric over a run: its aggregator, or {"mean": ...} by default."""
    get_metric(name)
    if not results:
        raise InputError(f"metric {name!r}: no results to aggregate. Score at least one sample first.")
    if name in AGGREGATORS:
        return AGGREGATORS[name](results)
    return {"mean": sum(sample_score(result) for result in results) / len(results)}


def normalize_text(text: Any) -> str:
    """Text as exact match compares it.

    NFKC (full-width letters, digits and punctuation become half-width), case-folded, every
    Unicode punctuation character (Chinese 。，、“”《》 included) replaced by a space except a decimal
    point between digits, thousands commas removed ("1,000" == "1000"), whitespace collapsed.
    """
    text = unicodedata.normalize("NFKC", _as_text(text)).casefold()
    text = _THOUSANDS_COMMA_RE.sub("", text)
    kept = [
        " " if unicodedata.category(char).startswith("P") and not _is_decimal_point(text, index) else char
        for index, char in enumerate(text)
    ]
    return " ".join("".join(kept).split())


@dataclass(frozen=True)
class MedicalVQAScore:
    """One medical VQA sample: its score and which bucket it belongs to ("closed" or "open")."""

    score: float
    bucket: str
    question_type: str


def aggregate_medical_vqa(results: list[MedicalVQAScore]) -> dict[str, float]:
    """closed_accuracy and open_recall (means per bucket) with their sample counts.

    A bucket with no samples reports only its count (0), not a mean of nothing.
    """
    summary: dict[str, float] = {}
    for bucket, name in (("closed", "closed_accuracy"), ("open", "open_recall")):
        scores = [result.score for result in results if result.bucket == bucket]
        summary[f"{bucket}_count"] = len(scores)
        if scores:
            summary[name] = sum(scores) / len(scores)
    return summary


def _flat_field_report(results: list[FieldScores]) -> dict[str, float]:
    report = aggregate_field_scores(results)
    summary = {
        "precision": report.overall.precision,
        "recall": report.overall.recall,
        "f1": report.overall.f1,
        "samples": report.samples,
        "unparsed": report.unparsed,
    }
    for name, counts in report.per_field.items():
        summary.update(
            {f"{name}/precision": counts.precision, f"{name}/recall": counts.recall, f"{name}/f1": counts.f1}
        )
    return summary


@register_metric("exact_match")
def exact_match(prediction: Any, references: Any) -> float:
    """1.0 if the prediction equals any reference after `normalize_text`, else 0.0."""
    if prediction is None:
        return 0.0
    answer = normalize_text(prediction)
    return float(any(answer == normalize_text(ref) for ref in _as_references(references)))


@register_metric("anls")
def anls(prediction: Any, references: Any, *, threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one answer, as DocVQA's official script computes it.

    Both sides are stripped, lowercased and whitespace-collapsed; NL = edit distance / the length
    of the longer *unnormalised* string (the official script measures `len(answer.upper())`, so
    extra spaces lengthen the denominator); the score is 1 - (smallest NL over the references),
    or 0 when that is below 1 - `threshold` (so NL = 0.5 still scores 0.5). Two empty strings score
    1, an empty prediction against a non-empty reference 0. Distance by rapidfuzz.
    """
    answer = "" if prediction is None else _as_text(prediction)
    smallest = min(_docvqa_nl(answer, _as_text(ref)) for ref in _as_references(references))
    similarity = 1.0 - smallest
    return similarity if similarity >= 1.0 - threshold else 0.0


@register_metric("vqa_accuracy")
def vqa_accuracy(prediction: Any, references: Any) -> float:
    """VQAv2 accuracy as the official evaluation scores a submission (EvalAI + `vqaEval.py`).

    The prediction is processed as EvalAI processes submitted answers (lowercased, "," and "?"
    removed, "'s" split off, then `normalize_vqa_answer`). The human answers are stripped; only if
    they are not all the same are they, and the prediction once more, normalised with
    `normalize_vqa_answer` (so ten humans who all wrote "Two" do not match "two", read as "2").
    Each human answer is
    left out in turn and the prediction scores min(1, matching others / 3); the scores are averaged:
    with VQAv2's 10 answers one matching human gives 0.3, two 0.6, three 0.9, four or more 1.0.
    The divisor is always 3, as in the official code: fewer than four references cannot reach 1
    and a single one scores 0 (`vqa_accuracy_lenient` scales to fewer references).
    """
    refs = [_as_text(ref).replace("\n", " ").replace("\t", " ").strip() for ref in _as_references(references)]
    if prediction is None:
        return 0.0
    answer = normalize_vqa_answer(_evalai_tokenize(_as_text(prediction)))
    if len(set(refs)) > 1:
        refs = [normalize_vqa_answer(ref) for ref in refs]
        answer = normalize_vqa_answer(answer)
    matches = sum(ref == answer for ref in refs)
    # Leaving out a matching reference removes one match; leaving out another removes none.
    per_subset = [min(1.0, (matches - (ref == answer)) / 3) for ref in refs]
    return sum(per_subset) / len(per_subset)


@register_metric("vqa_accuracy_lenient")
def vqa_accuracy_lenient(prediction: Any, references: Any) -> float:
    """VQAv2-style accuracy for data with any number of references (not the benchmark's own number).

    Prediction and references are always normalised (`normalize_vqa_answer`). With n references,
    each is left out in turn and the prediction scores min(1, matches among the other n - 1 / k),
    with k = min(3, n - 1); the n scores are averaged. For 10 answers that disagree this equals
    `vqa_accuracy`; fewer references lower k so full agreement can still score 1, and a single
    reference is plain exact match.
    """
    refs = [normalize_vqa_answer(_as_text(ref)) for ref in _as_references(references)]
    if prediction is None:
        return 0.0
    answer = normalize_vqa_answer(_as_text(prediction))
    if len(refs) == 1:
        return float(answer == refs[0])
    needed = min(3, len(refs) - 1)
    matches = sum(ref == answer for ref in refs)
    per_subset = [min(1.0, (matches - (ref == answer)) / needed) for ref in refs]
    return sum(per_subset) / len(per_subset)


@register_metric("relaxed_accuracy")
def relaxed_accuracy(prediction: Any, references: Any, *, tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy exactly as the reference (pix2struct's `relaxed_correctness`).

    Both sides are read by Python's float(), a trailing "%" dividing by 100 ("50%" is 0.5, so it
    matches "0.5" and "45%" does not match "45"); "1,234" or "12 kg" are not numbers. If the
    prediction is a number and the reference a non-zero number, |pred - ref| / |ref| <= `tolerance`
    is correct; otherwise (text, or a reference of 0) the lowercased strings must be equal, without
    stripping. Best over the references. A float prediction (the number extractor's) is its text.
    """
    if prediction is None:
        return 0.0
    answer = _as_text(prediction)
    return float(
        any(_relaxed_correctness(answer, _as_text(ref), tolerance) for ref in _as_references(references))
    )


@register_metric("relaxed_accuracy_lenient")
def relaxed_accuracy_lenient(prediction: Any, references: Any, *, tolerance: float = 0.05) -> float:
    """A more forgiving relaxed accuracy (not ChartQA's number): glmlab's number reading, "%" ignored.

    If both sides parse as plain numbers under `parse_number`'s defaults ("1,234.5", "１００", "−3",
    "45%" read as 45), |pred - ref| / |ref| <= tolerance counts as correct; a reference of 0 needs
    exactly 0. Otherwise the lowercased, stripped strings must be equal. Best over the references.
    """
    if prediction is None:
        return 0.0
    return float(any(_relaxed_match(prediction, ref, tolerance) for ref in _as_references(references)))


@register_metric("textvqa_accuracy")
def textvqa_accuracy(prediction: Any, references: Any) -> float:
    """TextVQA accuracy as its reference evaluator scores it (MMF's `TextVQAAccuracyEvaluator`, which
    lmms-eval's textvqa task repeats).

    Unlike `vqa_accuracy`, every human answer always goes through EvalAI's answer processing
    (lowercased, "," and "?" dropped, then `normalize_vqa_answer`), as the prediction does. Each human
    answer is left out in turn, the prediction scores min(1, matching others / 3), and the scores
    are averaged: with 10 answers, 1 match gives 0.3, 2 give 0.6, 3 give 0.9, 4 or more 1.0.
    """
    refs = [_evalai_process(_as_text(ref)) for ref in _as_references(references)]
    if prediction is None:
        return 0.0
    answer = _evalai_process(_as_text(prediction))
    matches = sum(ref == answer for ref in refs)
    per_subset = [min(1.0, (matches - (ref == answer)) / 3) for ref in refs]
    return sum(per_subset) / len(per_subset)


@register_metric("ocrbench")
def ocrbench(prediction: Any, references: Any, *, question_type: str = "") -> float:
    """OCRBench's substring rule (its own scoring script, as VLMEvalKit runs it): 1 if any reference
    is contained in the prediction.

    Both sides are stripped and newlines become spaces; the comparison is case-insensitive, except for
    `question_type` "Handwritten Mathematical Expression Recognition", where every space is removed
    from both sides and case counts (LaTeX). lmms-eval lowercases the prediction there too.
    The benchmark's "Final Score" is the sum over its 1000 questions: 1000 x this metric's mean.
    """
    if prediction is None:
        return 0.0
    answer = _as_text(prediction)
    if question_type == _OCRBENCH_HME:
        answer = _ocr_squeezed(answer)
        return float(any(_ocr_squeezed(_as_text(ref)) in answer for ref in _as_references(references)))
    answer = answer.lower().strip().replace("\n", " ")
    return float(
        any(_as_text(ref).lower().strip().replace("\n", " ") in answer for ref in _as_references(references))
    )


@register_metric("mmmu_accuracy")
def mmmu_accuracy(
    prediction: Any, references: Any, *, question_type: str = "multiple-choice", options: Any = "[]"
) -> float:
    """MMMU accuracy as its authors' `eval_utils.py` judges it (lmms-eval's mmmu_val): a multiple-choice
    answer is parsed to an option letter that must equal the reference; an open answer is parsed into
    key phrases and numbers (`glmlab.eval.mmmu`). `question_type` ("multiple-choice" or "open") and
    `options` (a list, or the hub's string of one) come per sample."""
    if prediction is None:
        return 0.0
    answer = _as_text(prediction)
    return float(
        any(mmmu_judge(answer, _as_text(ref), question_type, options) for ref in _as_references(references))
    )


@register_metric("box_iou")
def box_iou(prediction: Any, references: Any) -> float:
    """Intersection over union of the predicted box with the reference box (best over references).

    Boxes are [x1, y1, x2, y2] on one scale for both (GLM's 0-1000; IoU does not depend on it); a
    reference may be JSON text. No box, or a box of no area against one of no area, scores 0.
    """
    if prediction is None:
        return 0.0
    return max(_iou(_box(prediction), _box(ref)) for ref in _as_references(references))


@register_metric("box_accuracy")
def box_accuracy(prediction: Any, references: Any, *, threshold: float = 0.5) -> float:
    """1 if the predicted box overlaps a reference box with IoU >= `threshold` (RefCOCO's accuracy;
    lmms-eval's refcoco_bbox_rec `ACC@0.5`), else 0."""
    return float(box_iou(prediction, references) >= threshold)


@register_metric("field_f1", aggregate=_flat_field_report)
def field_f1(
    prediction: Any,
    references: Any,
    *,
    field_kinds: dict[str, str] | None = None,
    fields: list[str] | None = None,
) -> FieldScores:
    """Field-level TP/FP/FN of a JSON answer against a reference object (`glmlab.eval.fields`).

    `prediction` is a dict, the raw answer text, or None; `references` one or more reference objects
    (dicts or JSON strings); the best-F1 reference counts. `.score` is the sample's micro F1.
    """
    scored = [score_fields(prediction, ref, field_kinds, fields) for ref in _as_references(references)]
    return max(scored, key=lambda result: result.f1)


@register_metric("label_f1", aggregate=aggregate_labels)
def label_f1(prediction: Any, references: Any, *, key: str = "label") -> LabelPrediction:
    """One single-label classification answer (`glmlab.eval.labels`): the label read from the prediction
    (a dict's `key`, the JSON object in a text, or the text itself) against the reference's.

    Several references: a match with any counts. The summary is macro F1, accuracy and per-label
    precision, recall, F1 and support.
    """
    expected = [label_of(ref, key) for ref in _as_references(references)]
    predicted = label_of(prediction, key) if prediction is not None else None
    hit = predicted is not None and predicted in expected
    return LabelPrediction(float(hit), predicted if hit else expected[0], predicted)


@register_metric("medical_vqa", aggregate=aggregate_medical_vqa)
def medical_vqa(prediction: Any, references: Any, *, question_type: str = "open") -> MedicalVQAScore:
    """Closed-question accuracy or open-question token recall (VQA-RAD, SLAKE, PathVQA; LLaVA-Med).

    `question_type` "closed", "yes_no" or "choice" (any case) goes to the closed bucket: a yes/no
    reference is compared with the prediction's `extract_yes_no` verdict, a single-letter reference
    with its `extract_choice` letter, anything else by exact match after `normalize_text`. "open"
    is scored by recall: the share of reference tokens (with multiplicity) that appear in the
    prediction, after `normalize_text`; Chinese is tokenised per character. Best over references.
    """
    kind = question_type.lower()
    if kind not in _CLOSED_TYPES + _OPEN_TYPES:
        raise ConfigError(
            f"question_type {question_type!r}: unknown. Use one of: {', '.join(_CLOSED_TYPES + _OPEN_TYPES)}."
        )
    bucket = "closed" if kind in _CLOSED_TYPES else "open"
    refs = _as_references(references)
    if prediction is None:
        return MedicalVQAScore(0.0, bucket, kind)
    score_one = _closed_score if bucket == "closed" else _token_recall
    return MedicalVQAScore(max(score_one(_as_text(prediction), _as_text(ref)) for ref in refs), bucket, kind)


def _closed_score(prediction: str, reference: str) -> float:
    expected = normalize_text(reference)
    if expected in _YES_NO_WORDS:
        return float(extract_yes_no(prediction) == extract_yes_no(reference))
    if len(expected) == 1 and expected in "abcde":
        return float(extract_choice(prediction) == expected.upper())
    return float(normalize_text(prediction) == expected)


def _token_recall(prediction: str, reference: str) -> float:
    wanted = _TOKEN_RE.findall(normalize_text(reference))
    found = set(_TOKEN_RE.findall(normalize_text(prediction)))
    if not wanted:
        return float(not found)
    return sum(token in found for token in wanted) / len(wanted)


def _relaxed_match(prediction: Any, reference: Any, tolerance: float) -> bool:
    predicted, expected = _plain_number(prediction), _plain_number(reference)
    if predicted is not None and expected is not None:
        if expected == 0:
            return predicted == 0
        return abs(predicted - expected) / abs(expected) <= tolerance
    return _as_text(prediction).strip().lower() == _as_text(reference).strip().lower()


def _relaxed_correctness(prediction: str, reference: str, tolerance: float) -> bool:
    predicted = parse_number(prediction, _REFERENCE_FLOAT)
    expected = parse_number(reference, _REFERENCE_FLOAT)
    if predicted is not None and expected is not None and expected != 0:
        # float(): the reference compares binary floats, and NaN is "truthy" there too
        return abs(float(predicted) - float(expected)) / abs(float(expected)) <= tolerance
    return prediction.lower() == reference.lower()


def _plain_number(value: Any) -> float | None:
    """A float from a number or from text that is only a number (optionally with a % sign)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    number = parse_number(_as_text(value))
    return None if number is None else float(number)


def _docvqa_normalize(text: str) -> str:
    return " ".join(text.strip().lower().split())


def _docvqa_nl(prediction: str, reference: str) -> float:
    """Normalised Levenshtein distance as DocVQA's official script: normalised texts, raw lengths."""
    length = max(len(prediction.upper()), len(reference.upper()))
    if length == 0:
        return 0.0
    return Levenshtein.distance(_docvqa_normalize(prediction), _docvqa_normalize(reference)) / length


def _evalai_tokenize(text: str) -> str:
    """EvalAI's first step on a submitted VQA answer (its `word_tokenize`)."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def _evalai_process(text: str) -> str:
    """EvalAI's `EvalAIAnswerProcessor`: tokenising, newlines and tabs to spaces, then the VQA normalisation."""
    return normalize_vqa_answer(_evalai_tokenize(text).replace("\n", " ").replace("\t", " ").strip())


def _ocr_squeezed(text: str) -> str:
    return text.strip().replace("\n", " ").replace(" ", "")


def _box(value: Any) -> list[float]:
    box = json.loads(value) if isinstance(value, str) else value
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise InputError(f"box {value!r}: expected [x1, y1, x2, y2].")
    return [float(number) for number in box]


def _iou(first: list[float], second: list[float]) -> float:
    """IoU of two corner boxes, as lmms-eval's `compute_iou`; 0 where the union has no area."""
    width = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    overlap = width * height
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    union -= overlap
    return overlap / union if union > 0 else 0.0


def _is_decimal_point(text: str, index: int) -> bool:
    return (
        text[index] == "."
        and 0 < index < len(text) - 1
        and text[index - 1].isdigit()
        and text[index + 1].isdigit()
    )


def _as_text(value: Any) -> str:
    """A prediction or reference as text; integral floats lose their ".0" (45.0 -> "45")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_references(references: Any) -> list[Any]:
    refs = [references] if isinstance(references, str | dict) else list(references)
    if not refs:
        raise InputError("references: empty list. Give each sample at least one reference answer.")
    return refs
