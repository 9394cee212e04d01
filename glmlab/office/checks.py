"""Reimbursement checks on extracted invoice fields: claims already paid, and claims that look like them.

    extracted = glmlab.office.extract(vlm, files)   # one row per invoice page read by the model
    flags = check_reimbursements(extracted, history)  # history: invoices already reimbursed
    summary = risk_summary(extracted, flags)          # one row per invoice: high / medium / unread / ok

Two rules, each flag with its reason and the row it matches (in `history`, or earlier in the batch):
- duplicate (risk high): invoice number, date and total equal after normalisation. Values compare
  as the invoice metrics compare them (glmlab.eval.fields): "¥1,234.50" equals "1234.5" and
  "2024年7月12日" equals "2024-07-12"; invoice numbers compare on letters and digits only
  ("INV-2024 0012" equals "inv20240012"), so a re-typed or re-scanned invoice still matches.
- near duplicate (risk medium): seller names alike (rapidfuzz's normalised Levenshtein ratio, 0-100,
  after lower-casing and dropping punctuation), totals within a tolerance and dates within a few days,
  whatever the number: the same purchase claimed again with an edited or misread number.
A row with a compared field missing or unread is never flagged by that rule: an unread field is no
evidence. `flag_duplicates` is the first rule alone, as columns on the extracted table.
"""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd
from rapidfuzz import fuzz, utils

from glmlab.data.invoice_schema import FIELD_KINDS
from glmlab.errors import InputError
from glmlab.eval.fields import normalize_field_value

DEFAULT_KEYS = ("invoice_number", "date", "total")
NEAR_FIELDS = ("seller", "date", "total")
RISKS = ("high", "medium", "unread", "ok")  # most urgent first


def flag_duplicates(
    extracted: pd.DataFrame, history: pd.DataFrame, *, keys: Sequence[str] = DEFAULT_KEYS
) -> pd.DataFrame:
    """A copy of `extracted` with three columns saying which rows claim an invoice a second time.

    A row is a duplicate when all its `keys` equal (normalised) those of a `history` row, or of an
    earlier row of `extracted` itself (the same invoice submitted twice in one batch). A row with
    any key missing is never flagged: an unread field is no evidence.
    Added columns: `duplicate` (bool), `duplicate_source` ("history", "batch" or None) and
    `duplicate_of` (the index label of the matching history or earlier batch row, or None).
    """
    keys = tuple(keys)
    _check_columns("flag_duplicates", extracted, history, keys)
    claimed = {}
    for label, row in history.iterrows():
        key = row_key(row, keys)
        if key is not None:
            claimed.setdefault(key, label)
    seen: dict[tuple[str, ...], Any] = {}
    sources, matches = [], []
    for label, row in extracted.iterrows():
        key = row_key(row, keys)
        if key is not None and key in claimed:
            sources.append("history")
            matches.append(claimed[key])
        elif key is not None and key in seen:
            sources.append("batch")
            matches.append(seen[key])
        else:
            sources.append(None)
            matches.append(None)
        if key is not None:
            seen.setdefault(key, label)
    flagged = extracted.copy()
    flagged["duplicate"] = [source is not None for source in sources]
    flagged["duplicate_source"] = pd.Series(sources, index=extracted.index, dtype=object)
    flagged["duplicate_of"] = pd.Series(matches, index=extracted.index, dtype=object)
    return flagged


def row_key(row: pd.Series, keys: Sequence[str]) -> tuple[str, ...] | None:
    """The normalised values of `keys` in `row`, or None when any of them is missing or empty."""
    values = []
    for key in keys:
        normalised = normalise(key, row[key])
        if normalised is None:
            return None
        values.append(normalised)
    return tuple(values)


def normalise(field: str, value: Any) -> str | None:
    """The canonical text of one field value, or None when it is missing or empty.

    Amounts and dates as glmlab.eval.fields reads them (its kinds: the invoice schema's FIELD_KINDS),
    invoice numbers as their letters and digits, case-folded; other text case-folded without spaces.
    """
    if _missing(value):
        return None
    if isinstance(value, datetime.date):  # datetime columns (extract, read_excel, parse_dates)
        value = value.isoformat()[:10]
    if field == "invoice_number":
        text = unicodedata.normalize("NFKC", str(value)).casefold()
        return "".join(character for character in text if character.isalnum()) or None
    return normalize_field_value(value, FIELD_KINDS.get(field, "auto")) or None


@dataclass(frozen=True)
class NearRules:
    """When two invoices are alike enough to be one purchase claimed twice (the near-duplicate rule).

    seller_score: the least rapidfuzz ratio (0-100) of the two seller names, lower-cased and without
    punctuation ("Acme Supplies Ltd" vs "ACME Supplies Ltd." is 100, vs "Acme Suplies Ltd" 97, vs
    "Acme Supplies Inc." 82). amount_abs / amount_rel: totals differ by at most the larger of an
    absolute amount and a share of the larger total. days: dates at most this many days apart.
    """

    seller_score: float = 85.0
    amount_abs: Decimal = Decimal("1.00")
    amount_rel: Decimal = Decimal("0.01")
    days: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.seller_score <= 100:
            raise InputError(f"NearRules(seller_score={self.seller_score}): a ratio from 0 to 100.")
        if self.amount_abs < 0 or self.amount_rel < 0 or self.days < 0:
            raise InputError(f"{self}: tolerances cannot be negative.")


FLAG_COLUMNS = ["row", "risk", "rule", "source", "match", "reason", "seller_score"]


@dataclass(frozen=True)
class _Claim:
    """One invoice row with its normalised keys, computed once for every comparison it takes part in."""

    source: str
    label: Any
    row: pd.Series
    key: tuple[str, ...] | None  # number, date, total: the duplicate rule
    seller: str | None
    date: datetime.date | None
    total: Decimal | None

    @classmethod
    def of(cls, source: str, label: Any, row: pd.Series) -> _Claim:
        date, total = normalise("date", row["date"]), normalise("total", row["total"])
        seller = row["seller"] if "seller" in row.index and normalise("seller", row["seller"]) else None
        return cls(
            source,
            label,
            row,
            row_key(row, DEFAULT_KEYS),
            None if seller is None else str(seller),
            None if date is None else datetime.date.fromisoformat(date),
            None if total is None else Decimal(total),
        )


def check_reimbursements(
    extracted: pd.DataFrame, history: pd.DataFrame, *, near: NearRules | None = NearRules()
) -> pd.DataFrame:
    """Every flag on `extracted`'s rows: one row per (invoice, matching row, rule), in `extracted` order.

    Columns: `row` (the extracted row's index label), `risk` ("high" for a duplicate, "medium" for a
    near duplicate), `rule` ("duplicate" / "near_duplicate"), `source` ("history" or "batch": an
    earlier row of `extracted`), `match` (the matching row's index label), `reason` (what agreed, in
    words), `seller_score` (near duplicates), then the compared fields of both rows (`total` and
    `match_total`, ...). A duplicate is flagged once, by its first match (history first); it is not
    also flagged as a near duplicate. near=None: the duplicate rule only.
    """
    fields = DEFAULT_KEYS if near is None else tuple(dict.fromkeys(DEFAULT_KEYS + NEAR_FIELDS))
    _check_columns(
        "check_reimbursements",
        extracted,
        history,
        fields,
        "Both tables need them (near=None: no seller needed)",
    )
    claimed = [_Claim.of("history", label, row) for label, row in history.loc[:, list(fields)].iterrows()]
    flags = []
    for label, row in extracted.loc[:, list(fields)].iterrows():
        claim = _Claim.of("batch", label, row)
        found = [_duplicate_flag(claim, other) for other in claimed if _is_duplicate(claim, other)][:1]
        if not found and near is not None:
            found = [flag for other in claimed if (flag := _near_flag(claim, other, near)) is not None]
        flags.extend(found)
        claimed.append(claim)
    columns = FLAG_COLUMNS + [*fields, *(f"match_{field}" for field in fields)]
    return pd.DataFrame(flags, columns=columns).astype({"row": object, "match": object})


def _is_duplicate(claim: _Claim, other: _Claim) -> bool:
    return claim.key is not None and claim.key == other.key


def _duplicate_flag(claim: _Claim, other: _Claim) -> dict[str, Any]:
    reason = f"same invoice number, date and total as {other.source} row {other.label!r}"
    return _flag(claim, other, "high", "duplicate", reason, None)


def _near_flag(claim: _Claim, other: _Claim, near: NearRules) -> dict[str, Any] | None:
    """The near-duplicate flag of `claim` against `other`, or None when they are not alike enough."""
    if None in (claim.seller, claim.date, claim.total, other.seller, other.date, other.total):
        return None
    days = abs((claim.date - other.date).days)  # type: ignore[operator]
    difference = abs(claim.total - other.total)  # type: ignore[operator]
    allowed = max(near.amount_abs, near.amount_rel * max(abs(claim.total), abs(other.total)))  # type: ignore[arg-type]
    if days > near.days or difference > allowed:
        return None
    score = fuzz.ratio(claim.seller, other.seller, processor=utils.default_process)
    if score < near.seller_score:
        return None
    reason = (
        f"like {other.source} row {other.label!r}: sellers {score:.0f}% alike, totals {difference:.2f} "
        f"apart (at most {allowed:.2f}), dates {days} day(s) apart (at most {near.days})"
    )
    return _flag(claim, other, "medium", "near_duplicate", reason, score)


def _flag(claim: _Claim, other: _Claim, risk: str, rule: str, reason: str, score: float | None) -> dict:
    values = (claim.label, risk, rule, other.source, other.label, reason, score)
    flag = dict(zip(FLAG_COLUMNS, values, strict=True))
    flag.update(claim.row.to_dict())
    flag.update({f"match_{field}": value for field, value in other.row.items()})
    return flag


def risk_summary(extracted: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """One row per extracted invoice (same index): its `risk`, how many `flags`, and their `reasons`.

    risk: "high" (a duplicate), "medium" (a near duplicate), "unread" (the row's `error` is set: the
    model's answer did not parse, so a person reads this invoice), or "ok". Sorted most urgent first.
    """
    errors = extracted["error"] if "error" in extracted.columns else pd.Series(None, index=extracted.index)
    risks, counts, reasons = [], [], []
    for label in extracted.index:
        mine = flags[flags["row"] == label] if len(flags) else flags
        unread = not _missing(errors[label])
        if len(mine):
            risk = min(mine["risk"], key=RISKS.index)
        else:
            risk = "unread" if unread else "ok"
        risks.append(risk)
        counts.append(len(mine))
        reasons.append("; ".join(mine["reason"]) if len(mine) else (str(errors[label]) if unread else ""))
    summary = pd.DataFrame(
        {"risk": pd.Categorical(risks, categories=RISKS, ordered=True), "flags": counts, "reasons": reasons},
        index=extracted.index,
    )
    return summary.sort_values("risk", kind="stable")


def _missing(value: Any) -> bool:
    """None, NaN, NaT or pd.NA: no value."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _check_columns(
    caller: str,
    extracted: pd.DataFrame,
    history: pd.DataFrame,
    keys: Sequence[str],
    hint: str = "Pass keys= naming columns both tables have",
) -> None:
    for name, frame in (("extracted", extracted), ("history", history)):
        missing = [key for key in keys if key not in frame.columns]
        if missing:
            raise InputError(
                f"{caller}: the {name} table has no column(s) {missing}; it has {list(frame.columns)}. {hint}."
            )
