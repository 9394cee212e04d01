"""glmlab's server app built in-process (create_app + TestClient): errors, limits, loading, adapter rules."""

from __future__ import annotations

import io
import shutil
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from support import API_KEY, GREEDY, image_message, scene

from glmlab.answer import Answer
from glmlab.errors import ModelLoadError
from glmlab.serve import ServerSettings, create_app
from glmlab.serve.schemas import ThinkingRouter, completion_body

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOCAL = "http://localhost"  # TestClient's default Host, "testserver", is not one the server answers to


@pytest.fixture(scope="module")
def adapter_root(adapters):
    return adapters["gamma"].parent


@pytest.fixture(scope="module")
def client(served_vlm, adapters, adapter_root):
    settings = ServerSettings(
        model="tiny",
        adapters={"alpha": str(adapters["alpha"])},
        api_key=API_KEY,
        adapter_roots=[str(adapter_root)],
        max_request_bytes=200_000,
        max_input_pixels=4096 * 4096,
    )
    with TestClient(
        create_app(served_vlm, settings), base_url=LOCAL, raise_server_exceptions=False, headers=AUTH
    ) as test_client:
        yield test_client


def post(client, body, **kwargs):
    return client.post("/v1/chat/completions", json=body, **kwargs)


def assert_error(response, status: int, code: str | None = None, param: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error["message"]


def test_health_and_models_list_the_base_model_and_adapters(client):
    assert client.get("/health", headers={}).json()["status"] == "ok"  # /health needs no key
    models = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in models] == [("tiny", None), ("alpha", "tiny")]


def test_completion_answers_like_the_local_model_with_usage(client, served_vlm):
    messages = image_message(scene(), "What colour?")
    body = post(client, {"model": "tiny", "messages": messages, **GREEDY}).json()
    local = served_vlm.chat(messages, adapter=None, temperature=0, max_new_tokens=6)
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"][0]["message"]["content"] == local.text
    assert body["choices"][0]["finish_reason"] == local.finish_reason == "length"
    assert body["usage"] == {
        "prompt_tokens": local.usage.prompt_tokens,
        "completion_tokens": 6,
        "total_tokens": local.usage.prompt_tokens + 6,
        "prompt_tokens_details": {"image_tokens": 16, "video_tokens": 0},
    }


def test_enable_thinking_false_renders_nothink(client, served_vlm):
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "chat_template_kwargs": {"enable_thinking": False},
        **GREEDY,
    }
    answer = post(client, body).json()["choices"][0]["message"]["content"]
    assert (
        answer
        == served_vlm.ask(None, "Hi", thinking=False, adapter=None, temperature=0, max_new_tokens=6).text
    )


def test_reasoning_goes_to_reasoning_content():
    from glmlab.answer import Answer

    body = completion_body(
        "id",
        "m",
        [Answer.from_raw("<think>\nlooks red\n</think>\nRed <|begin_of_box|>[1,2,3,4]<|end_of_box|>")],
    )
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "looks red"
    assert message["content"] == "Red <|begin_of_box|>[1,2,3,4]<|end_of_box|>"  # boxes kept, as vLLM does


def test_thinking_router_routes_streamed_pieces_and_tags_split_across_pieces():
    router = ThinkingRouter()
    pieces = ["<thi", "nk>it is", " red</", "think>", "\nRed", " circle<"]
    routed = [item for piece in pieces for item in router.feed(piece)] + router.flush()
    assert routed == [
        ("reasoning_content", "it is"),
        ("reasoning_content", " red"),
        ("content", "\nRed"),
        ("content", " circle"),
        ("content", "<"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        "<think>\nlooks red\n</think>\nRed circle",  # GLM-4.6V
        "<think>short</think><answer>Red</answer>",  # GLM-4.1V's answer wrapper
        "<think>no answer yet",  # cut off while thinking
        "plain answer",
        "<answer>A</answer> trailing text",
    ],
)
def test_streamed_deltas_add_up_to_the_non_streamed_message(raw):
    message = completion_body("id", "tiny", [Answer.from_raw(raw)])["choices"][0]["message"]
    for size in (1, 3, 7):  # tags split across pieces at every position
        router = ThinkingRouter()
        pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
        routed = [item for piece in pieces for item in router.feed(piece)] + router.flush()
        joined = {
            field: "".join(text for name, text in routed if name == field)
            for field in ("content", "reasoning_content")
        }
        assert joined["content"].strip() == message["content"]
        assert (joined["reasoning_content"].strip() or None) == message["reasoning_content"]


def test_bad_json_is_400_in_openai_shape(client):
    response = client.post(
        "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]},
            "messages.0.content.0",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 65}, "n"),
    ],
)
def test_schema_errors_are_400_naming_the_field(client, body, param):
    message = assert_error(post(client, body), 400, "invalid_request", param)
    assert message.startswith("invalid request: " + param)


def test_bad_base64_image_is_400(client):
    bad = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
        }
    ]
    assert "invalid base64" in assert_error(post(client, {"messages": bad}), 400)


@pytest.mark.parametrize("url", ["/etc/hostname", "/dev/zero", "file:///etc/hostname", "relative.png"])
def test_an_image_url_naming_a_server_file_is_400_and_never_read(client, url):
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    message = assert_error(post(client, {"messages": image}), 400)
    assert "expected a data: URL" in message and "does not read paths on its own disk" in message


def test_decompression_bomb_is_refused_before_decoding(client):
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")  # 100 Mpx in ~12 KB
    url = "data:image/png;base64," + __import__("base64").b64encode(buffer.getvalue()).decode()
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    assert "decompression bomb guard" in assert_error(post(client, body), 400)


def test_http_image_urls_are_refused_unless_allowed(client):
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}],
            }
        ]
    }
    assert "allow_urls" in assert_error(post(client, body), 400)


def test_body_over_the_limit_is_413_by_content_length_and_by_streamed_bytes(client):
    declared = client.post(
        "/v1/chat/completions", content=b"x" * 300_000, headers={"content-type": "application/json"}
    )
    assert "200,000 bytes" in assert_error(declared, 413, "request_too_large")
    chunked = client.post(
        "/v1/chat/completions",
        content=(b"x" * 50_000 for _ in range(6)),
        headers={"content-type": "application/json"},
    )
    assert_error(chunked, 413, "request_too_large")


def test_unknown_model_is_404_listing_what_exists(client):
    message = assert_error(
        post(client, {"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        404,
        "model_not_found",
        "model",
    )
    assert "tiny, alpha" in message


def test_missing_or_wrong_api_key_is_401(client):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        assert_error(client.get("/v1/models", headers=headers), 401, "invalid_api_key")


def test_unknown_route_is_404_not_500(client):
    assert_error(client.get("/v1/nothing"), 404, "not_found")


def test_server_answers_503_while_the_model_loads(served_vlm):
    gate = threading.Event()

    def slow_load(model, **options):
        gate.wait(30)
        return served_vlm

    app = create_app(ServerSettings(model="tiny"), loader=slow_load)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as test_client:
        assert "still loading" in assert_error(test_client.get("/health"), 503, "model_loading")
        assert_error(
            post(test_client, {"messages": [{"role": "user", "content": "x"}]}), 503, "model_loading"
        )
        gate.set()
        assert app.state.host.ready.wait(30)
        assert test_client.get("/health").json()["status"] == "ok"


def test_a_model_that_fails_to_load_is_503_with_the_reason():
    def broken_load(model, **options):
        raise ModelLoadError("tiny: the checkpoint folder could not be loaded (truncated).")

    app = create_app(ServerSettings(model="tiny"), loader=broken_load)
    assert app.state.host.ready.wait(30)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as test_client:
        assert "truncated" in assert_error(test_client.get("/v1/models"), 503, "model_load_failed")


def test_timeout_is_504_and_stops_the_generation(served_vlm):
    app = create_app(served_vlm, ServerSettings(model="tiny", timeout_s=0.3))
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as test_client:
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2000, "temperature": 0}
        assert_error(post(test_client, body), 504, "timeout")
        assert post(test_client, {**body, "max_tokens": 1}).status_code == 200  # the model is free again


def test_load_and_unload_an_adapter_at_run_time(client, adapters):
    load = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "gamma", "lora_path": str(adapters["gamma"])}
    )
    assert load.status_code == 200 and "gamma" in load.text
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny", "alpha", "gamma"]
    assert (
        post(client, {"model": "gamma", "messages": [{"role": "user", "content": "x"}], **GREEDY}).status_code
        == 200
    )
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "gamma"}).status_code == 200
    assert_error(post(client, {"model": "gamma", "messages": [{"role": "user", "content": "x"}]}), 404)
    assert_error(
        client.post("/v1/unload_lora_adapter", json={"lora_name": "gamma"}), 404, "adapter_not_found"
    )


def test_load_inplace_replaces_an_adapter_and_a_failed_replacement_keeps_the_old_one(
    client, adapters, adapter_root
):
    import torch
    from safetensors.torch import load_file, save_file

    def load(path, inplace=False):
        body = {"lora_name": "delta", "lora_path": str(path), "load_inplace": inplace}
        return client.post("/v1/load_lora_adapter", json=body)

    def answer():
        body = {"model": "delta", "messages": [{"role": "user", "content": "Describe"}], **GREEDY}
        return post(client, body).json()["choices"][0]["message"]["content"]

    broken = adapter_root / "broken-shapes"
    if not broken.exists():
        shutil.copytree(adapters["gamma"], broken)
        weights = load_file(broken / "adapter_model.safetensors")
        save_file({k: torch.zeros(3, 3) for k in weights}, broken / "adapter_model.safetensors")
    assert load(adapters["gamma"]).status_code == 200
    before = answer()
    assert_error(load(broken, inplace=True), 400)
    assert answer() == before  # the old delta is still there and unchanged
    assert load(adapters["alpha"], inplace=True).status_code == 200
    assert answer() != before
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "delta"}).status_code == 200


@pytest.mark.parametrize(
    ("name", "path", "code"),
    [
        ("evil", "{root}/../../etc", "invalid_path"),
        ("evil", "{root}/gamma\x00", "invalid_path"),
        ("evil", "relative/adapter", "invalid_path"),
        ("evil", "/etc", "path_not_allowed"),
        ("evil", "{root}/escape", "path_not_allowed"),  # a symlink inside the root pointing out of it
        ("evil", "{root}/pickled", "invalid_adapter"),
        ("alpha", "{root}/gamma", "adapter_exists"),
        ("tiny", "{root}/gamma", "adapter_exists"),
        ("bad/name", "{root}/gamma", "invalid_adapter_name"),
    ],
)
def test_hostile_adapter_paths_and_names_are_400(client, adapter_root, tmp_path_factory, name, path, code):
    outside = tmp_path_factory.mktemp("outside")
    if not (adapter_root / "escape").exists():
        (adapter_root / "escape").symlink_to(outside, target_is_directory=True)
        (adapter_root / "pickled").mkdir()
        (adapter_root / "pickled" / "adapter_config.json").write_text("{}")
        (adapter_root / "pickled" / "adapter_model.bin").write_bytes(b"\x80")
    response = client.post(
        "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path.format(root=adapter_root)}
    )
    assert_error(response, 400, code)


def test_hostile_requests_never_take_the_server_down(client):
    hostile = [
        b"",
        b"null",
        b"[]",
        b'{"messages": "x"}',
        b'{"messages": [{"role": "user", "content": 5}]}',
        b'{"messages": [{"role": "user"}], "stop": ["' + b"s" * 300 + b'"]}',
        b"\xff\xfe",
        b'{"model": {}}',
    ]
    for content in hostile:
        response = client.post(
            "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (content, response.text)
    assert client.get("/health").status_code == 200
