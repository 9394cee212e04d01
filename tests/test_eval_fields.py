"""Field-level P/R/F1 for invoice extraction: normalisation, counting, aggregation."""

from __future__ import annotations

import json

import pytest

from glmlab.errors import ConfigError, InputError
from glmlab.eval.fields import (
    FieldCounts,
    FieldScores,
    aggregate_field_scores,
    normalize_field_value,
    parse_amount,
    parse_date,
    score_fields,
)
from glmlab.eval.metrics import aggregate_metric, field_f1

INVOICE = {"invoice_no": "00123", "date": "2024-03-05", "seller": "ACME Co", "total": "¥1,234.50"}


# --- value normalisation -------------------------------------------------------------------------


def test_parse_amount_drops_currency_commas_and_trailing_zeros():
    assert parse_amount("¥1,234.50") == "1234.5"


def test_parse_amount_reads_full_width_yen_and_yuan():
    assert parse_amount("￥1234.50元") == "1234.5"


def test_parse_amount_of_whole_dollars_has_no_decimals():
    assert parse_amount("$100.00") == "100"


def test_parse_amount_of_text_is_none():
    assert parse_amount("ACME Co.") is None


def test_parse_date_reads_iso():
    assert parse_date("2024-03-05") == "2024-03-05"


def test_parse_date_reads_year_first_slashes():
    assert parse_date("2024/03/05") == "2024-03-05"


def test_parse_date_reads_chinese_date():
    assert parse_date("2024年3月5日") == "2024-03-05"


def test_parse_date_reads_slashes_with_year_last_day_first():
    assert parse_date("05/03/2024") == "2024-03-05"


def test_parse_date_reads_month_name_first():
    assert parse_date("March 5, 2024") == "2024-03-05"


def test_parse_date_reads_abbreviated_month_after_day():
    assert parse_date("5 Mar. 2024") == "2024-03-05"


def test_parse_date_of_impossible_date_is_none():
    assert parse_date("31/02/2024") is None


def test_normalize_field_value_folds_full_width_case_and_spaces_of_names():
    assert normalize_field_value("ＡＣＭＥ  Co") == normalize_field_value("acme co") == "acmeco"


def test_normalize_field_value_removes_spaces_in_chinese_names():
    assert normalize_field_value("张 三") == "张三"


def test_normalize_field_value_keeps_leading_zeros_of_plain_digits():
    assert normalize_field_value("00123") == "00123"


def test_normalize_field_value_reads_json_number_as_amount():
    assert normalize_field_value(1234.5) == normalize_field_value("1,234.50") == "1234.5"


# --- counting ------------------------------------------------------------------------------------


def test_score_fields_matches_differently_formatted_values():
    prediction = {"invoice_no": "00123", "date": "2024年3月5日", "seller": "ＡＣＭＥ  co", "total": 1234.5}
    result = score_fields(prediction, INVOICE)
    assert (result.total, result.f1) == (FieldCounts(tp=4), 1.0)


def test_score_fields_wrong_value_is_false_positive_and_false_negative():
    result = score_fields({**INVOICE, "total": "1234.6"}, INVOICE)
    assert result.fields["total"] == FieldCounts(fp=1, fn=1)


def test_score_fields_one_wrong_field_gives_three_quarters():
    result = score_fields({**INVOICE, "total": "1234.6"}, INVOICE)
    assert (result.precision, result.recall, result.f1) == (0.75, 0.75, 0.75)


def test_score_fields_missing_field_lowers_recall_only():
    prediction = {k: v for k, v in INVOICE.items() if k != "seller"}
    result = score_fields(prediction, INVOICE)
    assert (result.precision, result.recall, result.f1) == (1.0, 0.75, pytest.approx(6 / 7, abs=1e-12))


def test_score_fields_extra_field_lowers_precision_only():
    result = score_fields({**INVOICE, "buyer": "Globex"}, INVOICE)
    assert (result.fields["buyer"], result.precision, result.recall) == (FieldCounts(fp=1), 0.8, 1.0)


def test_score_fields_null_value_counts_as_missing():
    result = score_fields({**INVOICE, "date": None}, INVOICE)
    assert result.fields["date"] == FieldCounts(fn=1)


def test_score_fields_unparseable_answer_misses_every_field():
    result = score_fields("Sorry, I cannot read this invoice.", INVOICE)
    assert (result.parsed, result.total, result.precision, result.recall) == (
        False,
        FieldCounts(fn=4),
        0.0,
        0.0,
    )


def test_score_fields_reads_json_from_raw_answer_with_thinking():
    raw = '<think>the total is at the bottom</think>```json\n{"invoice_no": "00123", "total": "1234.5"}\n```'
    result = score_fields(raw, INVOICE)
    assert result.total == FieldCounts(tp=2, fn=2)


def test_score_fields_accepts_reference_as_json_text():
    assert score_fields({"total": "5"}, '{"total": 5.00}').f1 == 1.0


def test_score_fields_rejects_reference_that_is_not_an_object():
    with pytest.raises(InputError, match="not a JSON object"):
        score_fields({"total": "5"}, "total: 5")


def test_score_fields_flattens_line_items():
    reference = {"items": [{"name": "Pen", "amount": "2.00"}]}
    result = score_fields({"items": [{"name": "pen", "amount": 2}]}, reference)
    assert sorted(result.fields) == ["items.0.amount", "items.0.name"]
    # "pen" matches "Pen" and 2 matches "2.00" once normalised: both fields are true positives
    assert all(counts == FieldCounts(tp=1) for counts in result.fields.values())


def test_score_fields_text_kind_compares_amount_strings_literally():
    result = score_fields({"code": "1.50"}, {"code": "1.5"}, field_kinds={"code": "text"})
    assert result.fields["code"] == FieldCounts(fp=1, fn=1)


def test_score_fields_unknown_kind_raises_config_error():
    with pytest.raises(ConfigError, match="unknown kind. Use one of: auto, amount, date, text"):
        score_fields({}, INVOICE, field_kinds={"total": "money"})


def test_score_fields_restricted_to_named_fields_ignores_others():
    result = score_fields({"total": "1234.5", "notes": "x"}, INVOICE, fields=["total"])
    assert result.fields == {"total": FieldCounts(tp=1)}


def test_score_fields_nothing_to_find_and_nothing_claimed_is_perfect():
    assert score_fields({}, {}).f1 == 1.0


def test_field_scores_round_trip_through_dict():
    result = score_fields({**INVOICE, "total": "1234.6", "buyer": "Globex"}, INVOICE)
    assert FieldScores.from_dict(json.loads(json.dumps(result.to_dict()))) == result


# --- the registered metric and aggregation -------------------------------------------------------


def test_field_f1_takes_best_reference():
    result = field_f1({"total": "5"}, [{"total": "6"}, {"total": "5.00"}])
    assert result.score == 1.0


def test_aggregate_field_scores_micro_averages_over_samples():
    results = [score_fields({**INVOICE, "total": "1234.6"}, INVOICE), score_fields("no JSON here", INVOICE)]
    report = aggregate_field_scores(results)
    assert (report.overall, report.overall.precision, report.overall.recall, report.overall.f1) == (
        FieldCounts(tp=3, fp=1, fn=5),
        0.75,
        0.375,
        0.5,
    )


def test_aggregate_field_scores_reports_each_field():
    results = [score_fields({**INVOICE, "total": "1234.6"}, INVOICE), score_fields("no JSON here", INVOICE)]
    report = aggregate_field_scores(results)
    assert (report.per_field["total"], report.per_field["seller"], report.unparsed) == (
        FieldCounts(fp=1, fn=2),
        FieldCounts(tp=1, fn=1),
        1,
    )


def test_aggregate_metric_flattens_field_report():
    summary = aggregate_metric("field_f1", [field_f1({**INVOICE, "total": "1234.6"}, [INVOICE])])
    assert (summary["f1"], summary["total/f1"], summary["seller/recall"], summary["unparsed"]) == (
        0.75,
        0.0,
        1.0,
        0,
    )
