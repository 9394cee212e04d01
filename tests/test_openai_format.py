"""glmlab.openai_format: the client's and the server's halves of the OpenAI mapping undo each other."""

from __future__ import annotations

import numpy as np
import pytest
from support import scene

from glmlab.errors import InputError
from glmlab.images import image_to_data_url
from glmlab.openai_format import (
    from_openai_messages,
    generation_options,
    request_fields,
    thinking_fields,
    to_openai_messages,
)


def as_data_url(image):
    return {"type": "image_url", "image_url": {"url": image_to_data_url(image)}}


def test_generation_options_survive_the_trip_through_an_openai_request():
    options = {"max_new_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 2, "seed": 3, "stop": "END"}
    fields = request_fields(options)
    assert fields == {
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 2,
        "seed": 3,
        "stop": ["END"],
    }
    assert generation_options(fields) == {**options, "stop": ["END"]}


def test_server_side_reads_openai_spellings():
    assert generation_options({"max_tokens": 4, "max_completion_tokens": 9, "top_k": -1}) == {
        "max_new_tokens": 9,
        "top_k": 0,
    }


def test_unknown_options_and_do_sample_false():
    with pytest.raises(InputError, match="temprature: not a generation option"):
        request_fields({"temprature": 1})
    assert request_fields({"do_sample": False}) == {"temperature": 0}
    assert thinking_fields(None) == {} and thinking_fields(0) == {
        "chat_template_kwargs": {"enable_thinking": False}
    }


def test_messages_and_their_images_survive_the_trip_through_an_openai_request(tmp_path):
    path = tmp_path / "red.png"
    scene(colour="red").save(path)
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "image", "path": str(path)}, {"type": "text", "text": "Colour?"}],
        },
        {"role": "assistant", "content": "red", "reasoning_content": "looked"},
        {"role": "user", "content": [as_data_url(scene(56, 84, "blue")), {"type": "text", "text": "And?"}]},
    ]
    sent = to_openai_messages(messages, as_data_url)
    assert [part["type"] for part in sent[1]["content"]] == ["image_url", "text"]
    received = from_openai_messages(sent, local_paths=False)
    assert [m["role"] for m in received] == ["system", "user", "assistant", "user"]
    assert received[2] == {"role": "assistant", "content": "red", "reasoning_content": "looked"}
    first, second = received[1]["content"][0]["image"], received[3]["content"][0]["image"]
    assert np.array_equal(np.asarray(first), np.asarray(scene(colour="red")))
    assert second.size == (56, 84) and received[3]["content"][1] == {"type": "text", "text": "And?"}


def test_the_server_side_never_reads_a_local_path(tmp_path):
    path = tmp_path / "red.png"
    scene().save(path)
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(path)}}]}
    with pytest.raises(
        InputError, match=r"messages\[0\]\.content\[0\]: image_url\.url .*does not read paths"
    ):
        from_openai_messages([message], local_paths=False)
    assert from_openai_messages([message])[0]["content"][0]["image"].size == (112, 112)
