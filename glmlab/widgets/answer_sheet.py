"""The classroom widget's answers: one row per picture and question, as a DataFrame, a CSV file or a web page.

The web page is one self-contained file (thumbnails inlined as data URLs), so a teacher can mail it or
put it on a class page without the pictures beside it. Text from the model and from file names is
escaped everywhere: an answer is shown, never rendered as markup.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
from pathlib import Path

import pandas as pd
from PIL import Image

from glmlab.answer import Answer
from glmlab.widgets.preview import thumbnail_png

COLUMNS = ("image", "question", "answer", "time_s", "error")
THUMBNAIL_PX = 160  # longest side of a picture in the exported page

_CELL = "border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left"
_PAGE_STYLE = f"""
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ {_CELL}; overflow-wrap: anywhere; }}
td.answer {{ white-space: pre-wrap; max-width: 40em; }}
td.error {{ color: #b00020; }}
"""


@dataclasses.dataclass
class Row:
    """One answer, with the PNG thumbnail of its picture for the web page."""

    image: str
    question: str
    answer: str
    time_s: float
    error: str | None
    thumbnail: bytes


class AnswerSheet:
    """Every answer of a classroom widget, oldest first (a later run adds rows below the earlier ones)."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, name: str, image: Image.Image, question: str, answer: Answer) -> None:
        """Record `answer` to `question` about `image`; time_s is rounded to hundredths of a second."""
        self.rows.append(
            Row(
                image=name,
                question=question,
                answer=answer.text,
                time_s=round(answer.timing.total_s, 2),
                error=answer.error,
                thumbnail=thumbnail_png(image, max_side=THUMBNAIL_PX),
            )
        )

    def clear(self) -> None:
        self.rows = []

    def frame(self) -> pd.DataFrame:
        """The answers as a DataFrame with the columns `COLUMNS`; `error` is None where the row answered."""
        records = [{column: getattr(row, column) for column in COLUMNS} for row in self.rows]
        return pd.DataFrame(records, columns=list(COLUMNS))

    def to_csv(self, path: str | Path) -> Path:
        """Write the answers; UTF-8 with a byte-order mark, so Excel shows Chinese text correctly."""
        path = Path(path).expanduser()
        self.frame().to_csv(path, index=False, encoding="utf-8-sig")
        return path

    def to_html(self, path: str | Path, *, title: str, model: str) -> Path:
        """Write the answers as one web page, each row with a thumbnail of its picture."""
        path = Path(path).expanduser()
        path.write_text(self.page(title=title, model=model), encoding="utf-8")
        return path

    def page(self, *, title: str, model: str) -> str:
        """The answers as a complete HTML document (see `to_html`).

        Written by hand rather than with `DataFrame.to_html`, which escapes every cell or none: here the
        thumbnails are markup and everything else is text.
        """
        when = datetime.datetime.now().isoformat(sep=" ", timespec="minutes")
        header = "".join(f"<th>{name}</th>" for name in ("picture", *COLUMNS))
        body = "\n".join(_page_row(row) for row in self.rows)
        return (
            '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_PAGE_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n"
            f"<p>{len(self.rows)} answers · model {html.escape(model)} · {when}</p>\n"
            f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
            "</body>\n</html>\n"
        )

    def table_html(self) -> str:
        """The answers as an HTML table for the widget (no thumbnails: the gallery shows the pictures)."""
        if not self.rows:
            return "<i>No answers yet. 暂无回答。</i>"
        cells = "\n".join(
            "<tr>"
            + "".join(
                f'<td style="{_CELL}{"; white-space: pre-wrap" if column == "answer" else ""}">'
                f"{_text(getattr(row, column))}</td>"
                for column in COLUMNS
            )
            + "</tr>"
            for row in self.rows
        )
        header = "".join(f'<th style="{_CELL}; white-space: nowrap">{name}</th>' for name in COLUMNS)
        return (
            '<div style="max-height: 480px; overflow: auto; font-size: 90%">'
            f'<table style="border-collapse: collapse"><tr>{header}</tr>\n{cells}</table></div>'
        )


def _page_row(row: Row) -> str:
    picture = base64.b64encode(row.thumbnail).decode("ascii")
    return (
        f'<tr><td><img src="data:image/png;base64,{picture}" alt="{html.escape(row.image)}"></td>'
        f"<td>{_text(row.image)}</td><td>{_text(row.question)}</td>"
        f'<td class="answer">{_text(row.answer)}</td><td>{row.time_s:.2f}</td>'
        f'<td class="error">{_text(row.error)}</td></tr>'
    )


def _text(value: object) -> str:
    """A cell's text, escaped; None (no error) shows as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))
