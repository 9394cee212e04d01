"""glmlab.Client against a real glmlab server: the VLM interface, remotely, with the same Answers."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys

import pytest
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from support import API_KEY, scene

from glmlab.answer import Answer
from glmlab.client import Client, ServerError, _raw_piece, normalise_base_url
from glmlab.errors import InputError

GREEDY = {"temperature": 0, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, api_key=API_KEY, retries=0)


def test_ask_answers_like_the_local_model(client, served_vlm):
    remote = client.ask(scene(), "What colour?", adapter="alpha", **GREEDY)
    local = served_vlm.ask(scene(), "What colour?", adapter="alpha", **GREEDY)
    assert isinstance(remote, Answer)
    assert (remote.text, remote.raw, remote.finish_reason) == (local.text, local.raw, local.finish_reason)
    assert remote.usage == local.usage and remote.usage.image_tokens == 16
    assert remote.model == "alpha"


def test_timing_is_measured_at_the_client(client):
    answer = client.ask(scene(), "Describe.", **GREEDY)
    assert 0 < answer.timing.ttft_s <= answer.timing.total_s and answer.timing.decode_tokens_per_s > 0


def test_default_model_is_the_servers_base_model_and_none_means_base(client, served_vlm):
    assert client.base_model == "tiny"
    default = client.ask(None, "Hi", **GREEDY)
    assert default.model == "tiny" and default.text == client.ask(None, "Hi", adapter=None, **GREEDY).text
    assert default.text == served_vlm.ask(None, "Hi", adapter=None, **GREEDY).text


def test_thinking_false_maps_to_chat_template_kwargs(client, served_vlm):
    remote = client.ask(None, "Hi", thinking=False, **GREEDY)
    assert remote.raw == served_vlm.ask(None, "Hi", thinking=False, adapter=None, **GREEDY).raw


def test_chat_takes_transformers_and_openai_messages(client, served_vlm):
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": scene(colour="blue")},
                {"type": "text", "text": "Colour?"},
            ],
        },
    ]
    assert (
        client.chat(messages, adapter="beta", **GREEDY).raw
        == served_vlm.chat(messages, adapter="beta", **GREEDY).raw
    )


def test_stream_pieces_join_to_the_answer_and_stop_ends_early(client):
    stream = client.stream(scene(), "Describe.", temperature=0, max_new_tokens=12)
    pieces = list(stream)
    assert len(pieces) >= 2 and "".join(pieces) == stream.answer.raw == stream.text
    stopped = client.stream(scene(), "Describe.", temperature=0, max_new_tokens=500)
    for _ in stopped:
        stopped.stop()
    assert (
        0
        < len(stopped.answer.raw)
        < len(client.ask(scene(), "Describe.", temperature=0, max_new_tokens=40).raw)
    )


def test_reasoning_deltas_become_think_tags_like_local_output():
    thinking = False
    pieces = []
    for delta in (
        ChoiceDelta(reasoning_content="\nIt is "),
        ChoiceDelta(reasoning_content="red.\n"),
        ChoiceDelta(content="\nRed."),
        ChoiceDelta(reasoning="x"),
    ):
        piece, thinking = _raw_piece(delta, thinking)
        pieces.append(piece)
    assert pieces == ["<think>\nIt is ", "red.\n", "</think>\nRed.", "<think>x"]
    answer = Answer.from_raw("".join(pieces[:3]))
    assert (answer.thinking, answer.text) == ("It is red.", "Red.")


def test_a_missing_adapter_falls_back_with_a_warning(server, caplog):
    fallback = Client(server.url, api_key=API_KEY, model="retired", fallback_model="alpha", retries=0)
    with caplog.at_level(logging.WARNING, logger="glmlab.client"):
        answer = fallback.ask(None, "Hi", **GREEDY)
    assert answer.model == "alpha" and "using the fallback 'alpha'" in caplog.text


def test_a_missing_adapter_without_fallback_is_a_server_error_naming_url_and_status(client):
    with pytest.raises(
        ServerError, match=r"http://127\.0\.0\.1:\d+/v1: the server answered 404: model 'retired'"
    ) as caught:
        client.ask(None, "Hi", adapter="retired", **GREEDY)
    assert caught.value.status == 404 and caught.value.code == "model_not_found"


def test_a_bad_key_is_a_server_error(server):
    with pytest.raises(ServerError, match="answered 401: missing or wrong API key"):
        Client(server.url, api_key="wrong", retries=0).models()


def test_an_unreachable_server_is_a_clear_error_after_retries():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServerError, match=r"could not connect .* after 1 retries; is the server running"):
        Client(f"http://127.0.0.1:{port}", retries=1, timeout=5).ask(None, "Hi", adapter="tiny")


def test_models_health_and_adapter_management(client, adapters):
    assert client.models() == ["tiny", "alpha", "beta"]
    assert client.health()["status"] == "ok"
    assert client.load_adapter(adapters["gamma"]) == "gamma"
    assert "gamma" in client.models() and client.ask(None, "Hi", adapter="gamma", **GREEDY).model == "gamma"
    client.unload_adapter("gamma")
    assert "gamma" not in client.models()


def test_bad_options_and_inputs_fail_before_sending(client):
    with pytest.raises(InputError, match="beam_width: not a generation option"):
        client.ask(None, "Hi", beam_width=2)
    with pytest.raises(InputError, match="no such file"):
        client.ask("/missing.png", "Hi")
    with pytest.raises(ServerError, match="answered 400: invalid request: temperature"):
        client.ask(None, "Hi", temperature=-1)


def test_images_can_be_downscaled_before_sending(client):
    messages = client.openai_messages(
        [{"role": "user", "content": [{"type": "image", "image": scene(448, 448)}]}],
        max_image_pixels=112 * 112,
    )
    assert client.ask(scene(448, 448), "?", max_image_pixels=112 * 112, **GREEDY).usage.image_tokens == 16
    assert messages[0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_base_urls_are_normalised():
    assert normalise_base_url("http://host:8080") == "http://host:8080/v1"
    assert normalise_base_url("http://host:8080/v1/") == "http://host:8080/v1"
    with pytest.raises(InputError, match="not a server URL"):
        normalise_base_url("localhost:8080")


def test_the_client_does_not_import_the_model_stack():
    code = "import sys, glmlab.client, glmlab.integrations.comfyui; print('torch' in sys.modules, 'transformers' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False False"
    )
