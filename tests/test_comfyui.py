"""The ComfyUI "GLM Visual QA" node, loaded the way ComfyUI loads a custom-node folder, against a server."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pytest
import torch
from test_serve_support import (  # noqa: F401 (fixtures)
    API_KEY,
    adapters_fixture,
    served_vlm_fixture,
    server_fixture,
)

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
        "api_key": API_KEY,
        **overrides,
    }


def test_the_folder_defines_comfyuis_mappings(nodes):
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == {"GLMVisualQA"}
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["GLMVisualQA"] == "GLM Visual QA"
    node = nodes.NODE_CLASS_MAPPINGS["GLMVisualQA"]
    required = node.INPUT_TYPES()["required"]
    assert required["image"] == ("IMAGE",) and required["prompt"][1]["multiline"] is True
    assert required["server_url"][1]["default"] == "http://localhost:8080/v1"
    assert (node.RETURN_TYPES, node.OUTPUT_IS_LIST) == (("STRING",), (True,))
    assert (FOLDER / "README.md").read_text().count("custom_nodes") >= 1


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
