"""parse_number: one reader behind extract_number, parse_amount and relaxed accuracy, its options explicit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from glmlab.eval.extract import extract_number
from glmlab.eval.fields import parse_amount
from glmlab.eval.metrics import relaxed_accuracy_lenient
from glmlab.eval.numbers import NumberRules, parse_number

FREE = NumberRules(find=True, magnitudes=True)
AMOUNT = NumberRules(currency=True, percent="refuse")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234.5", Decimal("1234.5")),
        ("１２３", Decimal("123")),
        ("−3", Decimal("-3")),
        ("+.5", Decimal("0.5")),
        ("45 %", Decimal("45")),
        ("1,23", None),  # commas group thousands only
        ("¥1,234.5", None),  # currency only where asked for
        ("12 apples", None),  # the whole text must be the number
    ],
)
def test_whole_text_is_read_as_one_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("¥1,234.50", Decimal("1234.50")),
        ("￥ 1 234.50 元", Decimal("1234.50")),
        ("45%", None),
        ("-$5", Decimal(-5)),
    ],
)
def test_amounts_drop_currency_and_refuse_percentages(text, expected):
    assert parse_number(text, AMOUNT) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("约3.5万元", Decimal("35000")),
        ("COVID-19 cases", Decimal("19")),
        ("grew 45%", Decimal("45")),
        ("none", None),
    ],
)
def test_free_text_finds_the_first_number(text, expected):
    assert parse_number(text, FREE) == expected


def test_magnitudes_multiply_only_when_asked():
    assert parse_number("3.5万", NumberRules(find=True)) == Decimal("3.5")


def test_the_three_scorers_agree_on_the_inputs_they_share():
    for text, value in [("1,234.5", 1234.5), ("−3", -3.0), ("１２３", 123.0), (".5", 0.5)]:
        assert extract_number(text) == value
        assert float(parse_amount(text)) == value
        assert relaxed_accuracy_lenient(text, [str(value)]) == 1.0
    assert extract_number("45%") == 45.0 and parse_amount("45%") is None


def test_percent_fraction_divides_by_one_hundred():
    assert parse_number("45%", NumberRules(percent="fraction")) == Decimal("0.45")
    assert parse_number("约45%", NumberRules(find=True, percent="fraction")) == Decimal("0.45")


PY_FLOAT = NumberRules(python_float=True, percent="fraction")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e3", 1000.0), (" 7 ", 7.0), ("50%", 0.5), ("0.1%", 0.1 / 100.0), ("-2.5", -2.5), ("１２", 12.0)],
)
def test_python_float_reads_as_float_does(text, expected):
    assert float(parse_number(text, PY_FLOAT)) == expected


@pytest.mark.parametrize("text", ["1,234", "−3", "$5", "50 % ", "12 kg", ""])
def test_python_float_refuses_what_float_refuses(text):
    assert parse_number(text, PY_FLOAT) is None


def test_python_float_reads_whole_texts_only():
    with pytest.raises(ValueError, match="python_float reads a whole text"):
        NumberRules(python_float=True, find=True)
