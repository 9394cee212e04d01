"""Schema-constrained answers (glmlab.structured): the tiny random model's answers always parse.

The random weights would never write JSON on their own, so every parsed answer here is the constraint
at work: local calls (ask, batch, rows of a server batch), the server's `response_format`, and the
client's `schema=`.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from support import API_KEY

from glmlab.errors import InputError
from glmlab.rows import Row
from glmlab.serve import ServerSettings, create_app
from glmlab.structured import Schema

LOCAL = "http://localhost"
NO_THINKING = {"thinking": False, "temperature": 0, "max_new_tokens": 120}
RECEIPT = {
    "type": "object",
    "properties": {
        "total": {"type": "number"},
        "seller": {"type": "string", "maxLength": 12},
        "paid": {"type": "boolean"},
    },
    "required": ["total", "seller", "paid"],
    "additionalProperties": False,
}


class Invoice(BaseModel):
    seller: str = Field(max_length=16)
    total: float
    currency: str = Field(pattern="^(EUR|USD|CNY)$")


def test_schema_of_takes_a_dict_a_pydantic_model_or_json_and_refuses_the_rest():
    assert Schema.of(RECEIPT).json_schema == RECEIPT
    assert Schema.of(Invoice).model is Invoice and Schema.of(Invoice).name == "Invoice"
    assert Schema.of("json").json_schema is None
    assert Schema.of("json").response_format() == {"type": "json_object"}
    assert Schema.of(RECEIPT).response_format() == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": RECEIPT},
    }
    with pytest.raises(
        InputError, match=r"schema='yaml': give a JSON-schema dict, a pydantic model class or 'json'"
    ):
        Schema.of("yaml")
    with pytest.raises(InputError, match=r"schema: a JSON schema of an object or array, not 'string'"):
        Schema.of({"type": "string"})
    assert Schema.of(RECEIPT).parse('{"total": 1}') == (
        None,
        "the answer does not fit the schema: 'seller' is a required property",
    )
    assert Schema.of(RECEIPT).parse('{"total"') == (
        None,
        "the answer is not JSON (Expecting ':' delimiter at character 8)",
    )


def test_ask_with_a_pydantic_schema_returns_a_valid_instance(served_vlm):
    answer = served_vlm.ask(None, "Read the invoice.", schema=Invoice, **NO_THINKING)
    assert answer.error is None and answer.finish_reason == "stop", answer.raw
    assert isinstance(answer.parsed, Invoice)
    assert Invoice.model_validate_json(answer.text) == answer.parsed
    assert answer.to_dict()["parsed"] == answer.parsed.model_dump(mode="json")
    free = served_vlm.ask(None, "Read the invoice.", **NO_THINKING)
    assert free.parsed is None and free.error is None  # without a schema nothing is parsed


def test_every_answer_of_a_batch_fits_a_dict_schema(served_vlm):
    items = [(None, question) for question in ("a?", "What is the total?", "Seller?", "Paid or not?")]
    answers = served_vlm.batch(items, schema=RECEIPT, batch_size=4, **NO_THINKING)
    for answer in answers:
        assert answer.error is None, answer.raw
        jsonschema.validate(answer.parsed, RECEIPT)
        assert json.loads(answer.text) == answer.parsed


def test_a_constrained_row_and_a_free_row_share_a_batch(served_vlm):
    free_alone = served_vlm.chat([{"role": "user", "content": "hello"}], cache=False, **NO_THINKING)
    rows = []
    for schema in (RECEIPT, None):
        request = served_vlm.open_request(
            [{"role": "user", "content": "hello"}], schema=schema, **NO_THINKING
        )
        rows.append(Row.open(request, served_vlm.text_clock()))
    served_vlm.generate_rows(rows)
    constrained, free = (row.stream.answer for row in rows)
    jsonschema.validate(constrained.parsed, RECEIPT)
    assert free.raw == free_alone.raw and free.parsed is None


def test_thinking_stays_outside_the_constraint(served_vlm):
    processor = served_vlm.grammars.processor(Schema.of(RECEIPT), prompt_length=2, thinking_done=False)
    import torch

    think_end = served_vlm.tokenizer.convert_tokens_to_ids("</think>")
    letter = served_vlm.tokenizer.convert_tokens_to_ids("a")
    scores = torch.zeros((1, served_vlm.grammars.vocab_size))
    thinking = processor(torch.tensor([[1, 2, letter, letter]]), scores)
    assert torch.equal(thinking, scores)  # still thinking: every token allowed
    answering = processor(torch.tensor([[1, 2, letter, letter, think_end]]), scores)
    allowed = torch.isfinite(answering[0]).nonzero().flatten().tolist()
    assert allowed == served_vlm.tokenizer.convert_tokens_to_ids(
        ["{"]
    )  # compact JSON: it must open an object


@pytest.fixture(scope="module")
def json_client(served_vlm):
    app = create_app(served_vlm, ServerSettings(model="tiny", api_key=API_KEY))
    with TestClient(app, base_url=LOCAL, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        yield client


def ask_server(client, response_format, **fields):
    body = {
        "messages": [{"role": "user", "content": "Read it."}],
        "max_tokens": 120,
        "temperature": 0,
        "chat_template_kwargs": {"enable_thinking": False},
        "response_format": response_format,
        **fields,
    }
    return client.post("/v1/chat/completions", json=body)


def test_the_server_answers_response_format_json_schema_with_valid_json(json_client):
    response = ask_server(
        json_client, {"type": "json_schema", "json_schema": {"name": "receipt", "schema": RECEIPT}}, n=2
    )
    assert response.status_code == 200, response.text
    for choice in response.json()["choices"]:
        jsonschema.validate(json.loads(choice["message"]["content"]), RECEIPT)
    anything = ask_server(json_client, {"type": "json_object"}, max_tokens=400)
    assert anything.status_code == 200, anything.text
    content = anything.json()["choices"][0]["message"]["content"]
    assert content.startswith("{")  # constrained to an object from its first token, even if cut short


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ({"type": "json_schema"}, "json_schema is required with type json_schema, and only then"),
        ({"type": "xml"}, "response_format.type"),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}},
                },
            },
            "schema: the grammar engine cannot compile it (Regex parsing error at position 3: The parenthesis is not closed.).",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "description": "x" * 70_000}},
            },
            "the schema is over 65,536 characters of JSON",
        ),
    ],
)
def test_a_bad_response_format_is_a_400_that_says_why(json_client, response_format, message):
    response = ask_server(json_client, response_format)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_the_client_sends_the_schema_and_parses_the_answer(server):
    import glmlab

    client = glmlab.Client(server.url, api_key=API_KEY)
    answer = client.ask(
        None, "Read the invoice.", schema=Invoice, thinking=False, temperature=0, max_new_tokens=120
    )
    assert answer.error is None and isinstance(answer.parsed, Invoice)
    assert answer.parsed == Invoice.model_validate_json(answer.text)
