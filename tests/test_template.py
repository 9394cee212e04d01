"""The tiny checkpoint's chat template follows the real GLM-4.6V template's behaviour.

Expected strings are what the published GLM-4.6V / GLM-4.5 templates render for the same messages
(tools, tool calls and tool results as in GLM-4.5's template, which GLM-4.6V shares).
"""

import json

import pytest

from glmlab import tiny
from glmlab.prompts import render


@pytest.fixture(scope="module")
def processor():
    return tiny.make_processor()


IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"


def test_generation_prompt_with_thinking_on_by_default(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    expected = f"[gMASK]<sop><|user|>\n{IMAGE}What is it?<|assistant|>\n"  # the model opens <think> itself
    assert render(processor, messages) == expected
    assert render(processor, messages, thinking=True) == expected


def test_thinking_off_appends_nothink_and_prefills_empty_think(processor):
    messages = [{"role": "user", "content": "Hi"}]
    assert (
        render(processor, messages, thinking=False)
        == "[gMASK]<sop><|user|>\nHi/nothink<|assistant|>\n<think></think>\n"
    )


def test_system_turn_and_earlier_assistant_keeps_only_empty_think(processor):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>long reasoning</think>A1"},
        {"role": "user", "content": "Q2"},
    ]
    assert render(processor, messages) == (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nQ1<|assistant|>\n<think></think>\nA1<|user|>\nQ2<|assistant|>\n"
    )


def test_reasoning_after_last_user_survives(processor):
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning_content": "why"},
    ]
    assert render(processor, messages, add_generation_prompt=False) == (
        "[gMASK]<sop><|user|>\nQ<|assistant|>\n<think>why</think>\nA"
    )


def test_special_tokens_have_the_real_ids(processor):
    ids = processor.tokenizer.convert_tokens_to_ids(
        ["[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|image|>"]
    )
    assert ids == [151331, 151333, 151336, 151337, 151363]
    assert processor.image_token_id == 151363


def test_single_tokens_encode_as_one_token(processor):
    for token in tiny.TEXT_SINGLE_TOKENS:  # thinking, boxes, /nothink and the tool-call tags
        assert len(processor.tokenizer.encode(token, add_special_tokens=False)) == 1, token
    assert {"<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>", "<tool_response>"} <= set(
        tiny.TEXT_SINGLE_TOKENS
    )


def test_the_merge_for_llama_cpp_never_applies(processor):
    """llama.cpp refuses a BPE tokenizer without merges, so the tiny one lists one that can never fire:
    every text encodes as with no merges at all, into single-byte tokens."""
    from tokenizers import Tokenizer

    backend = processor.tokenizer.backend_tokenizer
    spec = json.loads(backend.to_str())
    assert [tuple(merge) for merge in spec["model"]["merges"]] == [tiny.NEVER_FIRING_MERGE]
    bare = Tokenizer.from_str(json.dumps({**spec, "model": {**spec["model"], "merges": []}}))
    probe = (
        " a aa  aaa a_ Ġa Ġaa aaaa \n \t 3.33 🦙 I've 'RE ---=== нещо 我想在apple工作 ``` Hello, world!"
        " What colour is the square?"
    )
    ids = backend.encode(probe, add_special_tokens=False).ids
    assert ids == bare.encode(probe, add_special_tokens=False).ids
    assert max(ids) < 256 and len(ids) == len(probe.encode("utf-8"))


def test_image_placeholder_expands_to_grid_over_four(processor):
    from PIL import Image

    text = render(
        processor, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    )
    features = processor(text=[text], images=[Image.new("RGB", (112, 56))], return_tensors="pt")
    grid = features["image_grid_thw"][0].tolist()
    assert grid == [1, 4, 8]
    assert int((features["input_ids"] == 151363).sum()) == 1 * 4 * 8 // 4


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city, °C",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS_TURN = (
    "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city, °C", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n'
    "</tools>\n\nFor each function call, output the function name and arguments within the following XML "
    "format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
    "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}


def test_tools_are_listed_as_json_in_a_system_turn_before_the_conversation(processor):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Zürich?"}]
    assert render(processor, messages, tools=[WEATHER]) == (
        f"[gMASK]<sop>{TOOLS_TURN}<|system|>\nBe brief.<|user|>\nWeather in Zürich?<|assistant|>\n"
    )
    assert TOOLS_TURN not in render(processor, messages)


def test_assistant_tool_calls_render_as_glm_xml_with_json_for_non_string_values(processor):
    messages = [
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "need data",
            "tool_calls": [CALL],
        },
    ]
    assert render(processor, messages, add_generation_prompt=False) == (
        "[gMASK]<sop><|user|>\nQ<|assistant|>\n<think>need data</think>\nLet me check.\n"
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>"
    )


def test_tool_results_share_one_observation_turn_each_in_its_tool_response(processor):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL, CALL]},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": "sunny"},
    ]
    assert render(processor, messages, thinking=False) == (
        "[gMASK]<sop><|user|>\nWeather in Paris?/nothink<|assistant|>\n<think></think>"
        + "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>"
        * 2
        + '<|observation|>\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\nsunny\n'
        "</tool_response><|assistant|>\n<think></think>\n"
    )


def test_a_tool_result_may_carry_an_image_that_the_processor_expands(processor):
    from PIL import Image

    messages = [
        {"role": "user", "content": "Zoom in."},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "zoom", "arguments": {}}}]},
        {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "crop"}]},
    ]
    text = render(processor, messages)
    assert text.endswith(f"<|observation|>\n<tool_response>\n{IMAGE}crop\n</tool_response><|assistant|>\n")
    features = processor(text=[text], images=[Image.new("RGB", (112, 56))], return_tensors="pt")
    assert features["image_grid_thw"][0].tolist() == [1, 4, 8]
    assert int((features["input_ids"] == 151363).sum()) == 1 * 4 * 8 // 4
