"""The data layouts glmlab reads, by name: its own, and the ones other tools write.

- `glmlab`: a data folder (`data.jsonl` + image files), or a `.jsonl` file, of records (`records.py`).
- `sharegpt`: ShareGPT/LLaVA rows, `{"id", "image": "coco/1.jpg", "conversations": [{"from": "human",
  "value": "<image>\\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}` (LLaVA's `llava_*.json`),
  with `images` for a list and an optional `system` string (LLaMA-Factory's sharegpt columns).
- `llama_factory`: LLaMA-Factory's multimodal rows (its `data/mllm_demo.json`), `{"messages": [{"role":
  "user", "content": "<image>Who are they?"}, {"role": "assistant", "content": "..."}], "images":
  ["mllm_demo_data/1.jpg"]}`, with an optional `system` string.
- `csv`: a folder of images with a CSV (`data.csv`) of columns `image`, `question`, `answer`; an `id`
  column and any other column (kept as metadata) are optional.

A format says which files a folder is searched for (`<split or data>` + its suffixes, in order) and how
one row becomes a record-format row; `records.normalise_row` then applies the same checks to every
format. The ShareGPT and LLaMA-Factory `<image>` markers are kept where they are, so each image keeps its
place in the text. Those files are one JSON array (as both tools write them) or JSON lines.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glmlab.data.records import RecordError, RowProblem, is_missing, row_label
from glmlab.errors import InputError

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
CSV_COLUMNS = ("image", "question", "answer")


@dataclass(frozen=True)
class Format:
    """A layout: the file suffixes a folder is searched for, in order, and its row converter."""

    name: str
    suffixes: tuple[str, ...]
    convert: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None


def from_sharegpt(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ShareGPT/LLaVA row in the record format: `conversations` become `messages`."""
    _refuse_videos(row)
    turns = _as_list(row.get("conversations"))
    if turns is None:
        raise RowProblem(
            "missing_field",
            "missing field 'conversations' (a ShareGPT row holds a list of {'from', 'value'} turns)",
        )
    if not isinstance(turns, list):
        raise RowProblem(
            "wrong_type", f"field 'conversations' has type {type(turns).__name__}, expected a list of turns"
        )
    messages = _system_message(row)
    for index, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise RowProblem("wrong_type", f"conversations[{index}] is not a {{'from', 'value'}} dict")
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            raise RowProblem(
                "wrong_type",
                f"conversations[{index}] has from {turn['from']!r}; expected human, gpt or system "
                "(or user, assistant): tool-call turns are not read",
            )
        if not isinstance(turn["value"], str):
            raise RowProblem(
                "wrong_type",
                f"conversations[{index}].value has type {type(turn['value']).__name__}, expected a string",
            )
        messages.append({"role": role, "content": turn["value"]})
    rest = {key: value for key, value in row.items() if key not in ("conversations", "system")}
    return {**rest, "messages": messages}


def from_llama_factory(row: Mapping[str, Any]) -> dict[str, Any]:
    """A LLaMA-Factory multimodal row in the record format: its `system` string opens the messages."""
    _refuse_videos(row)
    messages = _as_list(row.get("messages"))
    if messages is None:
        raise RowProblem(
            "missing_field",
            "missing field 'messages' (a LLaMA-Factory row holds {'role', 'content'} messages and 'images')",
        )
    if not isinstance(messages, list):
        raise RowProblem(
            "wrong_type", f"field 'messages' has type {type(messages).__name__}, expected a list of messages"
        )
    rest = {key: value for key, value in row.items() if key != "system"}
    return {**rest, "messages": _system_message(row) + messages}


FORMATS = {
    "glmlab": Format("glmlab", (".jsonl",)),
    "sharegpt": Format("sharegpt", (".json", ".jsonl"), from_sharegpt),
    "llama_factory": Format("llama_factory", (".json", ".jsonl"), from_llama_factory),
    "csv": Format("csv", (".csv",)),
}


# ---- files ----------------------------------------------------------------------------------------


def read_rows(path: Path, columns: Mapping[str, str] | None = None) -> Iterator[tuple[int, Any]]:
    """(index, row) of a `.jsonl`, `.json` (an array) or `.csv` file; a row that cannot be read is a
    `RecordError` in the row's place, a file that cannot be read at all raises `InputError`."""
    if path.suffix == ".json":
        return enumerate(_json_array(path))
    if path.suffix == ".csv":
        return _csv_rows(path, columns)
    return _jsonl_rows(path)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(index, row) per non-blank line; index = line number - 1. Invalid JSON yields a RecordError."""
    with path.open(encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                yield index, json.loads(line)
            except json.JSONDecodeError as error:
                message = (
                    f"{row_label(str(path), index, None)}: invalid JSON ({error.msg} at column {error.colno})"
                )
                yield index, RecordError(message, reason="invalid_row", index=index)


def _json_array(path: Path) -> list[Any]:
    """A whole-file JSON array: one syntax error leaves no row to read, so it refuses the file."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: invalid JSON ({error.msg} at line {error.lineno} column {error.colno}); a .json file "
            "is one array of rows and cannot be read in part (JSON lines can: one row a line, .jsonl)."
        ) from None
    if not isinstance(rows, list):
        raise InputError(f"{path}: holds a JSON {type(rows).__name__}, expected an array of rows.")
    return rows


def _csv_rows(path: Path, columns: Mapping[str, str] | None) -> Iterator[tuple[int, Any]]:
    """(index, row) per data row (index 0 is the line after the header); an empty cell is a missing
    value; a row with more cells than the header is an invalid row."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file, restkey="\0extra")
        header = reader.fieldnames or []
        renamed = [(columns or {}).get(name, name) for name in header]
        missing = [name for name in CSV_COLUMNS if name not in renamed]
        if missing:
            raise InputError(
                f"{path}: no column {', '.join(map(repr, missing))} (its columns are {header}); a CSV of "
                f"records has columns {', '.join(CSV_COLUMNS)} (rename others with columns)."
            )
        for index, row in enumerate(reader):
            extra = row.pop("\0extra", None)
            if extra is not None:
                message = (
                    f"{row_label(str(path), index, _cell(row.get('id')))}: has {len(header) + len(extra)} "
                    f"cells, the header has {len(header)}"
                )
                yield (
                    index,
                    RecordError(message, reason="invalid_row", index=index, record_id=_cell(row.get("id"))),
                )
                continue
            yield index, {name: _cell(value) for name, value in row.items()}


def _cell(value: str | None) -> str | None:
    return value if value else None


# ---- rows -----------------------------------------------------------------------------------------


def _as_list(value: Any) -> Any:
    """A list field as a list (parquet/Arrow cells arrive as numpy arrays); None when missing."""
    if is_missing(value):
        return None
    return list(value) if isinstance(value, np.ndarray) else value


def _system_message(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    system = row.get("system")
    if is_missing(system) or system == "":
        return []
    if not isinstance(system, str):
        raise RowProblem("wrong_type", f"field 'system' has type {type(system).__name__}, expected a string")
    return [{"role": "system", "content": system}]


def _refuse_videos(row: Mapping[str, Any]) -> None:
    for key in ("video", "videos"):
        value = row.get(key)
        if not is_missing(value) and not (isinstance(value, list | tuple) and not value):
            raise RowProblem(
                "invalid_row", f"has {key!r}: glmlab records hold images; leave video rows out of this file"
            )
