"""What a question gets back: the `Answer`, and the parsing of GLM-V output into its parts.

GLM-V models write `<think>reasoning</think>answer` (GLM-4.5V/4.6V) or additionally wrap the answer in
`<answer>...</answer>` (GLM-4.1V-Thinking), and mark grounding boxes with
`<|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>` on a 0-1000 scale. The same tags also wrap plain final
answers (`<|begin_of_box|>2024-03-17<|end_of_box|>`): only a tag holding bracketed groups of exactly
four numbers in 0-1000 is a box (`Answer.boxes`), any other tagged content is a boxed value
(`Answer.boxed`). Parsing is pure text work, shared by the local model, the client and the server,
so all three agree on what "the answer" is.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import json5

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
_BOX_RE = re.compile(re.escape(BOX_OPEN) + r"(.*?)" + re.escape(BOX_CLOSE), re.DOTALL)
_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*"
_GROUP = rf"\[{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}\]"
_GROUP_RE = re.compile(_GROUP)
_GROUPS_RE = re.compile(rf"\s*{_GROUP}(?:\s*,\s*{_GROUP})*\s*")  # "[..]" or "[..], [..]"
_FENCE_RE = re.compile(r"```[ \t]*(?:json5?|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_BOX_MAX = 1000  # GLM-V's box coordinates are thousandths of the image side


@dataclass
class Usage:
    """Token counts of one answer; `image_tokens` and `video_tokens` are part of `prompt_tokens`
    (a video's frames are image tokens between <|begin_of_video|> and <|end_of_video|>)."""

    prompt_tokens: int = 0
    image_tokens: int = 0
    video_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timing:
    """Wall-clock timings of one answer, in seconds (tokens per second for decode speed)."""

    ttft_s: float | None = None
    total_s: float = 0.0
    decode_tokens_per_s: float | None = None

    @classmethod
    def from_times(
        cls, start: float, first_token: float | None, end: float, completion_tokens: int
    ) -> Timing:
        """Decode speed follows `vllm bench serve`: (tokens - 1) / (end - first token)."""
        ttft = None if first_token is None else first_token - start
        speed = None
        if first_token is not None and completion_tokens > 1 and end > first_token:
            speed = (completion_tokens - 1) / (end - first_token)
        return cls(ttft_s=ttft, total_s=end - start, decode_tokens_per_s=speed)


@dataclass
class Answer:
    """One model answer: the final `text`, the `thinking` apart, and how it was produced."""

    text: str
    thinking: str | None = None
    raw: str = ""
    boxes: list[list[float]] = field(default_factory=list)
    boxed: list[str] = field(default_factory=list)  # boxed contents that are not boxes: final values
    usage: Usage = field(default_factory=Usage)
    timing: Timing = field(default_factory=Timing)
    finish_reason: str = "stop"  # "stop" | "length" | "error" (batch items that failed)
    model: str | None = None
    endpoint: str | None = None  # glmlab.Client: the base URL of the server that answered (failover)
    error: str | None = None
    parsed: Any = None  # with a schema (glmlab.structured): the parsed answer, None if it did not parse
    thinking_truncated: bool = False  # max_thinking_tokens ended the thinking
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI tool calls (glmlab.tools)

    @classmethod
    def from_raw(cls, raw: str, **fields: Any) -> Answer:
        """Build an Answer by parsing everything the model generated."""
        thinking, text = split_thinking(raw)
        return cls(
            text=strip_box_tags(text),
            thinking=thinking,
            raw=raw,
            boxes=parse_boxes(text),
            boxed=parse_boxed_values(text),
            **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if hasattr(self.parsed, "model_dump"):  # a pydantic model's instance (schema=Model)
            data["parsed"] = self.parsed.model_dump(mode="json")
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    def __str__(self) -> str:
        return self.text


def split_thinking(raw: str) -> tuple[str | None, str]:
    """Split generated text into (thinking, answer).

    Handles `<think>..</think>answer`, a stray `</think>` whose opening tag was in the prompt, an
    unclosed `<think>` (generation cut off while thinking: all of it is thinking, the answer is empty),
    and GLM-4.1V's `<answer>..</answer>` wrapper.
    """
    thinking: str | None = None
    text = raw
    if THINK_CLOSE in text:
        before, _, text = text.partition(THINK_CLOSE)
        thinking = before.split(THINK_OPEN, 1)[-1]
    elif THINK_OPEN in text:
        before, _, thinking = text.partition(THINK_OPEN)
        text = before
    if ANSWER_OPEN in text:
        text = text.split(ANSWER_OPEN, 1)[1].split(ANSWER_CLOSE, 1)[0]
    elif ANSWER_CLOSE in text:
        text = text.split(ANSWER_CLOSE, 1)[0]
    thinking = thinking.strip() if thinking is not None else None
    return (thinking or None), text.strip()


def parse_boxes(text: str) -> list[list[float]]:
    """Every grounding box in `text`, each [x1, y1, x2, y2] on the model's 0-1000 scale.

    A box tag holds one box `[x1,y1,x2,y2]` or several (`[[..],[..]]` or `[..],[..]`), spaces allowed,
    each exactly four numbers in 0-1000. A tag holding anything else (a date, three or five numbers,
    a value above 1000, a negative one, text) holds no box: it is a boxed value (`parse_boxed_values`).
    """
    boxes = []
    for inner in _BOX_RE.findall(text):
        boxes.extend(_boxes_of(inner) or [])
    return boxes


def parse_boxed_values(text: str) -> list[str]:
    """The stripped contents of the box tags in `text` that are not boxes, in order (empty tags skipped)."""
    return [inner.strip() for inner in _BOX_RE.findall(text) if inner.strip() and _boxes_of(inner) is None]


def _boxes_of(inner: str) -> list[list[float]] | None:
    """The boxes one tag holds, or None when its content is not boxes only."""
    content = inner.strip()
    if content.startswith("[[") and content.endswith("]]"):
        content = content[1:-1]
    if not _GROUPS_RE.fullmatch(content):
        return None
    boxes = [[float(number) for number in group] for group in _GROUP_RE.findall(content)]
    if any(value > _BOX_MAX for box in boxes for value in box):
        return None
    return [[int(value) if value.is_integer() else value for value in box] for box in boxes]


def strip_box_tags(text: str) -> str:
    return text.replace(BOX_OPEN, "").replace(BOX_CLOSE, "")


def box_to_pixels(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Map a 0-1000 box to pixel coordinates of a width x height image."""
    x1, y1, x2, y2 = box
    return (
        round(x1 / 1000 * width),
        round(y1 / 1000 * height),
        round(x2 / 1000 * width),
        round(y2 / 1000 * height),
    )


def parse_json_object(answer: str) -> dict[str, Any] | None:
    """The first JSON object in an answer's text, looking inside ```json fences first; None if none parses.

    Strict JSON is tried first; `json5` then accepts trailing commas, single quotes and unquoted
    keys. A balanced `{...}` that still does not parse is skipped as a whole (its inner objects are
    not returned, since they would be fragments of what the model meant). Arrays are not objects.
    The brace matching is written by hand: parsers read one value, not the first one in prose.
    """
    for block in [*_FENCE_RE.findall(answer), answer]:
        for candidate in _balanced_objects(block):
            parsed = _parse_object(candidate)
            if parsed is not None:
                return parsed
    return None


def _balanced_objects(text: str):
    """Yield each top-level balanced `{...}` substring in order, skipping braces inside strings."""
    start = text.find("{")
    while start != -1:
        end = _matching_brace(text, start)
        if end is None:  # cut off mid-object: nothing later can be complete either
            return
        yield text[start : end + 1]
        start = text.find("{", end + 1)


def _matching_brace(text: str, start: int) -> int | None:
    """Index of the `}` closing the `{` at `start`, honouring "..." and '...' strings and escapes."""
    depth, quote, escaped = 0, None, False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _parse_object(candidate: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(candidate)
    except ValueError:
        try:
            parsed = json5.loads(candidate)
        except (ValueError, RecursionError):
            return None
    return parsed if isinstance(parsed, dict) else None
