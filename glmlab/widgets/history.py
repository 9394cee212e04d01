"""The record of a widget session: one row per answer, as a pandas DataFrame or a CSV file.

A row keeps what is needed to compare answers later (adapter, settings, timing, token counts), so a
session of trying prompts by hand ends in a table rather than in scrollback.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pandas as pd

from glmlab.answer import Answer

COLUMNS = (
    "time",
    "question",
    "answer",
    "thinking",
    "images",
    "adapter",
    "model",
    "thinking_on",
    "multi_turn",
    "max_new_tokens",
    "temperature",
    "ttft_s",
    "total_s",
    "tokens_per_s",
    "prompt_tokens",
    "image_tokens",
    "completion_tokens",
    "finish_reason",
    "boxes",
    "boxed",
)
SHOWN = [
    "time",
    "question",
    "answer",
    "adapter",
    "total_s",
    "tokens_per_s",
    "completion_tokens",
    "finish_reason",
]


class History:
    """Every question and answer of one widget session, oldest first."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        question: str,
        answer: Answer,
        *,
        image_names: list[str],
        adapter: str,
        settings: dict[str, Any],
        multi_turn: bool,
    ) -> None:
        """Record one answer; `settings` are the generation options it was asked with."""
        self.rows.append(
            {
                "time": datetime.datetime.now().isoformat(timespec="seconds"),
                "question": question,
                "answer": answer.text,
                "thinking": answer.thinking,
                "images": "; ".join(image_names),
                "adapter": adapter,
                "model": answer.model,
                "thinking_on": settings.get("thinking"),
                "multi_turn": multi_turn,
                "max_new_tokens": settings.get("max_new_tokens"),
                "temperature": settings.get("temperature"),
                "ttft_s": answer.timing.ttft_s,
                "total_s": answer.timing.total_s,
                "tokens_per_s": answer.timing.decode_tokens_per_s,
                "prompt_tokens": answer.usage.prompt_tokens,
                "image_tokens": answer.usage.image_tokens,
                "completion_tokens": answer.usage.completion_tokens,
                "finish_reason": answer.finish_reason,
                "boxes": json.dumps(answer.boxes),
                "boxed": json.dumps(answer.boxed, ensure_ascii=False),
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def to_csv(self, path: str | Path) -> Path:
        """Write the history; UTF-8 with a byte-order mark, so Excel shows Chinese text correctly."""
        path = Path(path).expanduser()
        self.frame().to_csv(path, index=False, encoding="utf-8-sig")
        return path

    def to_html(self, last: int = 20) -> str:
        """The latest `last` rows as an HTML table (text escaped, long answers shortened)."""
        if not self.rows:
            return "<i>No questions yet.</i>"
        frame = self.frame()[SHOWN].tail(last)
        frame["time"] = frame["time"].str.slice(11)  # the clock time; the CSV keeps the date
        frame["answer"] = frame["answer"].str.slice(0, 120)
        table = frame.to_html(index=False, escape=True, float_format=lambda value: f"{value:.2f}", na_rep="")
        return f'<div style="max-height: 320px; overflow: auto; font-size: 90%">{table}</div>'


def timing_line(answer: Answer) -> str:
    """Time to first token, total time, decode speed and token counts of one answer, on one line."""
    timing, usage = answer.timing, answer.usage
    ttft = "n/a" if timing.ttft_s is None else f"{timing.ttft_s:.2f} s"
    speed = "n/a" if timing.decode_tokens_per_s is None else f"{timing.decode_tokens_per_s:.1f}"
    return (
        f"first token {ttft} · total {timing.total_s:.2f} s · {speed} tokens/s · tokens in "
        f"{usage.prompt_tokens} ({usage.image_tokens} image) / out {usage.completion_tokens}"
    )
