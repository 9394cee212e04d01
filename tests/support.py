"""Helpers shared by the test modules (plain functions and constants; the fixtures are in conftest.py).

- `scene`: a small test picture.
- Adapters: `make_adapter` writes a random LoRA adapter (`glmlab.adapters.random_adapter`) for the tiny
  checkpoint, target modules anchored to the language model (optionally one vision module too), so
  that base, adapter A and adapter B answer differently under greedy decoding.
- Servers: `API_KEY`, `data_url`, `image_message`, `video_message`, `GREEDY` (OpenAI field names).
- Videos: `gray_clip`, an MP4 whose frames say their own index.
- Browser tests: `CHROMIUM` (Debian's chromium, driven by Playwright), `CHROMIUM_ARGS`, `lab_page` (a
  Chromium page on JupyterLab showing a scratch copy of a notebook) and `run_all_cells`.
- Eval: `EVAL_DIR`, `shapes_suite`, `QUIET`, `script` (sets the scripted tiny model's greedy answer; the
  `scripted` fixture is that model), and a local copy of DocVQA's hub layout (`write_docvqa_copy`,
  `docvqa_rows`); `write_hub_copy` writes any benchmark's rows with the features of its hub dataset
  (`HUB_FEATURES`: ChartQA, TextVQA, OCRBench, MMMU, RefCOCO).
- Training: `tensorboard_scalars` reads the scalars of a run's TensorBoard event files.
- GGUF: `fake_llama_cpp` writes a stand-in llama.cpp checkout (its converter and llama-quantize keep the
  real ones' interfaces and write placeholder files), for what `export_gguf` does around them when the
  real llama.cpp (`make engines`) is not here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from glmlab.images import image_to_data_url

# torch, datasets and glmlab.eval are imported inside the helpers that need them: conftest imports this
# module before it sets HF_HUB_OFFLINE, which huggingface_hub reads when it is first imported.

API_KEY = "test-key-0123456789"
TEXT_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate_up|down)_proj)"
VISION_TARGETS = r".*visual\.blocks\.\d+\.attn\.qkv"
GREEDY = {"temperature": 0, "max_tokens": 6}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # scripts/install-test-deps.sh installs it
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


def gray_clip(frames: int = 20, fps: int = 4, width: int = 64, height: int = 48) -> bytes:
    """An MP4 whose frame i is flat gray level 8 * i, so a decoded frame tells which one it is."""
    import io

    import numpy as np

    from glmlab.videos import write_video

    buffer = io.BytesIO()
    write_video([np.full((height, width, 3), 8 * i, np.uint8) for i in range(frames)], buffer, fps=fps)
    return buffer.getvalue()


def video_message(url: str, question: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": question},
            ],
        }
    ]


def scene(width: int = 112, height: int = 112, colour: str = "red") -> Image.Image:
    """A small test picture: one filled circle on white."""
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=colour)
    return image


EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
QUIET = {"progress": False}
# what a saved eval run folder holds (glmlab.eval.run), sorted
RUN_FOLDER_FILES = [
    "accuracy.png",
    "config.json",
    "latency.png",
    "samples.jsonl",
    "summary.json",
    "thumbnails",
]


def script(model, text: str) -> None:
    """Make greedy decoding answer `text` then stop: a chain of distinct tokens, each naming the next.

    The chain starts at the prompt's last token, "\\n" either way: after the pre-filled
    `<think></think>` when thinking is off, after `<|assistant|>` when it is on.
    """
    tokenizer = model.tokenizer
    (start_id,) = tokenizer.encode("\n", add_special_tokens=False)
    chain = [
        start_id,
        *tokenizer.encode(text, add_special_tokens=False),
        tokenizer.convert_tokens_to_ids("<|user|>"),
    ]
    assert len(set(chain)) == len(chain), f"{text!r}: a bigram script needs distinct tokens"
    network = model.model
    import torch

    with torch.no_grad():
        network.lm_head.weight.zero_()
        embeddings = network.model.language_model.embed_tokens.weight
        for dimension, (current, following) in enumerate(itertools.pairwise(chain)):
            embeddings[current].zero_()
            embeddings[current, dimension] = 1.0  # one direction per chain token
            network.lm_head.weight[following, dimension] = 10.0


def shapes_suite(**overrides):
    from glmlab.eval import Suite

    return Suite.from_yaml(EVAL_DIR / "shapes.yaml", overrides=overrides)


def write_docvqa_copy(folder: Path, rows: list[dict]) -> Path:
    """A local parquet copy with lmms-lab/DocVQA's columns (the hub layout the docvqa suite maps)."""
    import datasets

    features = datasets.Features(
        {
            "questionId": datasets.Value("string"),
            "question": datasets.Value("string"),
            "question_types": datasets.List(datasets.Value("string")),
            "image": datasets.Image(),
            "docId": datasets.Value("int64"),
            "answers": datasets.List(datasets.Value("string")),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(
        str(folder / "validation-00000-of-00001.parquet")
    )
    return folder


def hub_features(name: str):
    """The `datasets.Features` of a benchmark's hub dataset, as the shipped suite loads it."""
    import datasets

    text, texts = datasets.Value("string"), datasets.List(datasets.Value("string"))
    layouts = {
        "chartqa": {"type": text, "question": text, "answer": text, "image": datasets.Image()},
        "textvqa": {
            "image_id": text,
            "question_id": datasets.Value("int64"),
            "question": text,
            "question_tokens": texts,
            "image": datasets.Image(),
            "image_width": datasets.Value("int64"),
            "image_height": datasets.Value("int64"),
            "flickr_original_url": text,
            "flickr_300k_url": text,
            "answers": texts,
            "image_classes": texts,
            "set_name": text,
            "ocr_tokens": texts,
        },
        "ocrbench": {
            "dataset": text,
            "question": text,
            "question_type": text,
            "answer": texts,
            "image": datasets.Image(),
        },
        "mmmu": {
            "id": text,
            "question": text,
            "options": text,
            "explanation": text,
            **{f"image_{k}": datasets.Image() for k in range(1, 8)},
            "img_type": text,
            "answer": text,
            "topic_difficulty": text,
            "question_type": text,
            "subfield": text,
        },
        "refcoco": {
            "question_id": text,
            "image": datasets.Image(),
            "question": text,
            "answer": texts,
            "segmentation": datasets.List(datasets.Value("float32")),
            "bbox": datasets.List(datasets.Value("float32")),
            "iscrowd": datasets.Value("int8"),
            "file_name": text,
        },
    }
    return datasets.Features(layouts[name])


def write_hub_copy(folder: Path, name: str, split: str, rows: list[dict]) -> Path:
    """A local parquet copy of a benchmark's hub split (`hub_features(name)`), read by `data.hub=folder`."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=hub_features(name)).to_parquet(
        str(folder / f"{split}-00000-of-00001.parquet")
    )
    return folder


def docvqa_rows(answers: list[list[str]]) -> list[dict]:
    return [
        {
            "questionId": f"q{k}",
            "question": f"What is written in box {k}?",
            "question_types": ["form"],
            "image": scene(),
            "docId": 100 + k,
            "answers": accepted,
        }
        for k, accepted in enumerate(answers)
    ]


# The interface glmlab uses of llama.cpp's convert_hf_to_gguf.py: TextModel.get_vocab_base_pre (which
# raises NotImplementedError for an unknown tokenizer), main() reading sys.argv. This one asks the
# pre-tokenizer question for the text model, as the real converter does, and writes a placeholder.
FAKE_CONVERTER = """
import sys

RECOGNISES = {recognises!r}


class TextModel:
    def get_vocab_base_pre(self, tokenizer):
        if RECOGNISES is None:
            raise NotImplementedError("BPE pre-tokenizer was not recognized")
        return RECOGNISES


def main():
    args = sys.argv[1:]
    if {fails!r}:
        sys.exit("fake converter: failing as asked")
    kind = "mmproj" if "--mmproj" in args else "text"
    pre = "" if kind == "mmproj" else TextModel().get_vocab_base_pre(None)
    outtype = args[args.index("--outtype") + 1]
    with open(args[args.index("--outfile") + 1], "w") as out:
        out.write(f"fake {{kind}} {{outtype}} {{pre}}")
"""
FAKE_QUANTIZE = """#!/bin/sh
# llama-quantize IN OUT TYPE
echo "quantized $1 $3" > "$2"
"""


def fake_llama_cpp(folder: Path, *, recognises: str | None = None, fails: bool = False) -> Path:
    """A stand-in llama.cpp checkout at `folder` (with build/bin/llama-quantize); returns `folder`."""
    import stat

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER.format(recognises=recognises, fails=fails))
    binary = folder / "build" / "bin" / "llama-quantize"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text(FAKE_QUANTIZE)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return folder


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the TensorBoard events under `folder` -> its (step, value) points."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_lab(root: Path, home: Path, glmlab_home: Path, notebook: str) -> tuple[subprocess.Popen, str]:
    """JupyterLab on a free loopback port with a fresh token, config and data folders, opening `notebook`
    (a file name in `root`); returns (process, url)."""
    port, token = free_port(), secrets.token_hex(16)
    labconfig, notebook_settings = (
        home / "config" / "labconfig",
        home / "settings" / "@jupyterlab" / "notebook-extension",
    )
    labconfig.mkdir(parents=True)
    notebook_settings.mkdir(parents=True)
    # no "Jupyter news?" toast, no kernel dialog, and every cell stays in the page (no virtual scrolling)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    (notebook_settings / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "autoStartDefaultKernel": True})
    )
    env = {
        **os.environ,
        "GLMLAB_HOME": str(glmlab_home),
        "HF_HUB_OFFLINE": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with (home / "lab.log").open("w") as log:  # the server keeps its own handle
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            return process, f"{url}/lab/tree/{notebook}?token={token}"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.terminate()
                pytest.fail(f"JupyterLab did not start; its log:\n{(home / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.3)


@contextlib.contextmanager
def lab_page(notebook: Path, tmp_path: Path, glmlab_home: Path) -> Iterator[Any]:
    """A Chromium page on JupyterLab showing a scratch copy of `notebook` (nothing is saved into the repo)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: run scripts/install-test-deps.sh")
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(notebook, root / notebook.name)
    process, url = start_lab(root, tmp_path / "jupyter", glmlab_home, notebook.name)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1600},
            )
            page = browser.new_page()
            page.set_default_timeout(90_000)
            page.goto(url)
            yield page
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)


def run_all_cells(page, code_cells: int) -> None:
    """Run > Run All Cells, then wait until every code cell shows an execution count."""
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()  # the status bar: kernel started
    page.locator(".jp-Notebook .jp-CodeCell").first.click()  # the notebook is the current widget
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(
        ".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")
    ).click()
    page.wait_for_function(
        """count => { const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                      return prompts.length === count && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)); }""",
        arg=code_cells,
        timeout=120_000,
    )
