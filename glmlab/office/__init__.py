"""Office work with a VLM: read invoices into a table, then check reimbursements against history.

    table = glmlab.office.extract(vlm, files)             # INVOICE fields, one row per page
    flags = glmlab.office.check_reimbursements(table, history)
    summary = glmlab.office.risk_summary(table, flags)
    glmlab.office.html_report(summary, flags, path="checks.html")

`INVOICE` is the one invoice schema (glmlab.data.invoice_schema), shared with the invoice generator's
ground truth, the invoice eval suites and the widget's invoice presets.
"""

from __future__ import annotations

from glmlab.data.invoice_schema import FIELD_KINDS, INVOICE, Invoice, LineItem, answer_token_bound
from glmlab.office.checks import (
    NearRules,
    check_reimbursements,
    flag_duplicates,
    normalise,
    risk_summary,
    row_key,
)
from glmlab.office.extract import extract, parse_answer
from glmlab.office.report import html_report

__all__ = [
    "FIELD_KINDS",
    "INVOICE",
    "Invoice",
    "LineItem",
    "NearRules",
    "answer_token_bound",
    "check_reimbursements",
    "extract",
    "flag_duplicates",
    "html_report",
    "normalise",
    "parse_answer",
    "risk_summary",
    "row_key",
]
