from decimal import Decimal

import pandas as pd
import pytest

from glmlab.errors import InputError
from glmlab.office import (
    NearRules,
    check_reimbursements,
    flag_duplicates,
    html_report,
    normalise,
    risk_summary,
)

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


def test_flag_duplicates_compares_invoice_numbers_on_letters_and_digits():
    extracted = pd.DataFrame([{"invoice_number": "0-0 01", "date": "2024-07-12", "total": "10582.64"}])
    assert flagged_columns(flag_duplicates(extracted, HISTORY)) == [[True, "history", "h1"]]


def test_normalise_reads_numbers_amounts_dates_and_missing_values():
    assert normalise("invoice_number", "ＩＮＶ-2024 0012") == "inv20240012"
    assert normalise("total", "¥1,234.50") == normalise("total", 1234.5) == "1234.5"
    assert normalise("date", pd.Timestamp("2024-07-12")) == normalise("date", "2024年7月12日") == "2024-07-12"
    assert [normalise("seller", value) for value in (None, float("nan"), pd.NA, pd.NaT, " ")] == [None] * 5


PAID = pd.DataFrame(
    [
        {"invoice_number": "INV-1", "date": "2024-07-12", "seller": "Acme Supplies Ltd", "total": "1000.00"},
        {"invoice_number": "INV-2", "date": "2024-08-01", "seller": "北京华信科技有限公司", "total": "99.00"},
    ],
    index=["h1", "h2"],
)


def claims(*rows):
    columns = ["invoice_number", "date", "seller", "total"]
    return pd.DataFrame(list(rows), columns=columns, index=[f"r{i}" for i in range(len(rows))])


def test_check_reimbursements_flags_duplicates_and_near_duplicates_with_reasons():
    extracted = claims(
        ("inv 1", "2024年7月12日", "ACME Supplies Ltd.", "¥1,000.00"),  # duplicate of h1
        ("INV-9", "2024-07-14", "Acme Suplies Ltd", "1009.99"),  # near h1: 97% alike, 9.99 <= 10.10, 2 days
        ("INV-7", "2024-08-02", "北京华信科技公司", "99.50"),  # near h2: 89% alike, 0.50 <= 1.00, 1 day
        ("INV-7", "2024-08-02", "北京华信科技公司", "99.5"),  # duplicate of r2 in the batch
        ("INV-8", "2024-07-12", "Acme Supplies Inc.", "1000.00"),  # 82% alike: not a near duplicate
    )
    flags = check_reimbursements(extracted, PAID)
    assert flags[["row", "risk", "rule", "source", "match"]].values.tolist() == [
        ["r0", "high", "duplicate", "history", "h1"],
        ["r1", "medium", "near_duplicate", "history", "h1"],
        ["r1", "medium", "near_duplicate", "batch", "r0"],  # r0 is h1 handed in again
        ["r2", "medium", "near_duplicate", "history", "h2"],
        ["r3", "high", "duplicate", "batch", "r2"],
    ]
    assert flags["reason"].tolist() == [
        "same invoice number, date and total as history row 'h1'",
        "like history row 'h1': sellers 97% alike, totals 9.99 apart (at most 10.10), dates 2 day(s) apart "
        "(at most 3)",
        "like batch row 'r0': sellers 97% alike, totals 9.99 apart (at most 10.10), dates 2 day(s) apart "
        "(at most 3)",
        "like history row 'h2': sellers 89% alike, totals 0.50 apart (at most 1.00), dates 1 day(s) apart "
        "(at most 3)",
        "same invoice number, date and total as batch row 'r2'",
    ]
    assert flags.loc[1, ["total", "match_total", "match_seller"]].tolist() == [
        "1009.99",
        "1000.00",
        "Acme Supplies Ltd",
    ]


def test_near_duplicate_thresholds_are_inclusive_and_each_one_can_refuse():
    base = ("X", "2024-07-12", "Acme Supplies Ltd", "1000.00")
    rules = NearRules(seller_score=82, amount_abs=Decimal("0"), amount_rel=Decimal("0.01"), days=2)

    def rule_of(row):
        flags = check_reimbursements(claims(base, row), PAID.iloc[:0], near=rules)
        return flags["rule"].tolist()

    assert rule_of(("Y", "2024-07-14", "Acme Supplies Inc.", "1010.00")) == [
        "near_duplicate"
    ]  # all at the limit
    assert rule_of(("Y", "2024-07-15", "Acme Supplies Inc.", "1010.00")) == []  # 3 days
    assert rule_of(("Y", "2024-07-14", "Acme Supplies Inc.", "1010.11")) == []  # 10.11 > 1% of 1010.11
    assert rule_of(("Y", "2024-07-14", "Acme Supply Inc.", "1010.00")) == []  # 76% alike
    assert rule_of(("Y", None, "Acme Supplies Ltd", "1000.00")) == []  # unread date: no evidence


def test_check_reimbursements_names_missing_columns_and_bad_rules():
    with pytest.raises(InputError, match=r"history table has no column\(s\) \['seller'\]; .* Both tables"):
        check_reimbursements(claims(), HISTORY)
    assert check_reimbursements(claims(), HISTORY, near=None).columns[:6].tolist() == [
        "row",
        "risk",
        "rule",
        "source",
        "match",
        "reason",
    ]
    with pytest.raises(InputError, match="seller_score=101"):
        NearRules(seller_score=101)


def test_risk_summary_orders_invoices_by_risk_and_marks_unread_rows():
    extracted = claims(
        ("INV-5", "2024-01-01", "Summit Ltd", "5.00"),
        ("INV-9", "2024-07-14", "Acme Suplies Ltd", "1009.99"),
        (None, None, None, None),
        ("INV-1", "2024-07-12", "Acme Supplies Ltd", "1000.00"),
    )
    extracted["error"] = [None, None, "no JSON object in the answer: 'x'", None]
    summary = risk_summary(extracted, check_reimbursements(extracted, PAID))
    assert summary.index.tolist() == ["r3", "r1", "r2", "r0"]
    assert summary["risk"].astype(str).tolist() == ["high", "medium", "unread", "ok"]
    assert summary["flags"].tolist() == [1, 1, 0, 0]
    assert summary.loc["r2", "reasons"] == "no JSON object in the answer: 'x'"


def test_html_report_shows_every_flag_and_escapes_model_text():
    extracted = claims(
        ("INV-1", "2024-07-12", "Acme Supplies Ltd", "1000.00"),
        ("INV-2", "2024-08-01", "北京华信科技有限公司", "99.00"),
        (None, None, None, None),
    )
    extracted["error"] = [None, None, "no JSON object in the answer: '<script>alert(1)</script>'"]
    flags = check_reimbursements(extracted, PAID)
    page = html_report(risk_summary(extracted, flags), flags, title="Q3 <claims>")
    assert "<title>Q3 &lt;claims&gt;</title>" in page
    assert "3 invoice(s): 2 high, 0 medium, 1 unread, 0 ok." in page
    assert "same invoice number, date and total as history row &#39;h1&#39;" in page
    assert "same invoice number, date and total as history row &#39;h2&#39;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
