"""Exact money: Decimal cents and the Chinese uppercase amount (大写金额) printed on invoices.

Invoice ground truth must add up to the cent, so amounts are `Decimal` quantised to 0.01 with
half-up rounding (the rule Chinese tax software applies), never floats. The uppercase conversion is
written by hand because no well-kept library does it; it follows the People's Bank of China rules
for filling in bills (《正确填写票据和结算凭证的基本规定》):

- digits 零壹贰叁肆伍陆柒捌玖, units 拾佰仟 within a group of four, 万 and 亿 between groups;
  a leading ten is written 壹拾 (16 -> 壹拾陆元整);
- zeros inside a number are written as one 零 (1004.56 -> 壹仟零肆元伍角陆分), zeros at the end of a
  group of four are not (20005000 -> 贰仟万伍仟元整), a whole zero group between non-zero ones is
  (100005000 -> 壹亿零伍仟元整);
- 整 follows 元 or 角 when there are no 分 (1234.50 -> 壹仟贰佰叁拾肆元伍角整), never 分;
- a zero 角 before non-zero 分 is written 零 (325.04 -> 叁佰贰拾伍元零肆分); where the rules allow 零
  to be left out (a zero 元 digit before non-zero 角: 1680.32 -> 壹仟陆佰捌拾元叁角贰分) it is.

`yuan` chooses the unit character: 元 by default, 圆 as printed on VAT invoices.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from glmlab.errors import InputError

CENT = Decimal("0.01")
DIGITS = "零壹贰叁肆伍陆柒捌玖"
SMALL_UNITS = ("", "拾", "佰", "仟")  # within a group of four digits, lowest first
GROUP_UNITS = ("", "万", "亿")  # between groups, lowest first
MAX_AMOUNT = Decimal("1000000000000")  # 万亿: larger sums are not invoice amounts


def money(value: Decimal | int | str) -> Decimal:
    """`value` as a Decimal rounded half-up to the cent (ints and strings are exact; floats are refused)."""
    if isinstance(value, float):
        raise InputError(
            f"{value!r}: money must be a Decimal, int or string, not a float (floats are inexact)."
        )
    try:
        return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise InputError(f"{value!r}: not a number.") from None


def format_money(amount: Decimal, *, thousands: bool = False) -> str:
    """`1234.5` -> '1234.50' (or '1,234.50' with thousands separators)."""
    return f"{money(amount):,.2f}" if thousands else f"{money(amount):.2f}"


def amount_in_words_zh(amount: Decimal | int | str, *, yuan: str = "元") -> str:
    """The Chinese uppercase form of a money amount, e.g. Decimal('1234.50') -> '壹仟贰佰叁拾肆元伍角整'.

    The amount must be non-negative, below 1 万亿 and exact to the cent (1.234 is refused rather than
    rounded: an invoice total with a third decimal is a bug upstream).
    """
    if isinstance(amount, float):
        money(amount)  # raises: floats are inexact
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise InputError(f"{amount!r}: not a number.") from None
    if value != value.quantize(CENT) or value < 0 or value >= MAX_AMOUNT:
        raise InputError(
            f"{amount!r}: cannot be written as a Chinese uppercase amount; expected a non-negative "
            "amount below 1 万亿 with at most two decimals."
        )
    cents = int(value * 100)
    integer, jiao, fen = cents // 100, cents // 10 % 10, cents % 10
    words = _integer_words(integer)
    if words:
        words += yuan
    if jiao:
        words += DIGITS[jiao] + "角"
    if fen:
        words += ("零" if words and not jiao else "") + DIGITS[fen] + "分"
    if not words:
        return "零" + yuan + "整"
    return words if fen else words + "整"


def _integer_words(number: int) -> str:
    """Uppercase words of a non-negative integer without the currency unit ('' for 0)."""
    groups = []
    while number:
        groups.append(number % 10000)
        number //= 10000
    words, pending_zero = "", False
    for position in range(len(groups) - 1, -1, -1):
        group = groups[position]
        if group == 0:
            pending_zero = bool(words)  # a whole zero group between non-zero ones reads as one 零
            continue
        digits = f"{group:04d}"
        for place, digit in enumerate(digits):
            if digit == "0":
                pending_zero = pending_zero or bool(words)
                continue
            if pending_zero:
                words += "零"
                pending_zero = False
            words += DIGITS[int(digit)] + SMALL_UNITS[3 - place]
        words += GROUP_UNITS[position]
        pending_zero = False  # zeros at the end of a group are not read
    return words
