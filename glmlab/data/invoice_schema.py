"""The invoice schema: one definition of an invoice's fields for the generator, eval, widget and office.

The synthetic invoices' ground truth (`glmlab.data.invoices`), the invoice eval suites
(eval/invoices-*.yaml), the widget's invoice presets and `glmlab.office.extract` all speak of the same
fields by the same names: `Invoice` below (exported as `glmlab.office.INVOICE`). Amounts are strings
with exactly two decimals ("1234.50": no float ever touches money), dates are ISO strings.

Every string is bounded (a pattern of bounded length, with `max_length` for the token bound) and so
is the item list, so a
schema-constrained answer has a known longest form: `answer_token_bound` turns that into a token
budget that a constrained answer always completes within. It lives with the data because the
generators own the ground truth; the office workflows, eval and widgets read it from here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

AMOUNT_PATTERN = r"^-?\d{1,10}\.\d{2}$"  # "1234.50": 2 decimals, no separators, no currency sign
DATE_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"  # ISO; a 31 February still matches
# "13%", "6%", "7.5%". Not \d{1,2}(\.\d{1,2})?: xgrammar 0.2.9 reads that as admitting "999%".
TAX_RATE_PATTERN = r"^\d\d?(\.\d\d?)?%$"
MAX_ITEMS = 6  # the generator's most line items (more do not fit its pages)

Amount = Annotated[str, Field(pattern=AMOUNT_PATTERN, max_length=14)]


def text(longest: int, **field: Any) -> Any:
    """A string of at most `longest` characters with no control character, quote or backslash.

    The pattern, not only maxLength, bounds it: xgrammar bounds a maxLength string with a character
    class that admits raw control characters, which JSON forbids, so a weak model's answer would not
    parse. (xgrammar notes once per compiled schema that it ignores maxLength next to a pattern.)
    """
    return Field(pattern=rf'^[^\x00-\x1f"\\]{{0,{longest}}}$', max_length=longest, **field)


class LineItem(BaseModel):
    """One invoice line: what was bought, how many, at what unit price, for what amount."""

    model_config = ConfigDict(extra="forbid")

    name: str = text(32)
    quantity: int = Field(ge=0, le=9999)
    unit_price: Amount
    amount: Amount


class Invoice(BaseModel):
    """The fields read from one invoice (`total_in_words` only on Chinese invoices: 价税合计大写)."""

    model_config = ConfigDict(extra="forbid")

    invoice_number: str = text(24)
    date: str = Field(pattern=DATE_PATTERN, max_length=10)
    seller: str = text(48)
    buyer: str = text(48)
    items: list[LineItem] = Field(max_length=MAX_ITEMS)
    subtotal: Amount
    tax_rate: str = Field(pattern=TAX_RATE_PATTERN, max_length=6)
    tax: Amount
    total: Amount
    total_in_words: str | None = text(32, default=None)


INVOICE = Invoice
# How each field compares and which column type it gets (glmlab.eval.fields kinds); others: "auto".
FIELD_KINDS = {
    "invoice_number": "text",
    "date": "date",
    "subtotal": "amount",
    "tax": "amount",
    "total": "amount",
}
ANSWER_FIELDS = tuple(name for name in Invoice.model_fields if name != "total_in_words")
QUESTIONS = {
    "zh": "请识别这张发票，按JSON格式输出以下字段：" + ", ".join((*ANSWER_FIELDS, "total_in_words")) + "。",
    "en": "Extract the invoice fields as JSON with keys: " + ", ".join(ANSWER_FIELDS) + ".",
}


def json_schema(schema: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a pydantic model, or the dict itself (already a JSON schema)."""
    if isinstance(schema, dict):
        return schema
    return schema.model_json_schema()


def answer_token_bound(schema: type[BaseModel] | dict[str, Any]) -> int:
    """The most tokens a compact JSON answer to `schema` can take: a safe `max_new_tokens`.

    Counts UTF-8 bytes of the longest valid compact document (", " and ": " separators, as a grammar
    without free whitespace writes them) plus one for the end token: a byte-level BPE token holds at
    least one byte. A bounded string of n characters takes at most 4n bytes; JSON escapes are not
    counted because grammars that bound a string's length forbid them. Written by hand: no library
    bounds the length of a JSON-schema document. Unbounded parts raise ValueError.
    """
    root = json_schema(schema)
    return _max_bytes(root, root.get("$defs", {})) + 1


def _max_bytes(node: dict[str, Any], defs: dict[str, Any]) -> int:
    if "$ref" in node:
        return _max_bytes(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        return max(_max_bytes(option, defs) for option in node["anyOf"])
    kind = node.get("type")
    if kind == "null":
        return 4
    if kind == "boolean":
        return 5
    if kind == "string" and "maxLength" in node:
        return 2 + 4 * int(node["maxLength"])
    if kind == "integer" and "minimum" in node and "maximum" in node:
        return max(len(str(int(node["minimum"]))), len(str(int(node["maximum"]))))
    if kind == "array" and "maxItems" in node:
        item = _max_bytes(node.get("items", {}), defs)
        return 2 + int(node["maxItems"]) * (item + 2)
    if kind == "object" and node.get("additionalProperties") is False:
        fields = node.get("properties", {})
        return 2 + sum(len(name.encode()) + 4 + _max_bytes(value, defs) + 2 for name, value in fields.items())
    raise ValueError(
        f"schema part {node}: unbounded, so no token budget holds every answer. Bound it (maxLength, "
        "maxItems, minimum and maximum, additionalProperties: false)."
    )
