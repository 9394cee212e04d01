"""Shared fixtures: one tiny Glm4v checkpoint per test session, built offline in seconds."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

# Before transformers/huggingface_hub are imported: no test may wait on the (absent) network.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def glmlab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own GLMLAB_HOME so nothing depends on ~/.cache."""
    home = tmp_path_factory.mktemp("glmlab-home")
    os.environ["GLMLAB_HOME"] = str(home)
    return home


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


def scene(width: int = 112, height: int = 112, colour: str = "red") -> Image.Image:
    """A small test picture: one filled circle on white."""
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=colour)
    return image


@pytest.fixture
def red_image() -> Image.Image:
    return scene()
