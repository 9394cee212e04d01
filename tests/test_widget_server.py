"""VQAWidget on a glmlab.Client: glmlab's server in-process over the tiny model, and a server that is down."""

from __future__ import annotations

import html
import socket
import warnings

import pytest
from support import scene

import glmlab
from glmlab.serve import start
from glmlab.widgets import VQAWidget, random_adapter

QUESTION = "What is in the picture?"
GREEDY = {"max_new_tokens": 12, "temperature": 0.0, "thinking": False}


@pytest.fixture(scope="module")
def served(vlm, tmp_path_factory):
    """The shared tiny model with a random adapter "demo", served on a free loopback port."""
    vlm.load_adapter(
        random_adapter(vlm, tmp_path_factory.mktemp("adapter") / "demo"), name="demo", activate=False
    )
    server = start(vlm)
    yield server
    server.stop()
    vlm.unload_adapter("demo")


def make_widget(model) -> VQAWidget:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        widget = VQAWidget(model, **GREEDY)
    widget.set_image(scene())
    widget.question.value = QUESTION
    return widget


def test_server_widget_lists_the_servers_models_as_adapters(served):
    widget = make_widget(glmlab.Client(served.url))
    assert widget.adapter.options == (("tiny (base model)", ""), ("demo", "demo"))
    assert widget.adapter.value == ""


def test_a_client_model_the_server_lacks_falls_back_to_the_base_model_and_says_so(served):
    widget = make_widget(glmlab.Client(served.url, model="not-served"))
    assert widget.adapter.value == "" and "'not-served' is not served here" in html.unescape(
        widget.error.value
    )
    widget_demo = make_widget(glmlab.Client(served.url, model="demo"))
    assert widget_demo.adapter.value == "demo" and widget_demo.error.value == ""


def test_server_widget_answers_like_the_local_model_with_either_adapter(served, vlm):
    widget = make_widget(glmlab.Client(served.url))
    widget.ask().join()
    widget.adapter.value = "demo"
    widget.ask().join()
    base = vlm.ask(scene(), QUESTION, adapter=None, max_new_tokens=12, temperature=0, thinking=False)
    demo = vlm.ask(scene(), QUESTION, adapter="demo", max_new_tokens=12, temperature=0, thinking=False)
    assert widget.history["answer"].tolist() == [base.text, demo.text]
    assert widget.history["adapter"].tolist() == ["base model", "demo"]
    assert widget.history["image_tokens"].tolist() == [16, 16]
    assert widget.timing.value.endswith(f"tokens in {demo.usage.prompt_tokens} (16 image) / out 12")


def test_server_that_is_down_is_reported_and_the_widget_still_works(vlm):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    widget = make_widget(glmlab.Client(url, retries=0, timeout=5))
    assert f"{url}: could not connect" in widget.error.value
    assert "is the server running?" in widget.error.value
    widget.ask().join()
    assert f"{url}: could not connect" in widget.error.value
    assert widget.status.value.startswith("Not answered") and not widget.ask_button.disabled
