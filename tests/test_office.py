import pandas as pd
import pytest

from glmlab.errors import InputError
from glmlab.office import flag_duplicates

HISTORY = pd.DataFrame(
    [
        {"invoice_number": "0001", "date": "2024-07-12", "total": "10582.64"},
        {"invoice_number": "0002", "date": "2024-08-01", "total": "99.00"},
    ],
    index=["h1", "h2"],
)


def flagged_columns(frame):
    return frame[["duplicate", "duplicate_source", "duplicate_of"]].values.tolist()


def test_flag_duplicates_matches_history_after_normalising_amounts_and_dates():
    extracted = pd.DataFrame(
        [
            {"invoice_number": " 0001", "date": "2024年7月12日", "total": "¥10,582.64"},
            {"invoice_number": "0002", "date": "2024-08-01", "total": "98.00"},
            {"invoice_number": "0003", "date": "2024-09-09", "total": "5"},
        ]
    )
    assert flagged_columns(flag_duplicates(extracted, HISTORY)) == [
        [True, "history", "h1"],
        [False, None, None],
        [False, None, None],
    ]


def test_flag_duplicates_flags_a_repeat_within_the_batch():
    extracted = pd.DataFrame(
        [
            {"invoice_number": "0005", "date": "2024-09-09", "total": "5.0"},
            {"invoice_number": "0005", "date": "2024/09/09", "total": 5},
        ]
    )
    assert flagged_columns(flag_duplicates(extracted, HISTORY)) == [[False, None, None], [True, "batch", 0]]


def test_flag_duplicates_never_flags_rows_with_a_missing_key():
    extracted = pd.DataFrame([{"invoice_number": "0001", "date": None, "total": "10582.64"}] * 2)
    assert flagged_columns(flag_duplicates(extracted, HISTORY)) == [[False, None, None]] * 2


def test_flag_duplicates_reads_datetime_columns_like_date_strings_and_never_pairs_missing_dates():
    extracted = pd.DataFrame(
        {
            "invoice_number": ["0001", "0007", "0007"],
            "date": pd.to_datetime(["2024-07-12", None, None]),  # as read_excel / parse_dates give them
            "total": ["10582.64", "1", "1"],
        }
    )
    assert flagged_columns(flag_duplicates(extracted, HISTORY)) == [
        [True, "history", "h1"],
        [False, None, None],
        [False, None, None],
    ]


def test_flag_duplicates_uses_the_given_keys():
    extracted = pd.DataFrame([{"invoice_number": "0002", "date": "2025-01-01", "total": "1"}])
    flagged = flag_duplicates(extracted, HISTORY, keys=["invoice_number"])
    assert flagged_columns(flagged) == [[True, "history", "h2"]]


def test_flag_duplicates_names_a_missing_key_column():
    with pytest.raises(InputError, match=r"extracted table has no column\(s\) \['seller'\]"):
        flag_duplicates(HISTORY, HISTORY, keys=["invoice_number", "seller"])
