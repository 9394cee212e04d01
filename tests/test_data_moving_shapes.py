"""The moving-shapes clips: deterministic, balanced, and their answers read back from the decoded frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmlab.data import GENERATORS, generate
from glmlab.data.moving_shapes import generate_moving_shapes
from glmlab.errors import ConfigError
from glmlab.videos import load_video


def foreground(record) -> list[np.ndarray]:
    """Each decoded frame's shape pixels (anything away from the background)."""
    video = load_video(record["video"], fps=record["metadata"]["fps"])
    assert video.indices == list(range(record["metadata"]["frames"]))
    background = np.array(record["metadata"]["background"])
    return [np.abs(frame.astype(int) - background).sum(-1) > 30 for frame in video.frames]


def test_records_are_deterministic_and_balanced():
    records = generate_moving_shapes(24, seed=3)
    again = generate_moving_shapes(24, seed=3)
    assert [r["video"] for r in records] == [r["video"] for r in again]
    by_type: dict[str, list[str]] = {}
    for record in records:
        by_type.setdefault(record["metadata"]["question_type"], []).append(record["answer"])
    assert sorted(by_type["direction"]) == ["down", "down", "left", "left", "right", "right", "up", "up"]
    for kind, classes in (("count", ["1", "2", "3"]), ("first", ["circle", "square", "triangle"])):
        assert sorted(set(by_type[kind])) == classes  # 8 answers over 3 classes: 2 or 3 of each
        assert sorted(by_type[kind].count(answer) for answer in classes) == [2, 3, 3]


def test_answers_are_exact_in_the_decoded_frames():
    for record in generate_moving_shapes(30, seed=1):
        masks = foreground(record)
        kind, answer = record["metadata"]["question_type"], record["answer"]
        if kind == "direction":
            (y0, x0), (y1, x1) = np.argwhere(masks[0]).mean(0), np.argwhere(masks[-1]).mean(0)
            moved = {"left": x0 - x1, "right": x1 - x0, "up": y0 - y1, "down": y1 - y0}
            assert moved[answer] > 30 and max(abs(x1 - x0), abs(y1 - y0)) == moved[answer]
        elif kind == "count":
            assert len(record["metadata"]["shapes"]) == int(answer)
            assert all(np.array_equal(mask, masks[0]) for mask in masks)  # still shapes
        else:
            first, second = record["metadata"]["shapes"]
            assert first["shape"] == answer != second["shape"]
            half = len(masks) // 2
            assert masks[half - 1].sum() < masks[half].sum()  # the second shape arrives halfway
            x0, y0, x1, y1 = first["start"]
            assert masks[0][y0 : y1 + 1, x0 : x1 + 1].sum() == masks[0].sum()  # only the first one before


def test_registered_and_written_to_a_folder(tmp_path):
    assert GENERATORS["moving-shapes"] is generate_moving_shapes
    records = generate("moving-shapes", 3, 0, tmp_path, frames=6, size=48)
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert [row["video"] for row in rows] == [f"videos/{r['id']}.mp4" for r in records]
    assert load_video(records[0]["video"], fps=4).frames.shape == (6, 48, 48, 3)


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match=r"^size=33: expected an even side of at least 32 pixels\.$"):
        generate_moving_shapes(1, size=33)
    with pytest.raises(ConfigError, match=r"^frames=2: expected at least 4"):
        generate_moving_shapes(1, frames=2)
