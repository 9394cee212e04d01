"""Tool calls (glmlab.tools): GLM's call format parsed into OpenAI tool_calls, and forced calls that
are valid even from the random tiny model (decoded under the function's JSON schema)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from fastapi.testclient import TestClient
from support import API_KEY

from glmlab.errors import InputError
from glmlab.serve import ServerSettings, create_app
from glmlab.tools import check_choice, forced_call_schema, parse_tool_calls

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "metric": {"type": "boolean"},
    },
    "required": ["city", "days", "metric"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The forecast.", "parameters": WEATHER},
    },
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string", "maxLength": 8}},
                "required": ["q"],
                "additionalProperties": False,
            },
        },
    },
]
QUIET = {"thinking": False, "temperature": 0, "max_new_tokens": 80}


def test_the_glm_call_format_becomes_openai_tool_calls_with_typed_arguments():
    text = (
        "Checking both.<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>007</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n<arg_key>metric</arg_key>\n<arg_value>true</arg_value>\n"
        '</tool_call><tool_call>lookup\n<arg_key>q</arg_key>\n<arg_value>[1, {"a": null}]</arg_value>\n</tool_call>'
    )
    content, calls = parse_tool_calls(text, TOOLS)
    assert content == "Checking both."
    assert [call["function"]["name"] for call in calls] == ["get_weather", "lookup"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "007", "days": 3, "metric": True}
    assert json.loads(calls[1]["function"]["arguments"]) == {"q": '[1, {"a": null}]'}  # q is a string
    _, untyped = parse_tool_calls(text)  # without the schema every value reads as JSON when it can
    assert json.loads(untyped[1]["function"]["arguments"]) == {"q": [1, {"a": None}]}
    assert json.loads(untyped[0]["function"]["arguments"])["city"] == "007"  # not JSON: the text
    assert parse_tool_calls("no calls here") == ("no calls here", [])


def test_tool_choice_is_checked_and_a_forced_call_has_a_schema():
    assert forced_call_schema(TOOLS, "auto") is None and forced_call_schema(TOOLS, "none") is None
    named = forced_call_schema(TOOLS, {"type": "function", "function": {"name": "lookup"}})
    assert named["properties"]["name"] == {"const": "lookup"}
    assert len(forced_call_schema(TOOLS, "required")["anyOf"]) == 2
    with pytest.raises(InputError, match="tool_choice names 'nope', which is not one of the tools"):
        check_choice({"type": "function", "function": {"name": "nope"}}, TOOLS)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forced_call_from_the_tiny_model_is_valid(served_vlm, choice):
    answer = served_vlm.chat(
        [{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, tool_choice=choice, **QUIET
    )
    assert answer.finish_reason == "tool_calls" and len(answer.tool_calls) == 1 and answer.text == ""
    call = answer.tool_calls[0]["function"]
    if isinstance(choice, dict):
        assert call["name"] == "get_weather"
    parameters = next(tool for tool in TOOLS if tool["function"]["name"] == call["name"])["function"][
        "parameters"
    ]
    jsonschema.validate(json.loads(call["arguments"]), parameters)


def test_a_tool_result_goes_back_through_the_template(served_vlm):
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    messages = [
        {"role": "user", "content": "Look it up."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
    ]
    prompt = served_vlm.prepare(messages, thinking=False, tools=TOOLS)
    assert "<tool_call>lookup\n<arg_key>q</arg_key>\n<arg_value>x</arg_value>\n</tool_call>" in prompt.text
    assert "<|observation|>\n<tool_response>\nfound\n</tool_response>" in prompt.text


@pytest.fixture(scope="module")
def tool_client(served_vlm):
    app = create_app(served_vlm, ServerSettings(model="tiny", api_key=API_KEY))
    with TestClient(
        app, base_url="http://localhost", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        yield client


def test_the_server_returns_tool_calls_streamed_or_not(tool_client):
    body = {
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 80,
        "temperature": 0,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    choice = tool_client.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    streamed = tool_client.post("/v1/chat/completions", json={**body, "stream": True}).text
    chunks = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert not any(delta.get("content") for delta in deltas)  # the call's JSON is not sent as text
    (streamed_call,) = next(delta["tool_calls"] for delta in deltas if "tool_calls" in delta)
    assert streamed_call["function"] == call["function"] and streamed_call["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    bad = tool_client.post(
        "/v1/chat/completions",
        json={**body, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    )
    assert bad.status_code == 400 and "not one of the tools" in bad.json()["error"]["message"]


def test_the_openai_client_gets_a_forced_call(server):
    import openai

    client = openai.OpenAI(base_url=server.url, api_key=API_KEY)
    response = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80,
        temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    import glmlab

    answer = glmlab.Client(server.url, api_key=API_KEY).chat(
        [{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice="required", **QUIET
    )
    assert answer.finish_reason == "tool_calls" and len(answer.tool_calls) == 1
