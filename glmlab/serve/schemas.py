"""The server's wire format: OpenAI request models with a limit on every field, and response bodies.

Requests are parsed strictly (unknown fields are refused with their name, so a client never believes a
feature it sent was honoured). Responses follow OpenAI's chat.completion / chat.completion.chunk
shapes, with the reasoning apart in `message.reasoning_content` as vLLM's reasoning parser returns it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from glmlab.answer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, Answer, split_thinking
from glmlab.openai_format import OPENAI_SAMPLING_FIELDS, from_openai_messages, generation_options
from glmlab.settings import MAX_SEED, MAX_STOP_CHARS, MAX_STOP_STRINGS, REPETITION_PENALTY_RANGE

MAX_TEXT_CHARS = 1_000_000  # one text part; the body limit (--max-request-bytes) bounds the total
MAX_URL_CHARS = 200_000_000  # a data URL; again bounded by the body limit first
MAX_PARTS = 64
MAX_MESSAGES = 256
MAX_NEW_TOKENS = 131_072  # GLM-4.6V's context length
MAX_SCHEMA_CHARS = 65_536  # a response_format schema: bounds what the grammar compiler is given
MAX_CHOICES = 64
MAX_TOOLS = 128  # functions one request may offer, and calls one message may hold  # OpenAI's n: a schema bound; the server's own, lower cap is --max-n

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Strict):
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class VideoURL(_Strict):
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)  # a data:video/...;base64 URL


class VideoPart(_Strict):
    """A video as vLLM takes it: {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}}."""

    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: Name
    arguments: Text  # a JSON object, as OpenAI sends it


class ToolCall(_Strict):
    id: Annotated[str, Field(max_length=128)] | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: Text | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)] | None = None
    reasoning_content: Text | None = None
    name: Name | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: Annotated[str, Field(max_length=128)] | None = None


class FunctionDefinition(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: Annotated[str, Field(max_length=4096)] | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: Name


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatTemplateKwargs(_Strict):
    enable_thinking: bool | None = None


class JsonSchemaFormat(_Strict):
    """OpenAI's response_format.json_schema: a name and the JSON schema the answer must fit."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    json_schema: dict[str, Any] = Field(alias="schema")
    description: Annotated[str, Field(max_length=4096)] | None = None
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"the schema is over {MAX_SCHEMA_CHARS:,} characters of JSON")
        return value


class ResponseFormat(_Strict):
    """OpenAI's response_format: text, any JSON object, or JSON fitting a schema (glmlab.structured)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only then")
        return self


class ChatCompletionRequest(_Strict):
    """POST /v1/chat/completions. `model` names the base model or a loaded adapter.

    Sampling bounds are OpenAI's (temperature 0-2, top_p 0-1) and glmlab.settings' (what the model
    can take without inf/nan: 0 < temperature < 0.01 counts as 0.01, repetition_penalty >= 0.01).
    """

    model: Name | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=-1, le=1000)  # vLLM extension; -1 or 0: no top-k
    repetition_penalty: float | None = Field(  # vLLM extension
        None, ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1], allow_inf_nan=False
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)  # the server's own cap is --max-n
    response_format: ResponseFormat | None = None
    max_thinking_tokens: int | None = Field(None, ge=0, le=MAX_NEW_TOKENS)  # glmlab extension
    tools: Annotated[list[Tool], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    user: Name | None = None  # accepted for compatibility with OpenAI clients; not used

    def generation_options(self) -> dict[str, Any]:
        """Keyword arguments for `VLM.chat` (glmlab.settings.GenerationSettings names)."""
        sampling = set(OPENAI_SAMPLING_FIELDS) & set(type(self).model_fields)
        return generation_options(self.model_dump(include=sampling, exclude_none=True, by_alias=True))

    @property
    def thinking(self) -> bool | None:
        return self.chat_template_kwargs.enable_thinking if self.chat_template_kwargs else None

    @property
    def tool_mode(self) -> str | None:
        """None (no tools, or tool_choice none), "auto" (the model may call) or "forced"."""
        if not self.tools or self.tool_choice == "none":
            return None
        return "auto" if self.tool_choice in (None, "auto") else "forced"

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def video_count(self) -> int:
        """How many video_url parts the messages hold (counted before any is decoded)."""
        return sum(
            isinstance(part, VideoPart)
            for message in self.messages
            if isinstance(message.content, list)
            for part in message.content
        )

    def glmlab_messages(self, **image_options: Any) -> list[dict[str, Any]]:
        """The messages with every image decoded (`glmlab.images.to_pil`, with the server's limits).

        Decoding here, before the request queues for the model, lets a bad image fail fast (400).
        """
        messages = [message.model_dump(exclude_none=True) for message in self.messages]
        return from_openai_messages(messages, local_paths=False, **image_options)


class LoadAdapterRequest(_Strict):
    """POST /v1/load_lora_adapter, as vLLM takes it."""

    lora_name: str = Field(min_length=1, max_length=64)
    lora_path: str = Field(min_length=1, max_length=4096)
    load_inplace: bool = False  # replace an adapter of the same name


class UnloadAdapterRequest(_Strict):
    lora_name: str = Field(min_length=1, max_length=64)
    lora_int_id: int | None = Field(None, ge=0)  # vLLM sends it; names are what glmlab uses


# ---- responses -----------------------------------------------------------------------------------


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def usage_body(answers: list[Answer]) -> dict[str, Any]:
    """Usage of a request's choices: the prompt counted once, the completions summed (as OpenAI does)."""
    first = answers[0].usage
    completion = sum(answer.usage.completion_tokens for answer in answers)
    return {
        "prompt_tokens": first.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": first.prompt_tokens + completion,
        "prompt_tokens_details": {"image_tokens": first.image_tokens, "video_tokens": first.video_tokens},
    }


def completion_body(completion_id: str, model: str, answers: list[Answer]) -> dict[str, Any]:
    """A chat.completion: reasoning and answer apart, box tags kept in the content (as vLLM does)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_choice(index, answer) for index, answer in enumerate(answers)],
        "usage": usage_body(answers),
    }


def _choice(index: int, answer: Answer) -> dict[str, Any]:
    reasoning, content = split_thinking(answer.raw)
    message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    if answer.tool_calls:
        message["content"] = answer.text or None
        message["tool_calls"] = answer.tool_calls
    return {"index": index, "message": message, "finish_reason": answer.finish_reason, "logprobs": None}


def chunk_body(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    index: int = 0,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def usage_chunk_body(completion_id: str, created: int, model: str, answers: list[Answer]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_body(answers),
    }


def models_body(base: str, adapters: list[str], created: int) -> dict[str, Any]:
    """GET /v1/models: the base model, then each adapter with the base as its `parent` (as vLLM lists them)."""
    entries = [{"id": base, "object": "model", "created": created, "owned_by": "glmlab", "parent": None}]
    entries += [
        {"id": name, "object": "model", "created": created, "owned_by": "glmlab", "parent": base}
        for name in adapters
    ]
    return {"object": "list", "data": entries}


class ToolCallGate:
    """The streamed content a client sees when tools are on: text up to a `<tool_call>` (the calls
    follow as one `tool_calls` delta at the end); nothing of a forced call, which is JSON for the
    calls. Holds back a tail that could start `<tool_call>`. Hand-written, like ThinkingRouter."""

    MARK = "<tool_call>"

    def __init__(self, mode: str | None) -> None:
        self.mode = mode
        self.held = ""
        self.closed = mode == "forced"

    def route(self, deltas: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
        """(field, text) deltas with the content gated; a content delta of None flushes the tail."""
        routed = []
        for field, text in deltas:
            if field == "content" and self.mode is not None:
                text = self._flush() if text is None else self._feed(text)
            if text:
                routed.append((field, text))
        return routed

    def _feed(self, text: str) -> str:
        if self.closed:
            return ""
        text = self.held + text
        at = text.find(self.MARK)
        if at >= 0:
            self.closed, self.held = True, ""
            return text[:at]
        keep = max((n for n in range(1, len(self.MARK)) if text.endswith(self.MARK[:n])), default=0)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def _flush(self) -> str:
        held, self.held = ("" if self.closed else self.held), ""
        return held


class ThinkingRouter:
    """Routes streamed text to `reasoning_content` inside <think>..</think> and to `content` outside.

    A tag split across two pieces is held back until it is whole. Follows `split_thinking` for a
    stream, as vLLM's glm45 reasoning parser does: text is content until a `<think>` appears, and
    GLM-4.1V's `<answer>..</answer>` wrapper is dropped (nothing after `</answer>` is sent). Hand-written:
    the split must happen piece by piece, which `split_thinking` (whole text) cannot.
    """

    # state -> {tag: next state}; a tag itself is never sent
    MOVES = {
        "content": {THINK_OPEN: "reasoning_content", ANSWER_OPEN: "content", ANSWER_CLOSE: "done"},
        "reasoning_content": {THINK_CLOSE: "content"},
        "done": {},
    }

    def __init__(self) -> None:
        self.field = "content"
        self._pending = ""

    def feed(self, piece: str) -> list[tuple[str, str]]:
        """(field, text) pairs for one streamed piece; field is "content" or "reasoning_content"."""
        text, self._pending, routed = self._pending + piece, "", []
        while text and self.field != "done":
            moves = self.MOVES[self.field]
            found = [(text.find(tag), tag) for tag in moves if tag in text]
            if not found:
                keep = max((_partial_tag_length(text, tag) for tag in moves), default=0)
                routed.append((self.field, text[: len(text) - keep]))
                self._pending = text[len(text) - keep :]
                break
            index, tag = min(found)
            routed.append((self.field, text[:index]))
            text, self.field = text[index + len(tag) :], moves[tag]
        return [(name, value) for name, value in routed if value]

    def flush(self) -> list[tuple[str, str]]:
        text, self._pending = self._pending, ""
        return [(self.field, text)] if text and self.field != "done" else []


def _partial_tag_length(text: str, tag: str) -> int:
    """How many trailing characters of `text` could be the start of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0
