"""Helpers shared by the serve, client, export and ComfyUI tests (this module holds no tests).

Test adapters are glmlab's random adapters on the tiny checkpoint (target modules anchored to the
language model, optionally one vision module too), so that base, adapter A and adapter B answer
differently under greedy decoding. Fixtures defined here are
imported by the test modules (`from test_serve_support import server_fixture`; the fixture is named
`server`); each module that imports it gets its own server (module scope).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pytest

from glmlab.images import image_to_data_url

API_KEY = "test-key-0123456789"
TEXT_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate_up|down)_proj)"
VISION_TARGETS = r".*visual\.blocks\.\d+\.attn\.qkv"
GREEDY = {"temperature": 0, "max_tokens": 6}


def make_adapter(
    base: Path,
    out: Path,
    *,
    seed: int,
    rank: int = 4,
    vision: bool = False,
    target_modules: str | None = None,
    modules_to_save: list[str] | None = None,
) -> Path:
    """A random LoRA adapter (`glmlab.adapters.random_adapter`) for the tiny checkpoint at `base`."""
    from glmlab.adapters import random_adapter

    targets = target_modules or (f"({TEXT_TARGETS}|{VISION_TARGETS})" if vision else TEXT_TARGETS)
    return random_adapter(
        base,
        out,
        rank=rank,
        alpha=2 * rank,
        seed=seed,
        target_modules=targets,
        modules_to_save=modules_to_save,
    )


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


def data_url(image) -> str:
    return image_to_data_url(image)


def image_message(image, question: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(image)}},
                {"type": "text", "text": question},
            ],
        }
    ]
