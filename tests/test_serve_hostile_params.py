"""Hostile generation parameters, over-long prompts, stalled readers and long stop strings: each is a 400 or
a bounded cost, for the library and the server alike; /openapi.json declares every answer."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import httpx
import hypothesis
import pytest
import uvicorn
from fastapi.testclient import TestClient

from glmlab.errors import InputError
from glmlab.generation import StopStrings, TokenClock, interruptible
from glmlab.serve import ServerSettings, create_app
from glmlab.serve.errors import ErrorResponse
from glmlab.serve.schemas import completion_body
from glmlab.settings import GenerationSettings

QUESTION = [{"role": "user", "content": "x"}]


def post(client, **body):
    return client.post("/v1/chat/completions", json={"messages": QUESTION, **body})


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return ErrorResponse.model_validate(response.json()).error.model_dump()


@pytest.fixture(scope="module")
def client(served_vlm):
    with TestClient(
        create_app(served_vlm), base_url="http://localhost", raise_server_exceptions=False
    ) as test_client:
        yield test_client


# ---- sampling values ---------------------------------------------------------------------------


def test_a_temperature_near_zero_samples_as_0_01_instead_of_overflowing(served_vlm, client):
    """1e-300 divided the logits into inf (a 500 before); it now samples as vLLM's floor, 0.01."""
    assert GenerationSettings(temperature=1e-300).temperature == 0.01
    floor = served_vlm.ask(None, "x", temperature=0.01, seed=3, max_new_tokens=5, cache=False)
    tiny = served_vlm.ask(None, "x", temperature=1e-300, seed=3, max_new_tokens=5, cache=False)
    assert tiny.raw == floor.raw and tiny.usage.completion_tokens == 5
    response = post(client, temperature=1e-300, seed=3, max_tokens=5)
    assert response.status_code == 200, response.text
    assert response.json()["choices"] == completion_body("id", "tiny", [floor])["choices"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repetition_penalty", 5e-324),
        ("repetition_penalty", 0),
        ("repetition_penalty", float("nan")),
        ("temperature", float("inf")),
        ("temperature", -1),
        ("temperature", "0.5"),
        ("top_p", 0),
        ("top_p", float("nan")),
        ("top_k", 2.5),
        ("seed", -1),
        ("seed", 2**64),
        ("max_new_tokens", 0),
        ("do_sample", "yes"),
        ("stop", [""]),
        ("stop", ["s" * 257]),
        ("stop", ["s"] * 9),
    ],
)
def test_the_library_refuses_values_the_model_cannot_take_naming_the_field(served_vlm, field, value):
    with pytest.raises(InputError, match=f"^{field}=.*: must be "):
        served_vlm.ask(None, "x", **{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repetition_penalty", 5e-324),
        ("repetition_penalty", 0.001),
        ("temperature", 2.5),
        ("top_p", 0),
        ("seed", -1),
        ("stop", ["s" * 257]),
        ("stop", ["s"] * 9),
    ],
)
def test_the_server_refuses_them_with_400_naming_the_field(client, field, value):
    error = error_of(post(client, max_tokens=2, **{field: value}), 400)
    assert error["param"].split(".")[0] == field and error["message"].startswith(f"invalid request: {field}")


def test_nan_and_infinity_in_the_json_body_are_400(client):
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = '{"messages": [{"role": "user", "content": "x"}], "temperature": ' + literal + "}"
        response = client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert error_of(response, 400)["param"] == "temperature"


def test_integer_sampling_values_work_like_floats(served_vlm):
    """transformers refused temperature=2 (an int) from inside generate; it is a float by now."""
    settings = GenerationSettings(temperature=2, top_p=1, repetition_penalty=1)
    assert (settings.temperature, settings.top_p, settings.repetition_penalty) == (2.0, 1.0, 1.0)
    assert all(type(value) is float for value in (settings.temperature, settings.top_p))
    as_int = served_vlm.ask(None, "x", temperature=2, top_p=1, seed=1, max_new_tokens=4, cache=False)
    as_float = served_vlm.ask(None, "x", temperature=2.0, top_p=1.0, seed=1, max_new_tokens=4, cache=False)
    assert as_int.raw == as_float.raw


# ---- context -----------------------------------------------------------------------------------


def test_prompt_plus_max_new_tokens_over_the_context_is_refused_before_prefill(served_vlm):
    prompt_tokens = served_vlm.prepare(QUESTION).prompt_tokens
    context = served_vlm.context_length
    assert context == served_vlm.model.config.get_text_config().max_position_embeddings
    with pytest.raises(InputError) as raised:
        served_vlm.chat(QUESTION, max_new_tokens=context)
    message = str(raised.value)
    assert f"the prompt has {prompt_tokens:,} tokens" in message
    assert f"{prompt_tokens + context:,} in all, over the {context:,}-token context of tiny" in message
    with pytest.raises(InputError, match=f"ask for at most {8 - prompt_tokens:,} new tokens"):
        served_vlm.chat(QUESTION, max_new_tokens=9 - prompt_tokens, max_model_len=8)
    with pytest.raises(InputError, match=f"the prompt has {prompt_tokens} tokens, which leaves no room"):
        served_vlm.stream(None, "x", max_model_len=prompt_tokens)  # streams fail before their thread starts


def test_an_unset_max_new_tokens_shrinks_to_what_fits(served_vlm):
    prompt_tokens = served_vlm.prepare(QUESTION).prompt_tokens
    answer = served_vlm.chat(QUESTION, temperature=0, max_model_len=prompt_tokens + 3)
    assert answer.usage.completion_tokens <= 3 and answer.usage.prompt_tokens == prompt_tokens


def test_the_server_limit_is_a_400_that_says_both_numbers(served_vlm):
    prompt_tokens = served_vlm.prepare(QUESTION).prompt_tokens
    settings = ServerSettings(model="tiny", max_model_len=prompt_tokens + 4)
    with TestClient(
        create_app(served_vlm, settings), base_url="http://localhost", raise_server_exceptions=False
    ) as limited:
        for stream in (False, True):
            error = error_of(post(limited, max_tokens=5, stream=stream), 400)
            assert f"{prompt_tokens:,} tokens" in error["message"]
            limit = f"{prompt_tokens + 5:,} in all, over the max_model_len limit of {prompt_tokens + 4:,}"
            assert limit in error["message"]
        answer = post(limited, temperature=0).json()
        assert answer["usage"]["completion_tokens"] <= 4


def test_serve_has_the_max_model_len_and_send_timeout_flags():
    from typer.testing import CliRunner

    from glmlab.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "--max-model-len" in result.output and "--send-timeout" in result.output


def test_max_model_len_is_passed_to_vllm_and_send_timeout_is_not():
    from glmlab.serve.engines.vllm import VLLM_IGNORES, vllm_command

    settings = ServerSettings(model="zai-org/GLM-4.6V-Flash", max_model_len=8192, send_timeout_s=5)
    argv = vllm_command(settings).argv
    assert argv[argv.index("--max-model-len") + 1] == "8192" and "send_timeout_s" in VLLM_IGNORES


def test_a_stop_during_the_prefill_ends_it_between_two_layers(served_vlm):
    """A StoppingCriteria runs only after a token; the prefill is interrupted by the layers themselves."""
    layers = served_vlm.model.model.language_model.layers
    ran = []
    counter = layers[0].register_forward_hook(lambda *args: ran.append(1))
    stop = threading.Event()
    stop.set()
    try:
        prompt = served_vlm.prepare(QUESTION)
        settings = GenerationSettings(temperature=0, max_new_tokens=50)
        config = served_vlm.fit_context(prompt.prompt_tokens, settings)
        answer = served_vlm._generate(prompt, settings, config, None, TokenClock(), stop)
    finally:
        counter.remove()
    assert ran == [] and answer.usage.completion_tokens == 0 and answer.raw == ""
    hooks = sum(len(block._forward_pre_hooks) for block in layers)
    with interruptible(served_vlm.model, stop, TokenClock()):
        assert sum(len(block._forward_pre_hooks) for block in layers) == hooks + len(layers)
    assert sum(len(block._forward_pre_hooks) for block in layers) == hooks  # removed again
    assert served_vlm.chat(QUESTION, temperature=0, max_new_tokens=3).usage.completion_tokens == 3


def test_a_timed_out_request_leaves_the_model_free(served_vlm):
    app = create_app(served_vlm, ServerSettings(model="tiny", timeout_s=0.3))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as test_client:
        assert error_of(post(test_client, max_tokens=2000, temperature=0), 504)["code"] == "timeout"
        assert served_vlm.lock.acquire(blocking=False)  # the generation ended before the 504 was sent
        served_vlm.lock.release()
        host = app.state.host
        assert (host.admitted, host.running, host.sending) == (0, 0, 0)


# ---- stop strings ------------------------------------------------------------------------------


@pytest.fixture
def no_stop_string_criteria(monkeypatch):
    """transformers' StopStringCriteria walks the vocabulary per stop string (seconds each request)."""
    from transformers.generation import stopping_criteria

    def refuse(*args, **kwargs):
        raise AssertionError("StopStringCriteria was built")

    monkeypatch.setattr(stopping_criteria.StopStringCriteria, "__init__", refuse)


def test_long_stop_strings_cut_the_answer_as_before_without_stop_string_criteria(
    served_vlm, no_stop_string_criteria
):
    options = {"temperature": 0, "max_new_tokens": 24, "cache": False}
    full = served_vlm.ask(None, "x", **options)
    marker = full.raw[10:16]  # spans token boundaries
    others = [f"{index}" * 256 for index in range(7)]
    cut = served_vlm.ask(None, "x", stop=[*others, marker], **options)
    assert cut.raw == full.raw.split(marker, 1)[0] and cut.finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens  # generation ended at the marker
    unmatched = served_vlm.ask(None, "x", stop=others + ["\x00" * 256], **options)
    assert unmatched.raw == full.raw and unmatched.finish_reason == full.finish_reason
    streamed = served_vlm.stream(None, "x", stop=[*others, marker], **options)
    assert "".join(streamed) == cut.raw
    batched = served_vlm.batch([(None, "x"), (None, "y")], stop=[marker], temperature=0, max_new_tokens=24)
    assert batched[0].raw == cut.raw


def test_stop_strings_match_the_decoded_tail_only_after_the_prompt(served_vlm):
    tokenizer = served_vlm.tokenizer
    import torch

    prompt = tokenizer.encode("世界 before", add_special_tokens=False)
    answer = tokenizer.encode(" 你好世界 and more text after it", add_special_tokens=False)
    criteria = StopStrings(tokenizer, ["世界"], len(prompt), served_vlm.hidden_token_ids)
    done = [
        bool(criteria(torch.tensor([prompt + answer[:length]]), None)[0]) for length in range(len(answer) + 1)
    ]
    decoded = [tokenizer.decode(answer[:length]) for length in range(len(answer) + 1)]
    first = next(length for length, text in enumerate(decoded) if "世界" in text)
    assert done.index(True) == first  # not before (the prompt's 世界 does not count), not after
    assert criteria.window == 4 * 2 + 4  # the tail decoded per step follows the longest stop string


# ---- a reader that stops reading ---------------------------------------------------------------

# Every event carries the model name: a long one makes each event ~30 KB, so a stalled reader's socket
# buffers fill after a few events (the streamer sends a piece per word, and the tiny model's random words
# can be long) rather than after thousands.
LONG_NAME = "tiny-" + "n" * 30000
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@contextlib.contextmanager
def server_with_small_send_buffers(app):
    """uvicorn on a loopback listener whose connections keep only ~4 KB in the kernel (they inherit
    the listener's SO_SNDBUF), so a reader that stops reading blocks the server's sends quickly."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield listener.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def stalled_stream(address, **body) -> socket.socket:
    """A raw HTTP client that sends a streaming request and then reads nothing."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    client.connect(address)
    # thinking off: the tiny model's greedy answer is then visible text, one event per token (with
    # thinking on it can be hidden tokens that send nothing, and the buffers would never fill)
    request = {"messages": QUESTION, "stream": True, "temperature": 0, **NO_THINKING, **body}
    payload = json.dumps(request).encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    client.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return client


def wait_for(address, condition, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(f"http://{address[0]}:{address[1]}/health", timeout=30).json()
        if condition(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


@pytest.mark.slow
def test_a_stalled_reader_frees_the_model_when_generation_ends(served_vlm):
    settings = ServerSettings(model="tiny", served_model_name=LONG_NAME, timeout_s=120, send_timeout_s=600)
    with server_with_small_send_buffers(create_app(served_vlm, settings)) as address:
        stalled = stalled_stream(address, max_tokens=60)
        health = wait_for(address, lambda health: health["sending"] == 1, 120)
        assert (health["running"], health["sending"], health["queued"]) == (0, 1, 0), health
        other = httpx.post(
            f"http://{address[0]}:{address[1]}/v1/chat/completions",
            json={"messages": QUESTION, "max_tokens": 2, "temperature": 0},
            timeout=30,
        )
        assert other.status_code == 200 and other.json()["usage"]["completion_tokens"] == 2
        assert wait_for(address, lambda health: True, 0)["sending"] == 1  # still unread, still open
        stalled.close()
        health = wait_for(address, lambda health: health["sending"] == 0, 30)
        assert (health["running"], health["sending"], health["queued"]) == (0, 0, 0)


@pytest.mark.slow
def test_a_stalled_reader_loses_its_stream_after_the_send_timeout(served_vlm):
    settings = ServerSettings(model="tiny", served_model_name=LONG_NAME, timeout_s=120, send_timeout_s=1)
    with server_with_small_send_buffers(create_app(served_vlm, settings)) as address:
        stalled = stalled_stream(address, max_tokens=2000)
        time.sleep(0.5)
        health = wait_for(address, lambda health: health["running"] + health["sending"] == 0, 120)
        assert (health["running"], health["sending"], health["queued"]) == (0, 0, 0), health
        received = b""
        stalled.settimeout(30)
        while chunk := stalled.recv(65536):  # the server closed the connection: recv ends
            received += chunk
        stalled.close()
        assert received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" not in received
        assert received.count(b"chat.completion.chunk") < 2000  # generation stopped with the stream


# ---- OpenAPI -----------------------------------------------------------------------------------


def test_openapi_declares_every_status_with_the_error_schema(served_vlm):
    app = create_app(served_vlm, ServerSettings(model="tiny", api_key="k" * 16))
    document = (
        TestClient(app, base_url="http://localhost", headers={"Authorization": "Bearer " + "k" * 16})
        .get("/openapi.json")
        .json()
    )
    expected = {
        ("get", "/health"): {"200", "500", "503"},
        ("get", "/metrics"): {"200", "500"},  # open like /health unless --metrics-require-key
        ("get", "/v1/models"): {"200", "401", "500", "503"},
        ("post", "/v1/chat/completions"): {
            "200",
            "400",
            "401",
            "404",
            "413",
            "415",
            "429",
            "500",
            "503",
            "504",
        },
        ("post", "/v1/load_lora_adapter"): {"200", "400", "401", "413", "415", "500", "503"},
        ("post", "/v1/unload_lora_adapter"): {"200", "400", "401", "404", "413", "415", "500", "503"},
    }
    declared = {
        (method, path): set(operation["responses"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert declared == expected
    for (method, path), statuses in expected.items():
        responses = document["paths"][path][method]["responses"]
        for status in statuses - {"200"}:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    error = document["components"]["schemas"]["ErrorObject"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    without_key = TestClient(create_app(served_vlm), base_url="http://localhost").get("/openapi.json").json()
    assert "401" not in without_key["paths"]["/v1/models"]["get"]["responses"]


# ---- schema fuzz -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(served_vlm):
    """The server's own /openapi.json, fuzzed against the in-process app. A small --max-model-len keeps
    every generation short (and refuses the over-long ones with a 400), so no example runs for long.
    Schemathesis calls the app as host "testserver", allowed here like a name given with --allowed-host."""
    import schemathesis

    settings = ServerSettings(model="tiny", max_model_len=16, timeout_s=120, allowed_hosts=["testserver"])
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(served_vlm, settings))


@pytest.mark.slow
def test_a_schema_fuzz_of_the_openapi_document_finds_no_server_error(api_schema):
    """Schemathesis cases for every operation, valid and invalid ones (30 each): never a 5xx, and every
    answer's status, content type and body as /openapi.json declares them."""
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 6
    for operation in operations:
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * (operation.method.upper() == "POST")
        for mode in modes:  # a GET without parameters has no invalid request to make

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def fuzz(case):
                case.call_and_validate(checks=checks)

            fuzz()
