"""`parse_number`: the one number reader of glmlab's scoring, with its choices as explicit options.

Answers write numbers many ways: "1,234.5", "１２３" (full width), "−3" (Unicode minus), "45%",
"¥1,234.50", "3.5万元". Each caller states what it accepts instead of keeping its own regex:

- `extract_number` (the "number" extractor) finds the first number in free text: units are ignored,
  万/亿 multiply, "45%" reads as 45.
- `parse_amount` (invoice fields) reads a whole string as money: currency marks and spaces are
  dropped, "45%" is not an amount.
- `relaxed_accuracy` (ChartQA) reads a whole string as pix2struct's reference does: Python's `float()`
  (`python_float`), a trailing "%" divides by 100 ("45%" is 0.45), "1,234" is not a number.
- `relaxed_accuracy_lenient` reads a whole string that is only a number, "45%" as 45.

Values are Decimals, so money keeps its exact digits; callers that compare with a tolerance take floats.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

# "1,234,567.89" (commas group thousands: "1,23" is 1 then ",23"), "12.5", ".5"
_DIGITS = r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_SIGNS = {"-": -1, "−": -1, "+": 1, "": 1}
_IN_TEXT_RE = re.compile(rf"(?<![A-Za-z0-9.])([-−+]?)({_DIGITS})\s*(%|万|亿)?")
_WHOLE_RE = re.compile(rf"([-−+]?)({_DIGITS})\s*(%)?")
_MAGNITUDES = {"万": Decimal(10) ** 4, "亿": Decimal(10) ** 8}
CURRENCY_RE = re.compile(r"[¥$€£]|元|圆|人民币|RMB|CNY|USD", re.IGNORECASE)


@dataclass(frozen=True)
class NumberRules:
    """How `parse_number` reads a text."""

    find: bool = False  # True: the first number anywhere in free text; False: the whole text is one number
    # "45%": 45 ("drop" the sign), not a number ("refuse"), or 0.45 ("fraction": divided by 100)
    percent: Literal["drop", "refuse", "fraction"] = "drop"
    currency: bool = False  # whole texts: drop currency marks (¥ $ € £ 元 RMB ...) and inner spaces
    magnitudes: bool = False  # find: 万 and 亿 after the number multiply it ("3.5万" = 35000)
    # The whole text as Python's float() reads it, as the ChartQA reference (pix2struct) does: "1e3",
    # " 7 ", "nan" are numbers, "1,234", "−3" and "$5" are not, no NFKC; a trailing "%" (any number
    # of them) is split off first and "fraction" divides in binary floating point, as the reference.
    python_float: bool = False

    def __post_init__(self) -> None:
        if self.python_float and (self.find or self.currency or self.magnitudes):
            raise ValueError(
                "NumberRules: python_float reads a whole text; it takes no find, currency or magnitudes"
            )


def parse_number(text: str, rules: NumberRules = NumberRules()) -> Decimal | None:
    """The number `text` holds under `rules`, or None. Full-width forms are read (NFKC)."""
    if rules.python_float:
        return _python_float(text, rules.percent)
    text = unicodedata.normalize("NFKC", text)
    if rules.find:
        match = _IN_TEXT_RE.search(text)
    else:
        if rules.currency:
            text = "".join(CURRENCY_RE.sub("", text).split())
        match = _WHOLE_RE.fullmatch(text.strip())
    if match is None:
        return None
    sign, digits, suffix = match.groups()
    if suffix == "%" and rules.percent == "refuse":
        return None
    try:
        value = Decimal(digits.replace(",", ""))
    except InvalidOperation:  # the pattern admits only decimal digits; kept as a guard
        return None
    if rules.magnitudes and suffix in _MAGNITUDES:
        value *= _MAGNITUDES[suffix]
    if suffix == "%" and rules.percent == "fraction":
        value /= 100
    return _SIGNS[sign] * value


def _python_float(text: str, percent: str) -> Decimal | None:
    """pix2struct's `_to_float`: float(text), or float(text.rstrip("%")) / 100.0 for a trailing "%".

    The Decimal holds the float exactly, so float() of the result is the reference's float.
    """
    is_percent = text.endswith("%")
    if is_percent:
        if percent == "refuse":
            return None
        text = text.rstrip("%")
    try:
        value = float(text)
    except ValueError:
        return None
    if is_percent and percent == "fraction":
        value /= 100.0
    return Decimal(value)
