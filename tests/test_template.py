"""The tiny checkpoint's chat template follows the real GLM-4.6V template's behaviour."""

import pytest

from glmlab import tiny
from glmlab.prompts import render


@pytest.fixture(scope="module")
def processor():
    return tiny.make_processor()


IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"


def test_generation_prompt_with_thinking_on_by_default(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    assert render(processor, messages) == f"[gMASK]<sop><|user|>\n{IMAGE}What is it?<|assistant|>"


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
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nQ1<|assistant|>\n<think></think>\nA1<|user|>\nQ2<|assistant|>"
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
    for token in ["<think>", "</think>", "<|begin_of_box|>", "<|end_of_box|>", "/nothink"]:
        assert len(processor.tokenizer.encode(token, add_special_tokens=False)) == 1, token


def test_image_placeholder_expands_to_grid_over_four(processor):
    from PIL import Image

    text = render(
        processor, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    )
    features = processor(text=[text], images=[Image.new("RGB", (112, 56))], return_tensors="pt")
    grid = features["image_grid_thw"][0].tolist()
    assert grid == [1, 4, 8]
    assert int((features["input_ids"] == 151363).sum()) == 1 * 4 * 8 // 4
