"""Coloured shapes: the smallest visual task, one a tiny random model can learn with LoRA on a CPU.

Each image is a plain light background with one to `max_count` flat shapes (circle, square,
triangle) in six well-separated colours, drawn without anti-aliasing so every pixel is either
background or exactly one shape colour. Questions come from one fixed template per type with
one-word answers, and the answers of each type are balanced (each class appears equally often, in
a seeded order), so a model cannot score by guessing the majority class:

- `color`: "What color is the shape?" -> "red" (one shape in the image)
- `shape`: "What shape is it?" -> "circle" (one shape)
- `count`: "How many shapes are there?" -> "2" (1..max_count shapes, each in its own grid cell)

Metadata holds `question_type`, `answer_type` ("closed") and the drawing spec (`shapes`: kind,
colour and bounding box of each), which is the exact ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from glmlab.data.loaders import write_and_reference
from glmlab.errors import ConfigError

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 150, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ((255, 255, 255), (236, 236, 236), (222, 226, 232))
QUESTIONS = {
    "color": "What color is the shape?",
    "shape": "What shape is it?",
    "count": "How many shapes are there?",
}


def generate_shapes(
    n: int,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    size: int = 112,
    question_types: tuple[str, ...] = ("color", "shape", "count"),
    max_count: int = 3,
    colors: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """`n` shape records, deterministic given `seed`.

    size: image side in pixels (112 = 8x8 vision patches of 14 px; 56 is the smallest sensible).
    question_types: which of "color", "shape", "count" to ask, in turn.
    max_count: most shapes in a count image (2..4; shapes sit in the cells of a 2x2 grid).
    colors: restrict to these colour names (default all six).
    With `out_dir`, PNGs and data.jsonl are written there and the records point at the files.
    """
    colors = tuple(colors or COLORS)
    _check_options(n, size, question_types, max_count, colors)
    rng = np.random.default_rng(seed)
    classes = {
        "color": list(colors),
        "shape": list(SHAPES),
        "count": [str(k) for k in range(1, max_count + 1)],
    }
    queues: dict[str, list[str]] = {kind: [] for kind in question_types}
    records = []
    for index in range(n):
        kind = question_types[index % len(question_types)]
        if not queues[kind]:
            queues[kind] = [classes[kind][i] for i in rng.permutation(len(classes[kind]))]
        answer = queues[kind].pop()
        specs = _specs_for(kind, answer, colors, rng)
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        specs = _place(specs, size, rng)
        records.append(
            {
                "id": f"shapes-s{seed}-{index:05d}",
                "image": draw_shapes(specs, size, background),
                "question": QUESTIONS[kind],
                "answer": answer,
                "metadata": {
                    "question_type": kind,
                    "answer_type": "closed",
                    "shapes": specs,
                    "background": list(background),
                },
            }
        )
    return write_and_reference(records, out_dir)


def _check_options(
    n: int, size: int, question_types: tuple[str, ...], max_count: int, colors: tuple[str, ...]
) -> None:
    if n < 0:
        raise ConfigError(f"n={n}: expected a count >= 0.")
    if size < 32:
        raise ConfigError(f"size={size}: expected at least 32 pixels so shapes stay recognisable.")
    unknown = [kind for kind in question_types if kind not in QUESTIONS]
    if unknown or not question_types:
        raise ConfigError(f"question_types={question_types!r}: expected some of {tuple(QUESTIONS)}.")
    if not 2 <= max_count <= 4:
        raise ConfigError(f"max_count={max_count}: expected 2..4 (one shape per cell of a 2x2 grid).")
    bad = [color for color in colors if color not in COLORS]
    if bad or len(colors) < 2:
        raise ConfigError(f"colors={colors!r}: expected two or more of {tuple(COLORS)}.")


def _specs_for(kind: str, answer: str, colors: tuple[str, ...], rng: np.random.Generator) -> list[dict]:
    """What to draw so that `answer` is right: the asked attribute fixed, the others random."""
    count = int(answer) if kind == "count" else 1
    specs = [
        {"shape": SHAPES[int(rng.integers(len(SHAPES)))], "color": colors[int(rng.integers(len(colors)))]}
        for _ in range(count)
    ]
    if kind == "color":
        specs[0]["color"] = answer
    elif kind == "shape":
        specs[0]["shape"] = answer
    return specs


def _place(specs: list[dict], size: int, rng: np.random.Generator) -> list[dict]:
    """Give each shape a box: one shape anywhere, several each in its own cell of a 2x2 grid (no overlap)."""
    grid = 1 if len(specs) == 1 else 2
    cell = size // grid
    cells = rng.permutation(grid * grid)[: len(specs)]
    placed = []
    for spec, cell_index in zip(specs, cells, strict=True):
        low, high = (0.3, 0.55) if grid == 1 else (0.5, 0.8)
        side = max(10, int(cell * rng.uniform(low, high)))
        row, col = divmod(int(cell_index), grid)
        x0 = col * cell + 2 + int(rng.integers(0, max(1, cell - side - 4)))
        y0 = row * cell + 2 + int(rng.integers(0, max(1, cell - side - 4)))
        placed.append({**spec, "box": [x0, y0, x0 + side - 1, y0 + side - 1]})
    return placed


def draw_shapes(specs: list[dict], size: int, background: tuple[int, int, int]) -> Image.Image:
    """Render a drawing spec (shape, color, box) without anti-aliasing."""
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for spec in specs:
        x0, y0, x1, y1 = spec["box"]
        fill = COLORS[spec["color"]]
        if spec["shape"] == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif spec["shape"] == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    return image
