"""The one record format glmlab trains and evaluates on, and the checks that turn a raw row into it.

A record is one or more images, or one or more videos, plus a conversation about them. Sources
write it in two shapes:

- the shorthand: `{"image": "a.png", "question": "...", "answer": "...", ...}` (`images` for a list;
  `video` / `videos` for clips: a path, bytes or a data:video/ URL);
- the chat form: `{"images": [...], "messages": [{"role": "user", "content": "..."},
  {"role": "assistant", "content": "..."}]}`, where content may also be a list of parts
  (`{"type": "text", "text": ...}`, `{"type": "image"}`, `{"type": "video"}`).

Every loader normalises to the chat form with string contents. The images travel in their own column;
where they go in the conversation is said, if at all, by `<image>` markers (`glmlab.prompts.IMAGE_MARKER`)
in the user text, one per image in order, as LLaVA and LLaMA-Factory write them. A marker is not a model
token: the prompt builder puts an image item there and the model's chat template renders its own image
tokens, so a dataset never bakes in one model's image tokens (GLM's own `<|begin_of_image|>...` and
`<|image|>` placeholders are rewritten to the marker). Without markers the images open the first user
turn. A record holds images or videos, not both: GLM-V models in transformers take one kind per
prompt (`glmlab.prompts.to_conversation`). Videos travel in their own column as the file's own bytes,
their headers checked here (`glmlab.videos.checked_bytes`: a corrupt or over-budget clip is caught at
load time); they open the first user turn, and their frames are sampled when a prompt is built, as at
inference. Keys other than `id`, `image(s)`, `video(s)`, `question`, `answer`, `messages` and
`metadata` are free metadata (ground-truth fields, question type, ...).

A row that cannot be used raises `RecordError`, an `InputError` whose `reason` (one of `REASONS`)
lets a loader count skipped rows by kind, and whose message names the row and the problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from glmlab.errors import InputError
from glmlab.images import encode_png, to_pil
from glmlab.prompts import IMAGE_MARKER
from glmlab.videos import checked_bytes

ROLES = ("system", "user", "assistant")
RECORD_KEYS = ("id", "image", "images", "video", "videos", "question", "answer", "messages", "metadata")
REASONS = (
    "invalid_row",  # not a mapping, invalid JSON, or contradictory fields
    "missing_field",  # no image or video, no question/answer/messages, no assistant turn
    "wrong_type",  # a field of the wrong type (e.g. a number as answer)
    "empty_question",
    "empty_answer",
    "missing_image",  # an image path that does not exist
    "unreadable_image",  # an image glmlab.images could not decode (corrupt, unsupported, refused)
    "missing_video",  # a video path that does not exist
    "unreadable_video",  # a video whose headers glmlab.videos refuses (corrupt, unsupported, over budget)
)
# Image placeholders other tools put into the text; each becomes one IMAGE_MARKER.
_PLACEHOLDER_RE = re.compile(r"<\|begin_of_image\|>(?:<\|image\|>)*<\|end_of_image\|>|<\|image\|>|<image>")
# Image formats stored as their original bytes: PIL decodes them to exactly what glmlab saw.
_KEEP_BYTES_FORMATS = ("PNG", "JPEG", "WEBP")


class RecordError(InputError):
    """A row that cannot become a record; `reason` is one of `REASONS`."""

    def __init__(self, message: str, *, reason: str, index: int | None = None, record_id: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.index = index
        self.record_id = record_id


class RowProblem(Exception):
    """What is wrong with a row, before the caller adds which row it is (format converters raise it too)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def row_label(source: str, index: int | None, record_id: str | None) -> str:
    """`data.jsonl row 3 (id 'inv-0003')`: how messages name a row (index counts from 0)."""
    label = source if index is None else f"{source} row {index}"
    return label + (f" (id {record_id!r})" if record_id is not None else "")


def to_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The record's conversation as `[{"role", "content"}]` with string contents.

    Accepts the shorthand (`question`/`answer`) or the chat form (`messages`), raw or already
    normalised (a row of a dataset from `load_records`). The last message is always the assistant's
    non-empty answer; image placeholders in user text become `<image>` markers. Raises `RecordError` naming the problem.
    """
    try:
        return _messages_of(record)
    except RowProblem as problem:
        record_id = _record_id(record) if isinstance(record, Mapping) else None
        raise RecordError(
            f"{row_label('record', None, record_id)}: {problem.detail}",
            reason=problem.reason,
            record_id=record_id,
        ) from None


@dataclass
class Dialogue:
    """A record's conversation taken apart the way prompts are built from it."""

    system: str | None  # the record's own system text, if it has one
    turns: list[dict[str, str]]  # the user/assistant turns before the answer
    answer: str  # the final assistant message: the training target, the eval reference

    @property
    def asked(self) -> int:
        """Index in `turns` of the question the answer answers: the last user turn."""
        return max(i for i, turn in enumerate(self.turns) if turn["role"] == "user")


def to_dialogue(record: Mapping[str, Any]) -> Dialogue:
    """`to_messages(record)` as system text, turns and answer; a conversation must open with a user turn."""
    messages = to_messages(record)
    turns = [turn for turn in messages[:-1] if turn["role"] != "system"]
    system = next((turn["content"] for turn in messages[:-1] if turn["role"] == "system"), None)
    if turns[0]["role"] != "user":
        record_id = _record_id(record)
        raise RecordError(
            f"{row_label('record', None, record_id)}: the conversation must start with a user turn",
            reason="invalid_row",
            record_id=record_id,
        )
    return Dialogue(system, turns, messages[-1]["content"])


def normalise_row(
    row: Any,
    *,
    index: int,
    source: str,
    image_root: Path | None = None,
    convert: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One raw row -> `{"id", "images", "videos", "messages", "metadata"}` as the loaders store it.

    `images` holds `{"bytes", "path": None}` cells for `datasets.Image` (each image is decoded once here
    by `glmlab.images.to_pil`, so a corrupt file is caught now, not mid-training); `videos` holds each
    clip's file bytes (headers checked, no frame decoded); `metadata` is a JSON string of every key that
    is not part of the record format. Relative image and video paths are taken from `image_root` (the
    data folder) when given. `convert` turns a row of another format
    (`glmlab.data.formats`) into the record format first; its `RowProblem`s name the row like ours.
    """
    record_id = _record_id(row) if isinstance(row, Mapping) else None
    try:
        if not isinstance(row, Mapping):
            raise RowProblem("invalid_row", f"has type {type(row).__name__}, not a mapping of fields")
        if convert is not None:
            row = convert(row)
        messages = _messages_of(row)
        images = [cell for value in _media_values(row, "image") for cell in _image_cells(value, image_root)]
        videos = [_video_bytes(value, image_root) for value in _media_values(row, "video")]
        if images and videos:
            raise RowProblem(
                "invalid_row",
                "has both images and videos; GLM-V models take one kind per prompt, so keep one",
            )
        if not images and not videos:
            raise RowProblem(
                "missing_field",
                "missing field 'image' (or 'images', 'video', 'videos'): every record needs an image "
                "or a video",
            )
        _check_markers(messages, len(images))
        metadata = json.dumps(_metadata_of(row), ensure_ascii=False, default=json_default)
    except RowProblem as problem:
        raise RecordError(
            f"{row_label(source, index, record_id)}: {problem.detail}",
            reason=problem.reason,
            index=index,
            record_id=record_id,
        ) from None
    return {"id": record_id, "images": images, "videos": videos, "messages": messages, "metadata": metadata}


# ---- fields ---------------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """None, or the NaN/NA a DataFrame puts in an empty cell."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _record_id(row: Mapping[str, Any]) -> str | None:
    value = row.get("id")
    return None if is_missing(value) else str(value)


def _messages_of(row: Mapping[str, Any]) -> list[dict[str, str]]:
    has_messages = not is_missing(row.get("messages"))
    has_shorthand = any(not is_missing(row.get(key)) for key in ("question", "answer"))
    if has_messages and has_shorthand:
        raise RowProblem("invalid_row", "has both 'messages' and 'question'/'answer'; keep one form")
    if has_messages:
        return _checked_messages(row["messages"])
    question, answer = row.get("question"), row.get("answer")
    for key, value in (("question", question), ("answer", answer)):
        if is_missing(value):
            raise RowProblem(
                "missing_field", f"missing field {key!r} (give 'question' and 'answer', or 'messages')"
            )
        if not isinstance(value, str):
            raise RowProblem(
                "wrong_type",
                f"field {key!r} has type {type(value).__name__}, expected a string "
                f"(got {value!r}; convert it with str() if it is meant as text)",
            )
    question = _canonical_markers(question)
    if not _without_markers(question):
        raise RowProblem("empty_question", "the question is empty")
    if not answer.strip():
        raise RowProblem("empty_answer", "the answer is empty")
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer.strip()}]


def _checked_messages(messages: Any) -> list[dict[str, str]]:
    if isinstance(messages, np.ndarray):  # parquet/Arrow list cells arrive as numpy object arrays
        messages = list(messages)
    if not isinstance(messages, list | tuple):
        raise RowProblem(
            "wrong_type",
            f"field 'messages' has type {type(messages).__name__}, expected a list of "
            "{'role', 'content'} dicts",
        )
    normalised = []
    for turn, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise RowProblem("wrong_type", f"messages[{turn}] is not a {{'role', 'content'}} dict")
        role = message["role"]
        if role not in ROLES:
            raise RowProblem("wrong_type", f"messages[{turn}] has role {role!r}; expected one of {ROLES}")
        content = _text_of(message["content"], f"messages[{turn}].content")
        if role != "user" and IMAGE_MARKER in _canonical_markers(content):
            raise RowProblem(
                "invalid_row", f"messages[{turn}] ({role}) holds an image marker; images belong in user turns"
            )
        normalised.append(
            {"role": role, "content": _canonical_markers(content) if role == "user" else content}
        )
    if not any(message["role"] == "user" and _without_markers(message["content"]) for message in normalised):
        raise RowProblem("empty_question", "messages hold no user turn with text")
    if not normalised or normalised[-1]["role"] != "assistant":
        raise RowProblem("missing_field", "messages do not end with an assistant answer")
    if not normalised[-1]["content"].strip():
        raise RowProblem("empty_answer", "the assistant answer is empty")
    normalised[-1]["content"] = normalised[-1]["content"].strip()
    return normalised


def _text_of(content: Any, where: str) -> str:
    """A message content as text: a string, or the text parts of a parts list (image parts dropped:
    a parts list gives no reason to move its images from the opening of the first user turn)."""
    if isinstance(content, str):
        return content
    if isinstance(content, np.ndarray):
        content = list(content)
    if isinstance(content, list | tuple) and all(isinstance(part, Mapping) for part in content):
        texts = [part.get("text") for part in content if part.get("type") == "text"]
        if all(isinstance(text, str) for text in texts):
            return "\n".join(texts)
    raise RowProblem(
        "wrong_type",
        f"{where} has type {type(content).__name__}; expected a string or a list of "
        "{'type': 'text', 'text': ...} / {'type': 'image'} parts",
    )


def _canonical_markers(text: str) -> str:
    return _PLACEHOLDER_RE.sub(IMAGE_MARKER, text).strip()


def _without_markers(text: str) -> str:
    return text.replace(IMAGE_MARKER, "").strip()


def _check_markers(messages: list[dict[str, str]], images: int) -> None:
    """Markers, when the text has any, number the images: one each, as LLaVA and LLaMA-Factory require."""
    count = sum(message["content"].count(IMAGE_MARKER) for message in messages if message["role"] == "user")
    if count and count != images:
        raise RowProblem(
            "invalid_row",
            f"the text holds {count} {IMAGE_MARKER} marker(s) but the record has {images} image(s); "
            "give one marker per image, or none (the images then open the first user turn)",
        )


def keep_markers(question: str, replacement: str) -> str:
    """`replacement` (a fixed instruction) with the image markers `question` held in front of it, so
    a record whose images are placed by markers keeps one marker per image."""
    return IMAGE_MARKER * question.count(IMAGE_MARKER) + replacement


def _metadata_of(row: Mapping[str, Any]) -> dict[str, Any]:
    metadata = row.get("metadata")
    if is_missing(metadata):
        metadata = {}
    elif isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            raise RowProblem("wrong_type", "field 'metadata' is a string but not JSON") from None
    if not isinstance(metadata, Mapping):
        raise RowProblem(
            "wrong_type", f"field 'metadata' has type {type(metadata).__name__}, expected a dict"
        )
    extras = {
        key: (None if is_missing(value) else value) for key, value in row.items() if key not in RECORD_KEYS
    }
    return {**metadata, **extras}


def json_default(value: Any) -> Any:
    """For json.dumps: numpy values become numbers and lists, anything else (Decimal, date) its string."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


# ---- images ---------------------------------------------------------------------------------------


def _media_values(row: Mapping[str, Any], kind: str) -> list[Any]:
    """The values of `kind` ("image" or "video") and its plural; [] when the row has neither."""
    plural = f"{kind}s"
    single, many = row.get(kind), row.get(plural)
    if not is_missing(single) and not is_missing(many):
        raise RowProblem("invalid_row", f"has both {kind!r} and {plural!r}; keep one")
    if not is_missing(single):
        return [single]
    if is_missing(many):
        return []
    if isinstance(many, np.ndarray) and many.dtype == object:
        many = list(many)
    if not isinstance(many, list | tuple):
        raise RowProblem("wrong_type", f"field {plural!r} has type {type(many).__name__}, expected a list")
    return list(many)


def _image_cells(value: Any, image_root: Path | None) -> list[dict[str, Any]]:
    """Decode one image value with glmlab.images and return `datasets.Image` cells for what it holds."""
    if isinstance(value, Mapping):  # datasets.Image(decode=False) cells: {"bytes", "path"}
        value = value.get("bytes") or value.get("path")
        if is_missing(value):
            raise RowProblem("missing_field", "an image cell holds neither bytes nor a path")
    if isinstance(value, str | Path) and not str(value).startswith(("data:", "http://", "https://")):
        path = Path(value)
        if image_root is not None and not path.is_absolute():
            path = image_root / path
        if not path.is_file():
            raise RowProblem("missing_image", f"image file {str(value)!r} not found (looked at {path})")
        value = path
    elif not isinstance(value, str | bytes | bytearray | Image.Image | np.ndarray):
        raise RowProblem(
            "wrong_type", f"an image has type {type(value).__name__}; expected a path, bytes or image"
        )
    try:
        images = to_pil(value)
    except InputError as error:
        raise RowProblem("unreadable_image", f"unreadable image: {error}") from None
    if isinstance(value, Path | bytes) and len(images) == 1 and images[0].format in _KEEP_BYTES_FORMATS:
        return [{"bytes": value.read_bytes() if isinstance(value, Path) else value, "path": None}]
    return [{"bytes": encode_png(image), "path": None} for image in images]


# ---- videos ---------------------------------------------------------------------------------------


def _video_bytes(value: Any, root: Path | None) -> bytes:
    """One video value (a path, bytes, a data:video/ URL) as the file's bytes, its headers checked."""
    if isinstance(value, Mapping):  # datasets.Value("binary") cells read back as {"bytes"} by some tools
        value = value.get("bytes")
    if isinstance(value, str | Path) and not str(value).startswith("data:"):
        path = Path(value)
        if root is not None and not path.is_absolute():
            path = root / path
        if not path.is_file():
            raise RowProblem("missing_video", f"video file {str(value)!r} not found (looked at {path})")
        value = path
    elif not isinstance(value, str | bytes | bytearray):
        raise RowProblem(
            "wrong_type", f"a video has type {type(value).__name__}; expected a path, bytes or data URL"
        )
    try:
        return checked_bytes(value)[0]
    except InputError as error:
        raise RowProblem("unreadable_video", f"unreadable video: {error}") from None
