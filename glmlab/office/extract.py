"""Documents to a table: `extract(model, files)` reads every page into one typed row of schema fields.

    table = glmlab.office.extract(vlm, ["a.pdf", "b.png"])  # INVOICE fields, one row per page
    table[table.error.isna()]                               # the rows that parsed

Each page is asked the schema's question in batches, with decoding constrained to the schema
(glmlab.structured: xgrammar on a local model, OpenAI's `response_format` through a Client), so even
the random tiny model's rows parse; the parsed answer (validated by pydantic for a model, by
jsonschema for a dict) becomes a row: `file`, `page` (1-based), one column per top-level field typed from the schema
(amount fields Float64, date fields datetime64, integers Int64, other strings `string`; lists and
objects stay Python values), `error` (None when the row parsed, else why not), and for local models
`confidence_<field>`: the mean probability of the value's tokens (glmlab.confidence), so a reviewer
looks first at the values the model was unsure of.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from glmlab.answer import Answer
from glmlab.batching import item_messages
from glmlab.data.invoice_schema import FIELD_KINDS, INVOICE, QUESTIONS, answer_token_bound, json_schema
from glmlab.errors import GlmlabError, InputError
from glmlab.eval.extract import extract_json
from glmlab.images import to_pil
from glmlab.interface import DEFAULT_ADAPTER, LocalModel, Model

Schema = type[BaseModel] | dict[str, Any]


def extract(
    model: Model,
    files: str | Path | Sequence[str | Path],
    schema: Schema = INVOICE,
    *,
    question: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    confidence: bool = True,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """One row per file, or per page of a PDF, holding the `schema` fields the model read from it.

    model: a loaded VLM or a Client. files: paths (a folder: its files, sorted). question: what each
    page is asked; default the invoice question for INVOICE, else one naming the schema's keys.
    max_new_tokens: default the schema's longest compact answer (`answer_token_bound`), so a
    constrained answer is never cut. confidence: add the per-field confidence columns (local models
    only: one extra forward pass per page). options: more generation options (adapter, thinking,
    temperature, ...); the defaults are greedy without thinking.
    The frame's `attrs` hold `seconds` (the whole call) and `pages`.
    """
    start = time.perf_counter()
    pages = list(_pages(files))
    question = question or default_question(schema)
    generation = {
        "thinking": False,
        "temperature": 0,
        "max_new_tokens": max_new_tokens or answer_token_bound(schema),
        **options,
        "schema": schema,
    }
    readable = [index for index, page in enumerate(pages) if page.error is None]
    items = [([pages[index].image], question) for index in readable]
    answers: list[Answer | None] = [None] * len(pages)
    for index, answer in zip(
        readable, _answer_all(model, items, batch_size, progress, generation), strict=True
    ):
        answers[index] = answer
    records = []
    for page, answer in zip(pages, answers, strict=True):
        values, error = (None, page.error) if answer is None else parse_answer(answer, schema)
        records.append({"file": page.file, "page": page.number, "values": values or {}, "error": error})
    table = typed_table(records, schema)
    if confidence and isinstance(model, LocalModel):
        chosen = [answers[index] for index in readable]
        add_confidences(table, model, items, chosen, readable, generation, progress=progress)
    table.attrs.update(seconds=time.perf_counter() - start, pages=len(pages))
    return table


class _Page:
    """One page to read: its file, 1-based page number and image, or why it could not be read."""

    def __init__(self, file: str, number: int | None, image: Any = None, error: str | None = None):
        self.file, self.number, self.image, self.error = file, number, image, error


def _pages(files: str | Path | Sequence[str | Path]):
    paths = [files] if isinstance(files, str | Path) else list(files)
    for path in paths:
        path = Path(path)
        for file in sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]:
            try:
                images = to_pil(file)
            except GlmlabError as error:
                yield _Page(str(file), None, error=str(error))
                continue
            for number, image in enumerate(images, start=1):
                yield _Page(str(file), number, image)


def default_question(schema: Schema) -> str:
    """The invoice generator's own question for INVOICE; else one that names the schema's keys."""
    if schema is INVOICE:
        return QUESTIONS["en"]
    keys = ", ".join(json_schema(schema).get("properties", {}))
    return f"Extract the fields as JSON with keys: {keys}."


def _answer_all(
    model: Model, items: list[Any], batch_size: int, progress: bool, generation: dict[str, Any]
) -> list[Answer]:
    """A local model answers in batches; a client asks one page at a time (a server batches them)."""
    if isinstance(model, LocalModel):
        return model.batch(items, batch_size=batch_size, progress=progress, **generation)
    from tqdm.auto import tqdm

    answers = []
    for images, question in tqdm(items, desc="pages", disable=not progress):
        try:
            answers.append(model.ask(images, question, **generation))
        except GlmlabError as error:
            answers.append(Answer(text="", finish_reason="error", error=str(error)))
    return answers


def parse_answer(answer: Answer, schema: Schema) -> tuple[dict[str, Any] | None, str | None]:
    """(the answer's fields, None), or (None, why they could not be read) for one page."""
    cut = " (cut at max_new_tokens: raise it)" if answer.finish_reason == "length" else ""
    if answer.error is not None:
        return None, answer.error + cut
    parsed = answer.parsed  # set by schema-constrained generation (glmlab.structured)
    value = parsed.model_dump(mode="json") if isinstance(parsed, BaseModel) else parsed
    if value is None:
        value = extract_json(answer.text)
    if value is None:  # an answer without a schema: the JSON object in its text
        return None, f"no JSON object in the answer{cut}: {answer.text[:80]!r}"
    if not isinstance(value, dict):
        return None, f"the answer's JSON is a {type(value).__name__}, not an object: {answer.text[:80]!r}"
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(value).model_dump(mode="json"), None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the object"
            return None, f"does not fit {schema.__name__}: {where}: {first['msg']}"
    return value, None


def typed_table(records: list[dict[str, Any]], schema: Schema) -> pd.DataFrame:
    """The rows as a DataFrame: file, page, one typed column per schema field, error."""
    properties = json_schema(schema).get("properties", {})
    table = pd.DataFrame(
        {
            "file": pd.Series([record["file"] for record in records], dtype="string"),
            "page": pd.Series([record["page"] for record in records], dtype="Int64"),
        }
    )
    for name, spec in properties.items():
        column = pd.Series([record["values"].get(name) for record in records], dtype=object)
        table[name] = _typed(column, spec, FIELD_KINDS.get(name))
    table["error"] = pd.Series([record["error"] for record in records], dtype=object)
    return table


def _typed(column: pd.Series, spec: dict[str, Any], kind: str | None) -> pd.Series:
    types = {option.get("type") for option in spec.get("anyOf", [spec])} - {"null"}
    if kind == "amount":
        return pd.to_numeric(column, errors="coerce").astype("Float64")
    if kind == "date":
        dates = pd.to_datetime(column, format="%Y-%m-%d", errors="coerce")  # NaT: not a calendar date
        return dates.astype("datetime64[s]")
    if types == {"integer"}:
        return column.astype("Int64")
    if types == {"number"}:
        return column.astype("Float64")
    if types == {"boolean"}:
        return column.astype("boolean")
    if types == {"string"}:
        return column.astype("string")
    return column  # lists and objects


def add_confidences(
    table: pd.DataFrame,
    model: LocalModel,
    items: list[Any],
    answers: list[Answer | None],
    rows: list[int],
    generation: dict[str, Any],
    *,
    progress: bool = False,
) -> None:
    """Add `confidence_<field>` columns (NaN where a row did not parse) from one forward pass per page."""
    from tqdm.auto import tqdm

    from glmlab.confidence import field_confidences

    fields = [name for name in table.columns if name not in ("file", "page", "error")]
    values = {name: [float("nan")] * len(table) for name in fields}
    adapter = generation.get("adapter", DEFAULT_ADAPTER)
    pages = list(zip(items, answers, rows, strict=True))
    for item, answer, row in tqdm(pages, desc="confidence", disable=not progress):
        if answer is None or table.at[row, "error"] is not None:
            continue
        try:
            features = model.prepare(item_messages(item), thinking=generation.get("thinking")).features
        except InputError:
            continue
        for name, confidence in field_confidences(model, features, answer.raw, adapter=adapter).items():
            if name in values:
                values[name][row] = confidence
    for name in fields:
        table[f"confidence_{name}"] = pd.Series(values[name], index=table.index, dtype="Float64")
