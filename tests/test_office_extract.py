import json

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel, Field
from support import API_KEY, EVAL_DIR, scene

from glmlab.answer import Answer
from glmlab.data import generate_invoices
from glmlab.data.invoice_schema import ANSWER_FIELDS, QUESTIONS
from glmlab.office import FIELD_KINDS, INVOICE, answer_token_bound, extract, parse_answer
from glmlab.office.extract import typed_table
from glmlab.widgets import PRESETS

TRUTH = {
    "invoice_number": "INV-2024-00012",
    "date": "2024-03-15",
    "seller": "Acme Supplies Ltd",
    "buyer": "Harbor Systems Inc.",
    "items": [{"name": "USB-C cable", "quantity": 3, "unit_price": "5.00", "amount": "15.00"}],
    "subtotal": "15.00",
    "tax_rate": "10%",
    "tax": "1.50",
    "total": "16.50",
}


# ---- one schema for the generator, the eval suites and the widget presets ------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_generators_ground_truth_fits_the_invoice_schema(language):
    for record in generate_invoices(4, seed=3, language=language, noise=False, max_items=6):
        fields = record["metadata"]["fields"]
        assert INVOICE.model_validate(fields).model_dump(exclude_none=True) == fields
        assert json.loads(record["answer"]) == fields
        assert record["question"] == QUESTIONS[language]


@pytest.mark.parametrize("suite", ["invoices-en.yaml", "invoices-zh.yaml"])
def test_the_invoice_suites_compare_the_schemas_fields_by_its_kinds(suite):
    spec = yaml.safe_load((EVAL_DIR / suite).read_text())
    (metric,) = spec["metrics"]
    assert metric["options"]["field_kinds"] == FIELD_KINDS
    assert set(FIELD_KINDS) <= set(INVOICE.model_fields)


def test_the_widgets_invoice_presets_ask_for_the_schemas_keys():
    prompts = dict(PRESETS)
    assert prompts["Invoice fields as JSON"].startswith(QUESTIONS["en"])
    assert prompts["发票字段（JSON）"].startswith(QUESTIONS["zh"])
    assert ", ".join(ANSWER_FIELDS) in prompts["Invoice fields as JSON"]
    assert not [prompt for _, prompt in PRESETS if "total_amount" in prompt or "价税合计、" in prompt]


def test_answer_token_bound_counts_the_longest_compact_answer():
    class Small(BaseModel, extra="forbid"):
        name: str = Field(max_length=3)
        count: int = Field(ge=-5, le=100)
        tags: list[bool] = Field(max_length=2)
        note: str | None = Field(default=None, max_length=1)

    longest = '{"name": "😀😀😀", "count": 100, "tags": [false, false], "note": "😀"}'  # 4-byte characters
    # the bound also counts a ", " after the last member of the object and of the list, and the end token
    assert answer_token_bound(Small) == len(longest.encode()) + 2 + 2 + 1
    assert answer_token_bound(INVOICE) == 2831
    with pytest.raises(ValueError, match="unbounded, so no token budget"):
        answer_token_bound({"type": "object", "properties": {"a": {"type": "string"}}})


# ---- answers to rows --------------------------------------------------------------------------------


def test_parse_answer_validates_against_the_schema_and_says_why_a_row_failed():
    assert parse_answer(Answer(text="```json\n" + json.dumps(TRUTH) + "\n```"), INVOICE) == (
        {**TRUTH, "total_in_words": None},
        None,
    )
    assert parse_answer(Answer(text="I cannot read it", finish_reason="length"), INVOICE) == (
        None,
        "no JSON object in the answer (cut at max_new_tokens: raise it): 'I cannot read it'",
    )
    assert parse_answer(Answer(text=json.dumps({**TRUTH, "total": "16.5"})), INVOICE) == (
        None,
        "does not fit Invoice: total: String should match pattern '^-?\\d{1,10}\\.\\d{2}$'",
    )
    assert parse_answer(Answer(text="", finish_reason="error", error="bad image"), INVOICE) == (
        None,
        "bad image",
    )
    assert parse_answer(Answer(text='{"x": 1}'), {"type": "object"}) == ({"x": 1}, None)


def test_typed_table_gives_each_field_its_schemas_type():
    records = [
        {"file": "a.png", "page": 1, "values": {**TRUTH, "total_in_words": None}, "error": None},
        {"file": "b.pdf", "page": 2, "values": {}, "error": "no JSON object in the answer: ''"},
    ]
    table = typed_table(records, INVOICE)
    assert table.dtypes.astype(str).to_dict() == {
        "file": "string",
        "page": "Int64",
        "invoice_number": "string",
        "date": "datetime64[s]",
        "seller": "string",
        "buyer": "string",
        "items": "object",
        "subtotal": "Float64",
        "tax_rate": "string",
        "tax": "Float64",
        "total": "Float64",
        "total_in_words": "string",
        "error": "object",
    }
    assert table.loc[0, "total"] == 16.5 and table.loc[0, "date"] == pd.Timestamp("2024-03-15")
    assert table.loc[1].isna()[["invoice_number", "date", "total"]].all()
    assert table["error"].tolist() == [None, "no JSON object in the answer: ''"]


# ---- extract on the tiny model ---------------------------------------------------------------------


SMALL = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^[a-z]{1,3}$", "maxLength": 3},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["code", "count"],
    "additionalProperties": False,
}


def test_extract_reads_one_row_per_file_and_pdf_page_and_every_row_parses(vlm, tmp_path):
    scene().save(tmp_path / "a.png")
    scene(colour="blue").save(tmp_path / "b.pdf", save_all=True, append_images=[scene(colour="green")])
    (tmp_path / "c.png").write_bytes(b"not an image")
    table = extract(vlm, tmp_path, SMALL, batch_size=2, progress=False)
    assert table[["file", "page"]].astype(object).values.tolist() == [
        [str(tmp_path / "a.png"), 1],
        [str(tmp_path / "b.pdf"), 1],
        [str(tmp_path / "b.pdf"), 2],
        [str(tmp_path / "c.png"), pd.NA],
    ]
    assert table["error"][:3].tolist() == [None] * 3  # the schema constrains even random weights
    assert table.loc[3, "error"].startswith(str(tmp_path / "c.png"))
    assert table.dtypes[["code", "count"]].astype(str).tolist() == ["string", "Int64"]
    assert table["code"][:3].str.fullmatch("[a-z]{1,3}").all() and table["count"][:3].between(0, 9).all()
    confidences = table[["confidence_code", "confidence_count"]]
    assert confidences[:3].gt(0).all().all() and confidences[:3].le(1).all().all()
    assert confidences.loc[3].isna().all()  # no answer, no confidence
    assert table.attrs["pages"] == 4 and table.attrs["seconds"] > 0


@pytest.mark.slow
def test_extract_gives_parsed_invoice_rows_on_the_tiny_model(vlm, tmp_path):
    (record,) = generate_invoices(1, seed=5, language="en", out_dir=tmp_path)
    table = extract(vlm, record["images"], progress=False)
    assert table["error"].tolist() == [None]
    fields = [name for name in INVOICE.model_fields if name != "total_in_words"]
    assert table.loc[0, fields].notna().all()  # validated by the schema: a value in every field


def test_extract_through_a_client_reads_the_same_rows_as_the_local_model(served_vlm, server, tmp_path):
    """A Client sends the schema as response_format and asks page by page; the server constrains the
    answer with the same engine, so the rows equal the local model's (greedy), without confidences."""
    import glmlab

    scene().save(tmp_path / "a.png")
    scene(colour="blue").save(tmp_path / "b.pdf", save_all=True, append_images=[scene(colour="green")])
    (tmp_path / "c.png").write_bytes(b"not an image")
    local = extract(served_vlm, tmp_path, SMALL, confidence=False, progress=False)
    remote = extract(glmlab.Client(server.url, api_key=API_KEY), tmp_path, SMALL, progress=False)
    assert list(remote.columns) == list(local.columns)  # a client's rows carry no confidence columns
    assert remote["error"][:3].tolist() == [None] * 3
    pd.testing.assert_frame_equal(remote.drop(columns="error"), local.drop(columns="error"))
    assert remote.loc[3, "error"].startswith(str(tmp_path / "c.png"))
