"""How sure a local model was of each value it wrote: token probabilities by teacher forcing.

Given a prepared prompt and an answer, one forward pass over prompt + answer tokens gives the model's
probability of every answer token given everything before it (teacher forcing: the answer is fed in,
not sampled). `field_confidences` maps a JSON answer's top-level values to their tokens and returns
the mean probability of each value's tokens: low for a value the model hesitated over, whatever it
finally wrote. Under a schema constraint this is the unconstrained model's probability, so a value
the grammar forced reads as unsure, which is what a reviewer wants to see.

The model is an argument (`glmlab.VLM`, or anything with `model`, `tokenizer`, `lock`, `device`,
`dtype` and `using_adapter`), so this module adds a measurement without touching generation.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from glmlab.interface import DEFAULT_ADAPTER, AdapterChoice

_DECODER = json.JSONDecoder()


def token_probabilities(
    vlm: Any, features: Any, answer_ids: list[int], *, adapter: AdapterChoice = DEFAULT_ADAPTER
) -> list[float]:
    """The model's probability of each of `answer_ids` after the prompt `features` and the ids before it.

    features: a prepared prompt's processor output (`vlm.prepare(...).features`), one row.
    Only the answer's logits are computed (`logits_to_keep`), so the prompt's length costs no memory
    beyond the forward pass itself.
    """
    if not answer_ids:
        return []
    answer = torch.tensor([answer_ids], dtype=features["input_ids"].dtype)
    inputs = {}
    for key, value in features.items():
        if torch.is_tensor(value) and value.shape == features["input_ids"].shape:
            tail = answer if key == "input_ids" else torch.full_like(answer, int(key == "attention_mask"))
            value = torch.cat([value, tail], dim=1)  # attention 1, token types 0 (text) for the answer
        inputs[key] = value.to(vlm.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(vlm.dtype)
    with vlm.lock, vlm.using_adapter(adapter), torch.inference_mode():
        logits = vlm.model(**inputs, logits_to_keep=len(answer_ids) + 1, use_cache=False).logits
    # logits at position p predict token p + 1: the last prompt position predicts the first answer token
    predicting = logits[0, -(len(answer_ids) + 1) : -1].float().log_softmax(dim=-1)
    targets = answer[0].to(predicting.device)
    return predicting.gather(1, targets[:, None])[:, 0].exp().tolist()


def value_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character spans of the values of the first top-level JSON object in `text`, by key.

    A string value's span leaves out its quotes. {} when `text` holds no complete JSON object there.
    Keys and values are read by the standard library's own JSON decoder; only the walk over the
    object's members is written here.
    """
    start = text.find("{")
    if start < 0:
        return {}
    spans: dict[str, tuple[int, int]] = {}
    position = _skip_space(text, start + 1)
    try:
        while position < len(text) and text[position] != "}":
            key, position = _DECODER.raw_decode(text, position)
            position = _skip_space(text, position)
            if text[position] != ":":
                return {}
            value_start = _skip_space(text, position + 1)
            value, value_end = _DECODER.raw_decode(text, value_start)
            quoted = isinstance(value, str)
            spans[key] = (value_start + quoted, value_end - quoted)
            position = _skip_space(text, value_end)
            if text[position] == ",":
                position = _skip_space(text, position + 1)
        if position >= len(text):
            return {}
    except (ValueError, IndexError):
        return {}
    return spans


def field_confidences(
    vlm: Any, features: Any, answer_text: str, *, adapter: AdapterChoice = DEFAULT_ADAPTER
) -> dict[str, float]:
    """The mean probability of the tokens of each top-level value of the JSON object in `answer_text`.

    answer_text: what the model wrote after the prompt (an answer's `raw`); it is tokenised again,
    which gives the model's own tokens for text it generated. A token counts for a value when its
    characters overlap the value's (an empty string value counts the token holding its quotes).
    """
    spans = value_spans(answer_text)
    if not spans:
        return {}
    encoded = vlm.tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=True)
    probabilities = token_probabilities(vlm, features, encoded["input_ids"], adapter=adapter)
    offsets = encoded["offset_mapping"]
    confidences = {}
    for key, (start, end) in spans.items():
        low, high = (start, end) if end > start else (start - 1, end + 1)
        chosen = [
            probability
            for probability, (first, last) in zip(probabilities, offsets, strict=True)
            if first < high and last > low
        ]
        confidences[key] = sum(chosen) / len(chosen) if chosen else float("nan")
    return confidences


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position
