"""Field-level precision, recall and F1 for structured extraction (invoices, receipts, forms).

The model answers with a JSON object; every field of the reference object is one thing to find.
Per field, after value normalisation:

- right value            -> TP
- field missing          -> FN
- wrong value            -> FP and FN (a false claim was made *and* the true value was missed)
- field not in reference -> FP (an extra, invented field)

Conventions, chosen so that aggregation is a plain sum of counts (micro-averaging):

- `null`, "", [] and {} count as absent, in the answer and in the reference alike.
- Nested objects flatten to dotted keys and list items to indices: {"items": [{"name": "pen"}]}
  has the field "items.0.name".
- An unparseable answer counts every reference field as FN. Precision with nothing predicted
  (0 / 0) is defined as 0, not 1: an answer that delivered nothing must not earn a perfect
  precision. Only when there was also nothing to find (TP + FP + FN = 0) are P, R and F1 all 1.
  In a micro-average an unparseable sample therefore lowers recall and leaves precision alone.

Value normalisation, by hand (no library knows Chinese invoice formats), per field kind:

- amount: currency marks (¥ ￥ $ € £ 元 RMB CNY USD 人民币), spaces and thousands commas dropped,
  trailing zeros removed exactly (decimal.Decimal): "¥1,234.50" == "1234.5" == 1234.5.
- date: ISO "YYYY-MM-DD" from 2024-03-05, 2024/03/05, 2024.03.05, 2024年3月5日, "March 5, 2024",
  "5 Mar 2024", and DD/MM/YYYY. Slashed dates with the year last are read DAY FIRST (05/03/2024 is
  5 March), the convention of Chinese, European and most invoice-issuing locales; pin a US-format
  field to "text" if your references are month-first.
- text (names and everything else): NFKC (full-width -> half-width), case-folded, all whitespace
  removed, so "ＡＣＭＥ  Co" == "acme co" and "张 三" == "张三".
- auto (the default): a date if it parses as one, else an amount if it carries a currency mark,
  a thousands comma or a decimal point (or is a JSON number), else text. A plain digit string such
  as an invoice number "00123" stays text, so its leading zeros count.
"""

from __future__ import annotations

import datetime
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from glmlab.errors import ConfigError, InputError
from glmlab.eval.extract import extract_json
from glmlab.eval.numbers import CURRENCY_RE, NumberRules, parse_number

__all__ = [
    "FIELD_KINDS",
    "FieldCounts",
    "FieldReport",
    "FieldScores",
    "aggregate_field_scores",
    "normalize_field_value",
    "parse_amount",
    "parse_date",
    "score_fields",
]

FIELD_KINDS = ("auto", "amount", "date", "text")
_AMOUNT = NumberRules(currency=True, percent="refuse")  # the whole text, currency dropped; 45% is no amount
_YMD_RE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_DMY_RE = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$")
_MONTH_DAY_YEAR_RE = re.compile(r"^([A-Za-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})$")
_DAY_MONTH_YEAR_RE = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]+)\.?,?\s+(\d{4})$")
_MONTHS = "january february march april may june july august september october november december".split()


@dataclass
class FieldCounts:
    """TP/FP/FN of one field (or of all fields summed), with the P/R/F1 they imply."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: FieldCounts) -> FieldCounts:
        return FieldCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when nothing was predicted, 1 when there was also nothing to find."""
        if self.tp + self.fp == 0:
            return 1.0 if self.fn == 0 else 0.0
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); with nothing to find, 1 if nothing was claimed either, else 0."""
        if self.tp + self.fn == 0:
            return 1.0 if self.fp == 0 else 0.0
        return self.tp / (self.tp + self.fn)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0)."""
        total = self.precision + self.recall
        return 0.0 if total == 0 else 2 * self.precision * self.recall / total

    def to_dict(self) -> dict[str, float]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass
class FieldScores:
    """The field counts of one sample; `score` (its micro F1) is the sample-level number."""

    fields: dict[str, FieldCounts] = field(default_factory=dict)
    parsed: bool = True

    @property
    def total(self) -> FieldCounts:
        return sum(self.fields.values(), FieldCounts())

    @property
    def precision(self) -> float:
        return self.total.precision

    @property
    def recall(self) -> float:
        return self.total.recall

    @property
    def f1(self) -> float:
        return self.total.f1

    @property
    def score(self) -> float:
        return self.f1

    def to_dict(self) -> dict[str, Any]:
        """Plain counts for a run's per-sample records; `from_dict` reads them back."""
        return {"fields": {k: asdict(v) for k, v in self.fields.items()}, "parsed": self.parsed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FieldScores:
        return cls({k: FieldCounts(**v) for k, v in data["fields"].items()}, parsed=data["parsed"])


@dataclass
class FieldReport:
    """Counts summed over samples: per field and overall (micro-averaged P/R/F1)."""

    per_field: dict[str, FieldCounts]
    overall: FieldCounts
    samples: int
    unparsed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "per_field": {k: v.to_dict() for k, v in self.per_field.items()},
            "samples": self.samples,
            "unparsed": self.unparsed,
        }


def score_fields(
    prediction: dict[str, Any] | str | None,
    reference: dict[str, Any] | str,
    field_kinds: dict[str, str] | None = None,
    fields: list[str] | None = None,
) -> FieldScores:
    """Compare a predicted object with a reference object field by field.

    Args:
        prediction: the model's object, or its raw answer text (the first JSON object in it is
            used), or None when extraction already failed.
        reference: the true object, or its JSON text.
        field_kinds: normalisation per flattened field name ("amount", "date", "text", "auto");
            fields not named use "auto".
        fields: if given, only these flattened fields are scored; others on either side are ignored.
    """
    kinds = _check_kinds(field_kinds or {})
    truth = _flatten(_as_reference(reference))
    answer = extract_json(prediction) if isinstance(prediction, str) else prediction
    if fields is not None:
        truth = {k: v for k, v in truth.items() if k in fields}
    if not isinstance(answer, dict):
        return FieldScores({name: FieldCounts(fn=1) for name in truth}, parsed=False)
    predicted = _flatten(answer)
    if fields is not None:
        predicted = {k: v for k, v in predicted.items() if k in fields}
    counts = {}
    for name in sorted(truth.keys() | predicted.keys()):
        counts[name] = _compare(predicted.get(name), truth.get(name), kinds.get(name, "auto"))
    return FieldScores(counts, parsed=True)


def aggregate_field_scores(results: list[FieldScores]) -> FieldReport:
    """Sum per-field counts over samples; overall P/R/F1 is the micro-average over every field."""
    per_field: dict[str, FieldCounts] = {}
    for result in results:
        for name, counts in result.fields.items():
            per_field[name] = per_field.get(name, FieldCounts()) + counts
    overall = sum(per_field.values(), FieldCounts())
    unparsed = sum(not result.parsed for result in results)
    return FieldReport(dict(sorted(per_field.items())), overall, len(results), unparsed)


def normalize_field_value(value: Any, kind: str = "auto") -> str:
    """The canonical string of one field value under `kind` (see the module docstring)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and kind in ("auto", "amount"):
        return _canonical_decimal(Decimal(str(value)))
    text = unicodedata.normalize("NFKC", str(value)).strip()
    if kind in ("auto", "date"):
        date = parse_date(text)
        if date is not None:
            return date
    if kind == "amount" or (kind == "auto" and _looks_like_amount(text)):
        amount = parse_amount(text)
        if amount is not None:
            return amount
    return "".join(text.casefold().split())


def parse_amount(text: str) -> str | None:
    """Canonical decimal string of a money amount ("¥1,234.50" -> "1234.5"), or None."""
    value = parse_number(text, _AMOUNT)
    return None if value is None else _canonical_decimal(value)


def parse_date(text: str) -> str | None:
    """ISO date "YYYY-MM-DD" of a date written in one of the supported forms, or None."""
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    if match := _YMD_RE.match(text):
        year, month, day = match.groups()
    elif match := _DMY_RE.match(text):
        day, month, year = match.groups()
    elif match := _MONTH_DAY_YEAR_RE.match(text):
        month, day, year = _month_number(match.group(1)), match.group(2), match.group(3)
    elif match := _DAY_MONTH_YEAR_RE.match(text):
        day, month, year = match.group(1), _month_number(match.group(2)), match.group(3)
    else:
        return None
    try:
        return datetime.date(int(year), int(month), int(day)).isoformat()
    except (TypeError, ValueError):  # unknown month name, or 31 February
        return None


def _month_number(name: str) -> int | None:
    name = name.lower()
    for number, month in enumerate(_MONTHS, start=1):
        if len(name) >= 3 and month.startswith(name):
            return number
    return None


def _looks_like_amount(text: str) -> bool:
    return bool(CURRENCY_RE.search(text)) or "," in text or "." in text


def _canonical_decimal(value: Decimal) -> str:
    """Exact decimal without trailing zeros or exponent: 1234.50 -> "1234.5", 1E+2 -> "100"."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "+0") else text


def _compare(predicted: Any, truth: Any, kind: str) -> FieldCounts:
    if truth is None:
        return FieldCounts(fp=1)
    if predicted is None:
        return FieldCounts(fn=1)
    if normalize_field_value(predicted, kind) == normalize_field_value(truth, kind):
        return FieldCounts(tp=1)
    return FieldCounts(fp=1, fn=1)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path; empty values (None, "", [], {}) are left out as absent."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        empty = obj is None or (isinstance(obj, str) and not obj.strip())
        return {} if empty or not prefix else {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _as_reference(reference: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(reference, dict):
        return reference
    try:
        parsed = json.loads(reference)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"reference {str(reference)[:60]!r}: not a JSON object ({error}). "
            "Give field references as a dict or a JSON object string."
        ) from None
    if not isinstance(parsed, dict):
        raise InputError(f"reference {str(reference)[:60]!r}: JSON but not an object. Give a dict of fields.")
    return parsed


def _check_kinds(field_kinds: dict[str, str]) -> dict[str, str]:
    bad = {name: kind for name, kind in field_kinds.items() if kind not in FIELD_KINDS}
    if bad:
        raise ConfigError(f"field_kinds {bad}: unknown kind. Use one of: {', '.join(FIELD_KINDS)}.")
    return field_kinds
