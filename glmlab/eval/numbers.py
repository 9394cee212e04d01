"""`parse_number`: the one number reader of glmlab's scoring, with its choices as explicit options.

Answers write numbers many ways: "1,234.5", "１２３" (full width), "−3" (Unicode minus), "45%",
"¥1,234.50", "3.5万元". Each caller states what it accepts instead of keeping its own regex:

- `extract_number` (the "number" extractor) finds the first number in free text: units are ignored,
  万/亿 multiply, "45%" reads as 45.
- `parse_amount` (invoice fields) reads a whole string as money: currency marks and spaces are
  dropped, "45%" is not an amount.
- relaxed accuracy (ChartQA) reads a whole string that is only a number, "45%" as 45.

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
    percent: Literal["drop", "refuse"] = "drop"  # "45%": 45 ("drop" the sign) or not a number ("refuse")
    currency: bool = False  # whole texts: drop currency marks (¥ $ € £ 元 RMB ...) and inner spaces
    magnitudes: bool = False  # find: 万 and 亿 after the number multiply it ("3.5万" = 35000)


def parse_number(text: str, rules: NumberRules = NumberRules()) -> Decimal | None:
    """The number `text` holds under `rules`, or None. Full-width forms are read (NFKC)."""
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
    return _SIGNS[sign] * value
