"""glmlab's server under a real uvicorn on a loopback port, driven by the official `openai` client."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image
from support import API_KEY, GREEDY, image_message, scene

from glmlab.serve import ServerSettings, start


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=60)


def ask(client, model: str, image=None, question: str = "What is it?", **options) -> str:
    messages = image_message(image or scene(), question)
    response = client.chat.completions.create(model=model, messages=messages, **{**GREEDY, **options})
    return response.choices[0].message.content


def test_plain_completion_with_an_image_data_url(client):
    response = client.chat.completions.create(
        model="tiny", messages=image_message(scene(), "Colour?"), **GREEDY
    )
    assert response.object == "chat.completion" and response.model == "tiny"
    assert response.choices[0].message.content and response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 6 and response.usage.prompt_tokens > 16
    assert response.choices[0].message.reasoning_content is None  # vLLM's field, present


def test_streamed_completion_matches_the_plain_one_and_ends_with_usage(client):
    messages = image_message(scene(colour="blue"), "Describe.")
    plain = client.chat.completions.create(model="alpha", messages=messages, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model="alpha", messages=messages, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content.strip() == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_the_model_field_selects_the_base_model_or_an_adapter(client, served_vlm):
    answers = {model: ask(client, model) for model in ("tiny", "alpha", "beta")}
    assert len(set(answers.values())) == 3
    for model, text in answers.items():
        local = served_vlm.chat(
            image_message(scene(), "What is it?"),
            adapter=None if model == "tiny" else model,
            temperature=0,
            max_new_tokens=6,
        )
        assert text == local.text


def test_concurrent_requests_for_different_adapters_never_mix(client):
    jobs = [(model, colour) for model in ("tiny", "alpha", "beta") for colour in ("red", "green")]
    sequential = {job: ask(client, job[0], scene(colour=job[1])) for job in jobs}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        concurrent = dict(
            zip(jobs, pool.map(lambda job: ask(client, job[0], scene(colour=job[1])), jobs), strict=True)
        )
    assert concurrent == sequential


def test_models_lists_the_base_model_then_the_adapters(client):
    assert [model.id for model in client.models.list().data] == ["tiny", "alpha", "beta"]


def test_adapters_load_and_unload_at_run_time(client, adapters):
    client.post(
        "/load_lora_adapter", body={"lora_name": "gamma", "lora_path": str(adapters["gamma"])}, cast_to=str
    )
    assert "gamma" in [model.id for model in client.models.list().data]
    assert ask(client, "gamma") not in {ask(client, "tiny"), ask(client, "alpha")}
    client.post("/unload_lora_adapter", body={"lora_name": "gamma"}, cast_to=str)
    with pytest.raises(openai.NotFoundError, match="'gamma' does not exist"):
        ask(client, "gamma")


def test_a_path_with_dotdot_is_refused(client, adapters):
    with pytest.raises(openai.BadRequestError, match="must not contain '..'"):
        client.post(
            "/load_lora_adapter",
            cast_to=str,
            body={"lora_name": "evil", "lora_path": f"{adapters['gamma']}/../../.."},
        )


def test_the_api_key_is_required(server):
    for key in ("wrong-key", "none"):
        stranger = openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
            stranger.models.list()


def test_an_unknown_adapter_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, "no-such-adapter")
    assert caught.value.body["code"] == "model_not_found"


def test_bad_base64_and_a_decompression_bomb_are_400(client):
    bad = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
        }
    ]
    with pytest.raises(openai.BadRequestError, match="invalid base64"):
        client.chat.completions.create(model="tiny", messages=bad, **GREEDY)
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")
    bomb = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(openai.BadRequestError, match="decompression bomb"):
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": bomb}}]}],
            **GREEDY,
        )


def test_a_50_mb_body_is_413(client):
    huge = [{"role": "user", "content": "x" * (50 * 1024 * 1024)}]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="tiny", messages=huge, **GREEDY)
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"


def test_bad_json_over_http_is_400(server):
    response = httpx.post(
        server.url + "/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_queue_full_is_429_and_a_disconnected_stream_frees_its_place(served_vlm):
    settings = ServerSettings(model="tiny", max_concurrency=1, timeout_s=60, port=0)
    with start(served_vlm, settings) as busy:
        client = openai.OpenAI(base_url=busy.url, api_key="none", max_retries=0)
        stream = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=2000,
            temperature=0,
            stream=True,
        )
        next(iter(stream))
        with pytest.raises(openai.RateLimitError, match="the server is busy"):
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=1
            )
        stream.close()  # the client goes away mid-stream
        deadline = time.monotonic() + 20
        while (
            httpx.get(busy.url.removesuffix("/v1") + "/health").json()["running"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
        assert answer.usage.completion_tokens == 1


def test_register_loads_an_exported_adapter_and_checks_it_answers(server, adapters, tmp_path_factory):
    from glmlab.export import export_vllm, register

    exported = export_vllm(adapters["gamma"], adapters["gamma"].parent / "gamma-vllm", overwrite=True)
    assert register(exported.path, server.url, name="gamma-vllm", api_key=API_KEY) == "gamma-vllm"
    client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
    assert ask(client, "gamma-vllm")
    client.post("/unload_lora_adapter", body={"lora_name": "gamma-vllm"}, cast_to=str)


def test_cli_export_to_a_running_server(server, adapters):
    from typer.testing import CliRunner

    from glmlab.cli import app

    result = CliRunner().invoke(
        app, ["export", str(adapters["gamma"]), "--to", server.url, "--name", "via-cli", "--api-key", API_KEY]
    )
    assert result.exit_code == 0, result.output
    assert "registered 'via-cli'" in result.output
    client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
    client.post("/unload_lora_adapter", body={"lora_name": "via-cli"}, cast_to=str)


def test_start_listens_on_the_settings_port_and_a_failed_load_leaves_no_server_running(served_vlm):
    import socket

    from glmlab.errors import ModelLoadError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with start(served_vlm, ServerSettings(model="tiny", port=free)) as server:
        assert server.url == f"http://127.0.0.1:{free}/v1"

    def serving() -> int:
        return sum(thread.name == "glmlab-serve" and thread.is_alive() for thread in threading.enumerate())

    before = serving()
    with pytest.raises(ModelLoadError, match="failed to load"):
        start(ServerSettings(model="/no/such/checkpoint", port=0))
    assert serving() == before
