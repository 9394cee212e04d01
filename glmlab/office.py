"""Office workflows on extracted invoice fields: flagging reimbursements already claimed.

    extracted = pd.DataFrame([...])                 # one row per invoice read by the model
    flagged = flag_duplicates(extracted, history)   # history: invoices already reimbursed
    flagged[flagged.duplicate]

Values are compared after the same normalisation the invoice metrics use (glmlab.eval.fields):
"¥1,234.50" equals "1234.5" and "2024年7月12日" equals "2024-07-12", so a re-typed or re-scanned
invoice still matches.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import pandas as pd

from glmlab.errors import InputError
from glmlab.eval.fields import normalize_field_value

DEFAULT_KEYS = ("invoice_number", "date", "total")
# How each known field compares (see glmlab.eval.fields); other fields use "auto".
FIELD_KINDS = {
    "invoice_number": "text",
    "date": "date",
    "subtotal": "amount",
    "tax": "amount",
    "total": "amount",
}


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
    for name, frame in (("extracted", extracted), ("history", history)):
        missing = [key for key in keys if key not in frame.columns]
        if missing:
            raise InputError(
                f"flag_duplicates: the {name} table has no column(s) {missing}; it has "
                f"{list(frame.columns)}. Pass keys= naming columns both tables have."
            )
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
        value = row[key]
        if pd.api.types.is_scalar(value) and pd.isna(value):  # None, NaN, NaT, pd.NA
            return None
        if isinstance(value, datetime.date):  # datetime columns (read_excel, parse_dates)
            value = value.isoformat()[:10]
        normalised = normalize_field_value(value, FIELD_KINDS.get(key, "auto"))
        if not normalised:
            return None
        values.append(normalised)
    return tuple(values)
