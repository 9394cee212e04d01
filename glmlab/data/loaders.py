"""Load records from any source into one `datasets.Dataset`, and write them back as a data folder.

Sources: a data folder (`data.jsonl` + image files, paths relative to the folder), a `.jsonl` file, a
pandas DataFrame, a list of dicts, a `datasets.Dataset`, or a hub dataset name (through
`datasets.load_dataset`); `format` reads other tools' layouts too (`glmlab.data.formats`: ShareGPT/LLaVA,
LLaMA-Factory, a CSV beside its images). Whatever the source, the result has the same four columns:

- `id` (string or null), `images` (a list of `datasets.Image`), `videos` (a list of video files'
  bytes; a record has images or videos), `messages` (`[{"role", "content"}]`, string contents, last
  one the assistant's answer), `metadata` (a JSON string of every other field).

Bad rows either stop the load (`on_error="raise"`, the default) with an `InputError` naming the row
and the problem, or are skipped (`on_error="skip"`): then a warning is logged and the `LoadReport` from
`load_records_with_report` lists each skipped row and the counts per reason. Nothing is dropped
silently. `save_records` writes the folder that `load_records` reads back.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from glmlab.data.formats import FORMATS, Format, read_rows
from glmlab.data.records import RecordError, json_default, normalise_row
from glmlab.errors import ConfigError, InputError
from glmlab.images import encode_png, to_pil_list
from glmlab.videos import sniff_container

logger = logging.getLogger(__name__)

DATA_FILE = "data.jsonl"
IMAGE_DIR = "images"
VIDEO_DIR = "videos"
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class SkippedRow:
    """One row left out by `on_error="skip"`: where it was, why (one of `REASONS`), the full message."""

    index: int | None
    record_id: str | None
    reason: str
    message: str


@dataclass
class LoadReport:
    """What a load read, kept and skipped; `skipped_by_reason` counts skipped rows per reason."""

    source: str
    rows_read: int = 0
    rows_loaded: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(row.reason for row in self.skipped))

    def summary(self) -> str:
        text = f"{self.source}: loaded {self.rows_loaded} of {self.rows_read} rows"
        if self.skipped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped_by_reason.items())
            text += f"; skipped {len(self.skipped)} ({reasons})"
        return text


@dataclass
class _Source:
    name: str
    rows: Iterator[tuple[int, Any]]
    image_root: Path | None


def load_records(source: Any, **options: Any):
    """Load records from `source` into a `datasets.Dataset`; options and sources as
    `load_records_with_report`, without its report."""
    return load_records_with_report(source, **options)[0]


def load_records_with_report(
    source: Any,
    *,
    split: str | None = None,
    on_error: str = "raise",
    limit: int | None = None,
    columns: Mapping[str, str] | None = None,
    image_root: str | Path | None = None,
    hub_options: Mapping[str, Any] | None = None,
    format: str = "glmlab",
):
    """Load records from `source` and return `(dataset, LoadReport)`.

    source: a data folder or `.jsonl` file (str or Path), a pandas DataFrame, a list of dicts, a
        `datasets.Dataset`, or a hub dataset name (any string that is not a local path).
    split: for a hub name, the split to load (default "train"); for a folder, read `<split>.jsonl`
        instead of `data.jsonl`.
    on_error: "raise" stops at the first bad row with an `InputError` naming it; "skip" leaves it out,
        logs a warning and records it in the report.
    limit: stop once this many records are loaded (rows skipped on the way do not count).
    columns: renames source fields to record fields, e.g. `{"query": "question", "label": "answer"}`.
    image_root: folder that relative image paths are read from (default: the data folder, else the
        current directory).
    hub_options: extra keyword arguments for `datasets.load_dataset` (revision, name, cache_dir, ...).
    format: the rows' layout, one of `glmlab.data.formats.FORMATS` ("glmlab", "sharegpt",
        "llama_factory", "csv"): which files a folder holds, and how each row becomes a record.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error={on_error!r}: expected one of {ON_ERROR}.")
    if format not in FORMATS:
        raise ConfigError(f"format={format!r}: expected one of {tuple(FORMATS)}.")
    layout = FORMATS[format]
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit}: expected a positive number of records, or None for all.")
    opened = _open_source(source, split, hub_options, layout, columns)
    root = Path(image_root) if image_root is not None else opened.image_root
    report, records = LoadReport(source=opened.name), []
    for index, row in opened.rows:
        if limit is not None and len(records) >= limit:
            break
        report.rows_read += 1
        try:
            if isinstance(row, RecordError):
                raise row
            records.append(
                normalise_row(
                    _renamed(row, columns),
                    index=index,
                    source=opened.name,
                    image_root=root,
                    convert=layout.convert,
                )
            )
        except RecordError as error:
            if on_error == "raise":
                raise
            report.skipped.append(SkippedRow(error.index, error.record_id, error.reason, str(error)))
    report.rows_loaded = len(records)
    if report.skipped:
        logger.warning("%s", report.summary())
    if not records:
        raise InputError(
            f"{report.summary()}: no usable record; fix the rows above or point at another source."
        )
    return _to_dataset(records), report


def features():
    """The `datasets.Features` every loaded dataset has."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "videos": datasets.List(datasets.Value("binary")),
            "messages": datasets.List(message),
            "metadata": datasets.Value("string"),
        }
    )


def _to_dataset(records: list[dict[str, Any]]):
    import datasets

    return datasets.Dataset.from_list(records, features=features())


def _renamed(row: Any, columns: Mapping[str, str] | None) -> Any:
    if not columns or not isinstance(row, Mapping):
        return row
    return {columns.get(key, key): value for key, value in row.items()}


# ---- sources --------------------------------------------------------------------------------------


def _open_source(
    source: Any,
    split: str | None,
    hub_options: Mapping[str, Any] | None,
    layout: Format,
    columns: Mapping[str, str] | None,
) -> _Source:
    import datasets
    import pandas as pd

    if isinstance(source, datasets.Dataset):
        return _Source("dataset", enumerate(_stored_images(source)), None)
    if isinstance(source, pd.DataFrame):
        return _Source("DataFrame", enumerate(source.to_dict("records")), None)
    if isinstance(source, list | tuple):
        return _Source("list", enumerate(source), None)
    if isinstance(source, Path) or (isinstance(source, str) and Path(source).exists()):
        return _local_source(Path(source), split, layout, columns)
    if isinstance(source, str):
        return _Source(source, enumerate(_stored_images(_hub_dataset(source, split, hub_options))), None)
    raise InputError(
        f"{type(source).__name__} object: not a record source. Pass a data folder, a .jsonl file, "
        "a pandas DataFrame, a list of dicts, a datasets.Dataset or a hub dataset name."
    )


def _local_source(
    path: Path, split: str | None, layout: Format, columns: Mapping[str, str] | None
) -> _Source:
    if path.is_dir():
        stem = "data" if split is None else split
        found = [
            path / f"{stem}{suffix}" for suffix in layout.suffixes if (path / f"{stem}{suffix}").is_file()
        ]
        if not found:
            names = " or ".join(f"{stem}{suffix}" for suffix in layout.suffixes)
            holds = (
                f"{DATA_FILE} (one JSON record a line) and its image files (see glmlab.data.save_records)"
                if layout.name == "glmlab"
                else f"{names} and its image files, or pass the file itself"
            )
            raise InputError(f"{path}: no {names} in this folder; a {layout.name} data folder holds {holds}.")
        file = found[0]
    elif path.is_file() and path.suffix in layout.suffixes:
        file = path
    elif path.exists():
        kinds = " or ".join(layout.suffixes)
        raise InputError(f"{path}: not a data folder or {kinds} file (format {layout.name!r}).")
    else:
        raise InputError(f"{path}: no such folder or file.")
    return _Source(str(file), read_rows(file, columns), file.parent)


def _stored_images(dataset: Any) -> Any:
    """The dataset with its image columns left undecoded: records keep the stored bytes (a JPEG stays
    the same JPEG) instead of decoding every image to PIL and re-encoding it as PNG."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):  # a list of images
            dataset = dataset.cast_column(name, type(feature)(datasets.Image(decode=False)))
    return dataset


def _hub_dataset(name: str, split: str | None, hub_options: Mapping[str, Any] | None):
    import datasets

    if split is None:
        split = "train"
        logger.info("%s: split -> 'train' (none given)", name)
    try:
        return datasets.load_dataset(name, split=split, **dict(hub_options or {}))
    except Exception as error:  # datasets raises many types (network, missing split, bad config)
        raise InputError(
            f"{name}: not a local path, and loading it as a hub dataset failed "
            f"({type(error).__name__}: {error}). Check the name and split, or pass a local "
            "folder."
        ) from error


# ---- writing a data folder ------------------------------------------------------------------------


def save_records(
    records: Iterable[Mapping[str, Any]], out_dir: str | Path, *, filename: str = DATA_FILE
) -> Path:
    """Write records as a data folder (`data.jsonl` + `images/`, `videos/`) that `load_records` reads back.

    PIL images (and other in-memory images) are saved as PNG under `images/`; videos given as bytes are
    saved as they are under `videos/`; files already inside `out_dir` are referenced by relative path,
    others are copied in. Returns the jsonl path.
    """
    out_dir = Path(out_dir)
    _write_folder(records, out_dir, filename)
    return out_dir / filename


def write_and_reference(records: list[dict[str, Any]], out_dir: str | Path | None) -> list[dict[str, Any]]:
    """For generators: with `out_dir`, write the folder and return records whose images are file paths."""
    if out_dir is None:
        return records
    out_dir = Path(out_dir).resolve()
    written = _write_folder(records, out_dir, DATA_FILE)
    return [
        {
            **row,
            **{key: [str(out_dir / path) for path in row[key]] for key in ("images", "videos") if key in row},
        }
        for row in written
    ]


def _write_folder(records: Iterable[Mapping[str, Any]], out_dir: Path, filename: str) -> list[dict[str, Any]]:
    out_dir = out_dir.resolve()
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    written, used_stems = [], set()
    for index, record in enumerate(records):
        stem = _file_stem(record, index, used_stems)
        row = {
            key: value for key, value in record.items() if key not in ("image", "images", "video", "videos")
        }
        for kind, write in (("image", _write_image), ("video", _write_video)):
            values = record.get(f"{kind}s", record.get(kind))
            if values is None:
                continue
            values = values if isinstance(values, list | tuple) else [values]
            row[f"{kind}s"] = [
                write(value, out_dir, f"{stem}_{k}" if len(values) > 1 else stem)
                for k, value in enumerate(values)
            ]
        written.append(row)
    with (out_dir / filename).open("w", encoding="utf-8") as file:
        for row in written:
            file.write(json.dumps(row, ensure_ascii=False, default=json_default) + "\n")
    return written


def _file_stem(record: Mapping[str, Any], index: int, used: set[str]) -> str:
    record_id = record.get("id")
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(record_id)) if record_id is not None else f"{index:06d}"
    if stem in used:
        stem = f"{stem}-{index}"
    used.add(stem)
    return stem


def _write_video(value: Any, out_dir: Path, stem: str) -> str:
    """Store one video value (a path or the file's bytes) under out_dir; its path relative to out_dir."""
    if isinstance(value, str | Path) and Path(value).is_file():
        return _copied_in(Path(value), out_dir, VIDEO_DIR, stem)
    if not isinstance(value, bytes | bytearray):
        raise InputError(
            f"record {stem!r}: a video is a {type(value).__name__}; give a file path or its bytes."
        )
    (out_dir / VIDEO_DIR).mkdir(exist_ok=True)
    target = out_dir / VIDEO_DIR / f"{stem}{_video_suffix(bytes(value[:16]))}"
    target.write_bytes(value)
    return target.relative_to(out_dir).as_posix()


def _video_suffix(head: bytes) -> str:
    """The file extension of a video's bytes (the container they announce); .mp4 when unknown."""
    return {"matroska": ".mkv", "avi": ".avi"}.get(sniff_container(head) or "", ".mp4")


def _copied_in(path: Path, out_dir: Path, folder: str, stem: str) -> str:
    """A file's path relative to out_dir: as it is when inside, else copied to out_dir/folder/."""
    path = path.resolve()
    if path.is_relative_to(out_dir):
        return path.relative_to(out_dir).as_posix()
    (out_dir / folder).mkdir(exist_ok=True)
    target = out_dir / folder / f"{stem}{path.suffix}"
    shutil.copyfile(path, target)
    return target.relative_to(out_dir).as_posix()


def _write_image(value: Any, out_dir: Path, stem: str) -> str:
    """Store one image value under out_dir and return its path relative to out_dir."""
    if isinstance(value, str | Path) and Path(value).is_file():
        return _copied_in(Path(value), out_dir, IMAGE_DIR, stem)
    images = [value] if isinstance(value, Image.Image) else to_pil_list(value)
    if len(images) != 1:
        raise InputError(f"record {stem!r}: an image value holds {len(images)} images; give them one by one.")
    target = out_dir / IMAGE_DIR / f"{stem}.png"
    target.write_bytes(encode_png(images[0]))
    return target.relative_to(out_dir).as_posix()
