"""Shared fixtures: one tiny Glm4v checkpoint per test session, built offline in seconds, the models and
adapters built from it, and a glmlab server. Plain helpers are in support.py."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import pytest
from PIL import Image
from support import API_KEY, make_adapter, scene

# Before transformers/huggingface_hub are imported: no test may wait on the (absent) network.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def glmlab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own GLMLAB_HOME so nothing depends on ~/.cache."""
    home = tmp_path_factory.mktemp("glmlab-home")
    os.environ["GLMLAB_HOME"] = str(home)
    return home


# The GPU benchmark's model sizes (eval/bench/common.py): big enough that the memory is the model's
BENCH_TEXT = dict(
    hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2, intermediate_size=1536
)
BENCH_VISION = dict(depth=4, hidden_size=256, num_heads=4, intermediate_size=768)


@pytest.fixture(scope="session")
def bench_path(glmlab_home: Path) -> Path:
    """A random-weight checkpoint of the benchmark's sizes (186 M params, mostly the 151,552-token
    embeddings and lm_head), built once per session."""
    from glmlab import tiny

    return tiny.build(glmlab_home / "bench-like", text=BENCH_TEXT, vision=BENCH_VISION)


@pytest.fixture(scope="session")
def tiny_path(glmlab_home: Path) -> Path:
    from glmlab import tiny

    return tiny.ensure(glmlab_home)


@pytest.fixture(scope="session")
def vlm(tiny_path: Path):
    """The tiny model loaded through glmlab (shared: tests must not leave adapters active)."""
    import glmlab

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return glmlab.load("tiny")


@pytest.fixture(scope="session")
def vlm_bf16(tiny_path: Path):
    """The tiny model in bfloat16 on the CPU, for the invariants that must also hold in bf16 (shared:
    tests must not leave adapters active)."""
    import glmlab

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return glmlab.load("tiny", dtype="bfloat16", device="cpu")


@pytest.fixture
def red_image() -> Image.Image:
    return scene()


@functools.cache
def _adapter_set(root: str, base: str) -> dict[str, Path]:
    """Built once per test session, whichever module asks first."""
    folder = Path(root) / "adapters"
    return {
        "alpha": make_adapter(Path(base), folder / "alpha", seed=1),
        "beta": make_adapter(Path(base), folder / "beta", seed=2, rank=8),
        "gamma": make_adapter(Path(base), folder / "gamma", seed=3),
        "seeing": make_adapter(Path(base), folder / "seeing", seed=4, vision=True),
    }


@pytest.fixture(scope="session", name="adapters")
def adapters_fixture(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> dict[str, Path]:
    """alpha (rank 4) and beta (rank 8) are served at start; gamma is loaded at run time; seeing also
    adapts a vision block (for the vLLM export checks)."""
    return _adapter_set(str(tmp_path_factory.getbasetemp()), str(tiny_path))


@pytest.fixture(scope="session")
def vision_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> Path:
    """Rank 4 on the text model and on every vision module a recipe's `adapt_vision: all` trains (the
    vision blocks' attn.qkv, attn.proj and MLP, the merger): what vLLM's tower/connector LoRA takes."""
    from support import TEXT_TARGETS

    from glmlab.lora.recipe import VISION_TARGETS

    targets = f"({TEXT_TARGETS}|{VISION_TARGETS['all']})"
    return make_adapter(
        tiny_path, tmp_path_factory.mktemp("vision") / "vision", seed=6, target_modules=targets
    )


@pytest.fixture(scope="module", name="served_vlm")
def served_vlm_fixture(tiny_path: Path):
    """A tiny model of the module's own (the session `vlm` must not collect adapters)."""
    import glmlab

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = glmlab.load("tiny")
    return loaded


@pytest.fixture(scope="module", name="server")
def server_fixture(served_vlm, adapters):
    """glmlab's server on a free loopback port, with an API key and adapters alpha and beta."""
    from glmlab.serve import ServerSettings, start

    settings = ServerSettings(
        model="tiny",
        adapters={"alpha": str(adapters["alpha"]), "beta": str(adapters["beta"])},
        api_key=API_KEY,
        max_concurrency=8,
        max_request_bytes=2 * 1024 * 1024,
        max_input_pixels=4096 * 4096,
        timeout_s=60,
        port=0,
    )
    running = start(served_vlm, settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def scripted(tiny_path):
    """A second copy of the tiny checkpoint whose greedy answer is set with `support.script(model, text)`."""
    import torch

    import glmlab

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = glmlab.load(str(tiny_path))
    with torch.no_grad():
        for parameter in model.model.model.language_model.layers.parameters():
            parameter.zero_()  # every layer adds 0 to the residual stream: hidden = embedding
        model.model.model.language_model.norm.weight.fill_(1.0)
    return model


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA (trustme) and a certificate for 127.0.0.1 it signed, as PEM files in a folder."""
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    return folder


@pytest.fixture(scope="module")
def https_server(served_vlm, tls):
    """glmlab's server on loopback over HTTPS with the `tls` certificate (no API key)."""
    from glmlab.serve import ServerSettings, start

    settings = ServerSettings(
        model="tiny", port=0, ssl_certfile=str(tls / "cert.pem"), ssl_keyfile=str(tls / "key.pem")
    )
    running = start(served_vlm, settings)
    yield running
    running.stop()
