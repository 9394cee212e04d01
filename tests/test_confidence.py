import pytest
import torch

from glmlab import prompts
from glmlab.confidence import field_confidences, token_probabilities, value_spans


def test_value_spans_finds_each_top_level_value_without_quotes():
    text = 'Sure: {"a": "xy z", "b" : 12,"c": [1, {"d": 2}], "e": ""} trailing'
    spans = value_spans(text)
    assert {key: text[start:end] for key, (start, end) in spans.items()} == {
        "a": "xy z",
        "b": "12",
        "c": '[1, {"d": 2}]',
        "e": "",
    }
    assert value_spans('{"a": 1, "b": ') == {} and value_spans("no json") == {}


def test_teacher_forced_probabilities_equal_the_probabilities_generation_saw(vlm, red_image):
    prompt = vlm.prepare(prompts.question_messages(red_image, "What is this?"), thinking=False)
    with torch.inference_mode():
        output = vlm.model.generate(
            **prompt.features,
            max_new_tokens=8,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    # raw logits: the scores generate reports come after its processors (the repetition penalty)
    ids = output.sequences[0, prompt.features["input_ids"].shape[1] :].tolist()
    seen = [
        torch.softmax(scores[0].float(), -1)[token].item()
        for scores, token in zip(output.logits, ids, strict=True)
    ]
    assert token_probabilities(vlm, prompt.features, ids) == pytest.approx(seen, rel=1e-4)


def test_field_confidence_is_the_mean_probability_of_the_value_tokens(vlm, red_image):
    prompt = vlm.prepare(prompts.question_messages(red_image, "Read it."), thinking=False)
    text = '{"total": "12.50", "seller": "Acme"}'
    encoded = vlm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    probabilities = token_probabilities(vlm, prompt.features, encoded["input_ids"])
    inside = {
        key: [
            p
            for p, (a, b) in zip(probabilities, encoded["offset_mapping"], strict=True)
            if a < end and b > start
        ]
        for key, (start, end) in value_spans(text).items()
    }
    confidences = field_confidences(vlm, prompt.features, text)
    assert list(confidences) == ["total", "seller"]
    assert all(len(tokens) >= 1 for tokens in inside.values())
    assert confidences == pytest.approx({key: sum(tokens) / len(tokens) for key, tokens in inside.items()})
    assert all(0 < value <= 1 for value in confidences.values())
