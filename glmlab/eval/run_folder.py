"""The run folder while `evaluate` writes it: opened (or checked before it is resumed), rows appended
as each sample finishes, thumbnails of wrong answers kept for the report.

`glmlab.eval.run` defines the folder's files and reads them back (`EvalRun.load`); this module is the
writing side during a run, so the harness only asks and scores.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glmlab.errors import ConfigError, InputError
from glmlab.eval.run import (
    CONFIG_FILE,
    SAMPLES_FILE,
    THUMBNAIL_DIR,
    SampleLog,
    json_row,
    read_config,
    read_samples,
    write_json,
)
from glmlab.eval.samples import EvalSample, SampleSet
from glmlab.files import atomic_write
from glmlab.images import encode_png
from glmlab.videos import is_video, load_video

THUMBNAIL_PX = 160
# config.json keys that must match for a run folder to be resumed (limit and speed settings may change).
RESUME_KEYS = ("suite", "model")


def open_run_dir(folder: Path, config: dict[str, Any], resume: bool) -> Path:
    """Create the run folder, or check that the run it holds is this one before resuming it."""
    existing = folder / CONFIG_FILE
    has_rows = bool(read_samples(folder / SAMPLES_FILE))
    if existing.is_file() and has_rows:
        if not resume:
            raise ConfigError(
                f"run_dir {folder}: already holds samples of a run. Pass resume=True (CLI: --resume) to "
                "continue it, or choose another folder."
            )
        previous = read_config(existing)
        changed = [key for key in RESUME_KEYS if json_row(previous.get(key, {})) != json_row(config[key])]
        if changed:
            raise ConfigError(
                f"run_dir {folder}: holds a run with a different {' and '.join(changed)}; resuming would "
                "mix two runs. Choose another run_dir."
            )
        config["created_at"] = previous.get("created_at", config["created_at"])
    folder.mkdir(parents=True, exist_ok=True)
    write_json(existing, config)
    return folder


class RowWriter:
    """Keeps each finished row: thumbnail (if wrong), samples.jsonl (fsynced), then the callback."""

    def __init__(
        self,
        sample_set: SampleSet,
        folder: Path | None,
        thumbnails_left: int,
        on_sample: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.sample_set, self.folder, self.thumbnails_left = sample_set, folder, thumbnails_left
        self.on_sample = on_sample
        self.rows: dict[str, dict[str, Any]] = {}
        self.thumbnails: dict[str, bytes] = {}
        self.log = SampleLog(folder / SAMPLES_FILE) if folder else None

    def add(self, sample: EvalSample, row: dict[str, Any]) -> None:
        first_metric = self.sample_set.suite.metrics[0].name
        if self.thumbnails_left > 0 and row[first_metric] < 1.0:
            picture = _thumbnail(self.sample_set, sample)
            if picture is not None:
                row["thumbnail"], self.thumbnails[picture[0]] = picture
                self.thumbnails_left -= 1
                if self.folder:
                    (self.folder / THUMBNAIL_DIR).mkdir(exist_ok=True)
                    atomic_write(self.folder / THUMBNAIL_DIR / picture[0], picture[1])
        self.rows[sample.id] = self.log.append(row) if self.log else json_row(row)
        if self.on_sample is not None:
            self.on_sample(self.rows[sample.id])

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.log:
            self.log.close()


def _thumbnail(sample_set: SampleSet, sample: EvalSample) -> tuple[str, bytes] | None:
    """(file name, PNG bytes) of a small copy of the sample's first image (a video's first sampled
    frame); None if it has neither."""
    media = sample_set.media(sample)
    if not media:
        return None
    first = media[0]
    if is_video(first):
        try:
            first = load_video(first, max_frames=2).images()[0]
        except InputError:  # the sample's own answer already records why its video failed
            return None
    image = first.convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample.id) + ".png", encode_png(image)


def stored_thumbnails(folder: Path | None, rows: list[dict], new: dict[str, bytes]) -> dict[str, bytes]:
    names = [row["thumbnail"] for row in rows if row.get("thumbnail")]
    if folder is None:
        return {name: new[name] for name in names if name in new}
    return {
        name: (folder / THUMBNAIL_DIR / name).read_bytes()
        for name in names
        if (folder / THUMBNAIL_DIR / name).is_file()
    }
