"""The reimbursement checks as one HTML page: counts by risk, the invoices most urgent first, the flags.

pandas' Styler renders the tables (no template of our own); every cell is HTML-escaped, because
seller names and reasons are model output read from documents anyone can hand in.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from glmlab.office.checks import RISKS

RISK_COLOURS = {"high": "#f8d0d0", "medium": "#fde8c0", "unread": "#dde4f0", "ok": ""}


def html_report(
    summary: pd.DataFrame,
    flags: pd.DataFrame,
    *,
    title: str = "Reimbursement checks",
    path: str | Path | None = None,
) -> str:
    """A standalone HTML page of `risk_summary(...)` and `check_reimbursements(...)`; written to `path` too."""
    counts = summary["risk"].value_counts().reindex(list(RISKS), fill_value=0)
    tally = ", ".join(f"{count} {risk}" for risk, count in counts.items())
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(summary)} invoice(s): {tally}.</p>",
        "<h2>Invoices</h2>",
        _styled(summary.rename_axis("row").reset_index()),
        "<h2>Flags</h2>",
        _styled(flags) if len(flags) else "<p>No flags.</p>",
        "</body></html>",
    ]
    page = "\n".join(parts)
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page


def _styled(table: pd.DataFrame) -> str:
    def colour(value: object) -> str:
        shade = RISK_COLOURS.get(str(value), "")
        return f"background-color: {shade}" if shade else ""

    styler = table.style.format(escape="html", na_rep="").hide(axis="index")
    return styler.map(colour, subset=["risk"]).to_html()
