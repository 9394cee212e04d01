"""Moving shapes: short generated clips whose questions need more than one frame, with exact answers.

Each clip is `frames` frames at `fps` of flat shapes (glmlab.data.shapes' colours and drawing, no
anti-aliasing) on a plain background, encoded as a near-lossless MP4 (`glmlab.videos.write_video`).
One fixed question per type, one-word answers, each answer class equally frequent in a seeded order:

- `direction`: "Which way does the shape move?" -> left | right | up | down (one shape crossing the clip)
- `count`: "How many shapes are there?" -> 1..max_count (still shapes, each in its own grid cell)
- `first`: "Which shape appears first?" -> circle | square | triangle (two shapes of different kinds;
  the second appears halfway through the clip)

Metadata holds `question_type`, `answer_type` ("closed") and the drawing spec of every shape (kind,
colour, box in the first and last frame it is shown, the frame it appears at): the exact ground truth.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from glmlab.data.shapes import BACKGROUNDS, COLORS, SHAPES, draw_shapes
from glmlab.errors import ConfigError
from glmlab.videos import write_video

QUESTIONS = {
    "direction": "Which way does the shape move?",
    "count": "How many shapes are there?",
    "first": "Which shape appears first?",
}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DATA_FILE = "data.jsonl"
VIDEO_DIR = "videos"


def generate_moving_shapes(
    n: int,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    size: int = 64,
    frames: int = 8,
    fps: int = 4,
    question_types: tuple[str, ...] = ("direction", "count", "first"),
    max_count: int = 3,
) -> list[dict[str, Any]]:
    """`n` clip records ({"id", "video": MP4 bytes, "question", "answer", "metadata"}), deterministic
    given `seed`. With `out_dir`, the MP4s and data.jsonl are written there and "video" is the file's path.

    size: frame side in px (even; 64 is resized to 56 by GLM's processor, 4 tokens a frame pair).
    frames, fps: clip length (frames / fps seconds; 8 at 4 fps is 2 s, 4 frames at glmlab's 2 fps sampling).
    """
    _check_options(n, size, frames, question_types, max_count)
    rng = np.random.default_rng(seed)
    classes = {
        "direction": list(DIRECTIONS),
        "count": [str(k) for k in range(1, max_count + 1)],
        "first": list(SHAPES),
    }
    queues: dict[str, list[str]] = {kind: [] for kind in question_types}
    records = []
    for index in range(n):
        kind = question_types[index % len(question_types)]
        if not queues[kind]:
            queues[kind] = [classes[kind][i] for i in rng.permutation(len(classes[kind]))]
        answer = queues[kind].pop()
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        tracks = _tracks(kind, answer, size, frames, rng)
        clip = [draw_shapes(_visible(tracks, t, frames), size, background) for t in range(frames)]
        buffer = io.BytesIO()
        write_video([np.asarray(image) for image in clip], buffer, fps=fps)
        records.append(
            {
                "id": f"moving-shapes-s{seed}-{index:05d}",
                "video": buffer.getvalue(),
                "question": QUESTIONS[kind],
                "answer": answer,
                "metadata": {
                    "question_type": kind,
                    "answer_type": "closed",
                    "shapes": tracks,
                    "background": list(background),
                    "frames": frames,
                    "fps": fps,
                },
            }
        )
    return _write(records, out_dir)


def _check_options(n: int, size: int, frames: int, question_types: tuple[str, ...], max_count: int) -> None:
    if n < 0:
        raise ConfigError(f"n={n}: expected a count >= 0.")
    if size < 32 or size % 2:
        raise ConfigError(f"size={size}: expected an even side of at least 32 pixels.")
    if frames < 4:
        raise ConfigError(f"frames={frames}: expected at least 4 so that motion and order show.")
    unknown = [kind for kind in question_types if kind not in QUESTIONS]
    if unknown or not question_types:
        raise ConfigError(f"question_types={question_types!r}: expected some of {tuple(QUESTIONS)}.")
    if not 1 <= max_count <= 4:
        raise ConfigError(f"max_count={max_count}: expected 1..4 (one shape per cell of a 2x2 grid).")


def _random_spec(rng: np.random.Generator, shape: str | None = None) -> dict[str, Any]:
    colors = list(COLORS)
    return {
        "shape": shape or SHAPES[int(rng.integers(len(SHAPES)))],
        "color": colors[int(rng.integers(len(colors)))],
    }


def _tracks(kind: str, answer: str, size: int, frames: int, rng: np.random.Generator) -> list[dict]:
    """Every shape's appearance frame and its boxes at its first and last shown frame."""
    side = size // 4
    if kind == "direction":
        dx, dy = DIRECTIONS[answer]
        travel = size - side - 4  # from one edge to the other
        across = int(rng.integers(2, size - side - 2))
        start = (
            [2 if dx > 0 else size - side - 2, across] if dx else [across, 2 if dy > 0 else size - side - 2]
        )
        end = [start[0] + dx * travel, start[1] + dy * travel]
        return [{**_random_spec(rng), "appears": 0, "start": _box(start, side), "end": _box(end, side)}]
    if kind == "count":
        cell = size // 2
        cells = rng.permutation(4)[: int(answer)]
        tracks = []
        for cell_index in cells:
            row, col = divmod(int(cell_index), 2)
            corner = [
                col * cell + int(rng.integers(2, cell - side - 1)),
                row * cell + int(rng.integers(2, cell - side - 1)),
            ]
            tracks.append(
                {**_random_spec(rng), "appears": 0, "start": _box(corner, side), "end": _box(corner, side)}
            )
        return tracks
    second = [shape for shape in SHAPES if shape != answer][int(rng.integers(len(SHAPES) - 1))]
    cell = size // 2
    left = [int(rng.integers(2, cell - side - 1)), int(rng.integers(2, size - side - 2))]
    right = [cell + int(rng.integers(2, cell - side - 1)), int(rng.integers(2, size - side - 2))]
    boxes = [left, right] if rng.integers(2) else [right, left]  # the first shape is on either side
    return [
        {
            **_random_spec(rng, answer),
            "appears": 0,
            "start": _box(boxes[0], side),
            "end": _box(boxes[0], side),
        },
        {
            **_random_spec(rng, second),
            "appears": frames // 2,
            "start": _box(boxes[1], side),
            "end": _box(boxes[1], side),
        },
    ]


def _box(corner: list[int], side: int) -> list[int]:
    return [corner[0], corner[1], corner[0] + side - 1, corner[1] + side - 1]


def _visible(tracks: list[dict], t: int, frames: int) -> list[dict]:
    """The drawing spec of frame `t`: shapes that have appeared, moved linearly from start to end."""
    specs = []
    for track in tracks:
        if t < track["appears"]:
            continue
        share = (t - track["appears"]) / max(frames - 1 - track["appears"], 1)
        box = [round(a + (b - a) * share) for a, b in zip(track["start"], track["end"], strict=True)]
        specs.append({"shape": track["shape"], "color": track["color"], "box": box})
    return specs


def _write(records: list[dict[str, Any]], out_dir: str | Path | None) -> list[dict[str, Any]]:
    """With `out_dir`: videos/<id>.mp4 and data.jsonl, the records pointing at the files."""
    if out_dir is None:
        return records
    out_dir = Path(out_dir).resolve()
    (out_dir / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    written = []
    for record in records:
        path = out_dir / VIDEO_DIR / f"{record['id']}.mp4"
        path.write_bytes(record["video"])
        written.append({**record, "video": str(path)})
    with (out_dir / DATA_FILE).open("w", encoding="utf-8") as file:
        for record in written:
            row = {**record, "video": str(Path(record["video"]).relative_to(out_dir))}
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    return written
