"""The ComfyUI "GLM Visual QA" node, loaded the way ComfyUI loads a custom-node folder, against a server.

The node's key comes from GLMLAB_API_KEY and goes only to loopback or to GLMLAB_TRUSTED_HOSTS; the
"remote" server of those tests is a loopback server reached by a name that resolves to 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from support import API_KEY

import glmlab.integrations.comfyui as package
from glmlab.client import ServerError
from glmlab.images import to_pil

FOLDER = Path(package.__file__).parent


@pytest.fixture(scope="module")
def nodes():
    """The package imported from its folder under another name, as ComfyUI's custom-node loader does."""
    spec = importlib.util.spec_from_file_location(
        "glmlab_comfyui", FOLDER / "__init__.py", submodule_search_locations=[str(FOLDER)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["glmlab_comfyui"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("glmlab_comfyui", None)


def node_inputs(url: str, **overrides) -> dict:
    return {
        "prompt": "What is in the picture?",
        "server_url": url,
        "model": "alpha",
        "max_tokens": 6,
        "temperature": 0.0,
        "timeout_s": 60.0,
        "thinking": False,
        "fallback_url": "",
        "fallback_model": "",
        "on_failure": "raise",
        "failure_message": "Vision model unavailable.",
        **overrides,
    }


@pytest.fixture(autouse=True)
def key_in_environment(monkeypatch):
    monkeypatch.setenv("GLMLAB_API_KEY", API_KEY)
    monkeypatch.delenv("GLMLAB_TRUSTED_HOSTS", raising=False)


def test_the_folder_defines_comfyuis_mappings(nodes):
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == {"GLMVisualQA"}
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["GLMVisualQA"] == "GLM Visual QA"
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]
    required = node.INPUT_TYPES()["required"]
    assert required["image"] == ("IMAGE",) and required["prompt"][1]["multiline"] is True
    assert required["server_url"][1]["default"] == "http://localhost:8080/v1"
    assert (node.RETURN_TYPES, node.OUTPUT_IS_LIST) == (("STRING",), (True,))
    optional = node.INPUT_TYPES()["optional"]  # optional: workflows saved before them still load
    assert optional["on_failure"] == (["raise", "message"], {"default": "raise"})
    assert optional["fallback_url"][1]["default"] == optional["fallback_model"][1]["default"] == ""
    readme = (FOLDER / "README.md").read_text()
    assert readme.count("custom_nodes") >= 1
    assert "GLMLAB_API_KEY" in readme and "GLMLAB_TRUSTED_HOSTS" in readme


def test_no_input_holds_a_key_so_workflows_and_png_metadata_never_carry_one(nodes):
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]
    inputs = node.INPUT_TYPES()
    names = [name for group in inputs.values() for name in group]
    assert names == ["image", *node_inputs("x")] and not any("key" in name for name in names)
    assert "api_key" not in inspect.signature(getattr(node, node.FUNCTION)).parameters


@pytest.mark.parametrize(
    ("url", "trusted", "sent"),
    [
        ("http://localhost:8080/v1", "", True),
        ("http://127.0.0.1:8080", "", True),
        ("http://[::1]:8080/v1", "", True),
        ("http://gpu-box.lan:8080/v1", "", False),
        ("http://gpu-box.lan:8080/v1", "other.lan, GPU-box.lan", True),
        ("http://localhost@collector.example/v1", "", False),  # the host is collector.example
        ("http://localhost.collector.example/v1", "localhost", False),
        ("https://collector.example/v1", "gpu-box.lan", False),
    ],
)
def test_the_key_goes_only_to_loopback_and_trusted_hosts(nodes, monkeypatch, url, trusted, sent):
    monkeypatch.setenv("GLMLAB_TRUSTED_HOSTS", trusted)
    assert nodes.nodes.api_key_for(url) == (API_KEY if sent else None)


def test_a_batch_of_two_images_gives_the_local_models_answers_with_the_adapter(nodes, server, served_vlm):
    torch.manual_seed(0)
    batch = torch.rand(2, 64, 96, 3)  # ComfyUI IMAGE: [B,H,W,C] floats in 0-1
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    (answers,) = getattr(node, node.FUNCTION)(batch, **node_inputs(server.url))
    options = {"thinking": False, "max_new_tokens": 6, "temperature": 0, "cache": False}
    question = "What is in the picture?"
    images = to_pil(batch)
    assert answers == [served_vlm.ask(image, question, adapter="alpha", **options).text for image in images]
    assert answers != [served_vlm.ask(image, question, adapter=None, **options).text for image in images]


def test_the_node_checks_an_https_servers_certificate_against_glmlab_ca_bundle(
    nodes, https_server, tls, monkeypatch
):
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    image = torch.rand(1, 32, 32, 3)
    inputs = node_inputs(https_server.url, model="tiny", timeout_s=20.0)
    with pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"):
        getattr(node, node.FUNCTION)(image, **inputs)  # an unknown CA: refused
    monkeypatch.setenv("GLMLAB_CA_BUNDLE", str(tls / "ca.pem"))
    (answers,) = getattr(node, node.FUNCTION)(image, **inputs)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_an_unreachable_server_raises_instead_of_returning_an_error_string(nodes):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    with pytest.raises(ServerError, match=rf"http://127\.0\.0\.1:{port}/v1: could not connect"):
        node.answer(torch.rand(1, 32, 32, 3), **node_inputs(f"http://127.0.0.1:{port}/v1", timeout_s=5.0))


def test_an_unknown_adapter_raises_with_the_servers_message(nodes, server):
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    with pytest.raises(ServerError, match="answered 404: model 'retired' does not exist"):
        node.answer(torch.rand(1, 32, 32, 3), **node_inputs(server.url, model="retired"))


@pytest.fixture(scope="module")
def named_server(served_vlm):
    """A keyed server on 127.0.0.1 that answers to the name gpu-box.test (resolved to it by the test)."""
    from glmlab.serve import ServerSettings, start

    settings = ServerSettings(model="tiny", api_key=API_KEY, allowed_hosts=["gpu-box.test"], port=0)
    with start(served_vlm, settings) as running:
        yield running


@pytest.fixture
def gpu_box_resolves_to_loopback(monkeypatch):
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        return real("127.0.0.1" if host == "gpu-box.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_a_server_not_on_loopback_gets_the_key_only_once_trusted(
    nodes, named_server, served_vlm, gpu_box_resolves_to_loopback, monkeypatch
):
    url = f"http://gpu-box.test:{named_server.port}/v1"
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    image = torch.rand(1, 32, 32, 3)
    with pytest.raises(ServerError, match="answered 401") as refused:
        node.answer(image, **node_inputs(url, model=""))
    assert "add gpu-box.test there if you trust it" in str(refused.value)
    assert "GLMLAB_TRUSTED_HOSTS" in str(refused.value)
    monkeypatch.setenv("GLMLAB_TRUSTED_HOSTS", "gpu-box.test")
    (answers,) = node.answer(image, **node_inputs(url, model=""))
    options = {"thinking": False, "max_new_tokens": 6, "temperature": 0, "cache": False}
    assert answers == [
        served_vlm.ask(to_pil(image)[0], "What is in the picture?", adapter=None, **options).text
    ]


# ---- failover, the friendly message and the timeout ----------------------------------------------

OPTIONS = {"thinking": False, "max_new_tokens": 6, "temperature": 0, "cache": False}


@pytest.fixture(scope="module")
def stopped_url(served_vlm):
    """The URL of a glmlab server that was started on the tiny model and has stopped since."""
    from glmlab.serve import ServerSettings, start

    with start(served_vlm, ServerSettings(model="tiny", api_key=API_KEY, port=0)) as running:
        url = running.url
    return url


@pytest.fixture
def silent_url():
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


@pytest.fixture
def trickling_url():
    """A loopback server that streams an OpenAI answer one piece every 0.3 s, for as long as it is read."""
    listener = socket.create_server(("127.0.0.1", 0))
    piece = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    piece["choices"] = [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(1 << 20)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
                try:
                    for _ in range(100):
                        connection.sendall(f"data: {json.dumps(piece)}\n\n".encode())
                        time.sleep(0.3)
                except OSError:  # the node hung up
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def expected(served_vlm, images, adapter):
    question = "What is in the picture?"
    return [served_vlm.ask(picture, question, adapter=adapter, **OPTIONS).text for picture in to_pil(images)]


def test_a_stopped_server_fails_over_to_the_fallback_endpoint_and_model(
    nodes, stopped_url, server, served_vlm, caplog
):
    images = torch.rand(2, 32, 48, 3)
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    inputs = node_inputs(stopped_url, model="beta", fallback_url=server.url, fallback_model="alpha")
    started = time.monotonic()
    (answers,) = node.answer(images, **inputs)
    assert answers == expected(served_vlm, images, "alpha") != expected(served_vlm, images, "beta")
    assert time.monotonic() - started < 30  # no retries of the stopped server before failing over
    assert f"{stopped_url} APIConnectionError; using the fallback 'alpha' at {server.url}" in caplog.text


def test_a_missing_model_falls_back_to_the_fallback_model_on_the_same_server(nodes, server, served_vlm):
    images = torch.rand(1, 32, 32, 3)
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    (answers,) = node.answer(images, **node_inputs(server.url, model="retired", fallback_model="alpha"))
    assert answers == expected(served_vlm, images, "alpha")


def test_when_the_fallback_fails_too_the_error_names_both_servers(nodes, stopped_url, server):
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    inputs = node_inputs(stopped_url, fallback_url=server.url, fallback_model="retired")
    with pytest.raises(ServerError) as failed:
        node.answer(torch.rand(1, 32, 32, 3), **inputs)
    assert str(failed.value) == (
        f"every endpoint failed: {stopped_url} APIConnectionError; {server.url} (retired) answered 404"
    )
    assert failed.value.status == 404
    assert failed.value.server_message.startswith("model 'retired' does not exist; this server has: tiny,")


def test_on_failure_message_answers_each_image_with_the_friendly_message(nodes, stopped_url, caplog):
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    inputs = node_inputs(stopped_url, on_failure="message", fallback_url=stopped_url)
    (answers,) = node.answer(torch.rand(2, 32, 32, 3), **inputs)
    assert answers == ["Vision model unavailable.", "Vision model unavailable."]
    assert "answered with its failure message: every endpoint failed" in caplog.text


def test_the_default_still_raises_and_a_bad_on_failure_is_named(nodes, stopped_url):
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    image = torch.rand(1, 32, 32, 3)
    minimal = {k: v for k, v in node_inputs(stopped_url).items() if k not in node.INPUT_TYPES()["optional"]}
    with pytest.raises(ServerError, match="could not connect"):
        node.answer(image, **minimal)  # a workflow saved before the optional inputs existed
    with pytest.raises(ValueError, match="on_failure='ignore': use one of raise, message"):
        node.answer(image, **node_inputs(stopped_url, on_failure="ignore"))


def test_a_server_that_never_answers_fails_over_after_timeout_s(nodes, silent_url, server, served_vlm):
    images = torch.rand(1, 32, 32, 3)
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    started = time.monotonic()
    with pytest.raises(ServerError, match=rf"^{silent_url}: no answer within the call's deadline of 2 s"):
        node.answer(images, **node_inputs(silent_url, timeout_s=1.0, fallback_url=silent_url))
    assert 2.0 <= time.monotonic() - started < 5  # timeout_s per server, retries included
    (answers,) = node.answer(images, **node_inputs(silent_url, timeout_s=5.0, fallback_url=server.url))
    assert answers == expected(served_vlm, images, "alpha")


def test_timeout_s_bounds_the_whole_answer_not_each_read(nodes, trickling_url):
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]()
    started = time.monotonic()
    with pytest.raises(
        ServerError, match=rf"^{trickling_url}: no answer within the call's deadline of 1\.5 s"
    ):
        node.answer(torch.rand(1, 32, 32, 3), **node_inputs(trickling_url, timeout_s=1.5))
    assert 1.5 <= time.monotonic() - started < 5  # each piece came within the read timeout
