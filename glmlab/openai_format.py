"""OpenAI's chat format <-> glmlab's, both directions, in one place.

`glmlab.Client` turns glmlab calls into OpenAI requests (`to_openai_messages`, `request_fields`,
`thinking_fields`); `glmlab serve` turns OpenAI requests back into glmlab calls
(`from_openai_messages`, `generation_options`). Messages are parsed by `glmlab.prompts.to_conversation`
in both directions, the parser local models use, so a client, a server and a local model accept (and
refuse) the same messages. The server's rule that a request never makes it open a file of its own is
the `local_paths=False` option of `from_openai_messages`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from glmlab.errors import InputError
from glmlab.prompts import to_conversation
from glmlab.settings import stop_list
from glmlab.structured import Schema

# glmlab generation option -> OpenAI request field (top_k and repetition_penalty: vLLM/glmlab extensions)
GENERATION_FIELDS = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "seed": "seed",
    "stop": "stop",
    "max_thinking_tokens": "max_thinking_tokens",
    "tools": "tools",
    "tool_choice": "tool_choice",
}
EXTENSION_FIELDS = ("top_k", "repetition_penalty", "max_thinking_tokens")
# the OpenAI request fields `generation_options` reads (vLLM's top_k and repetition_penalty included)
OPENAI_SAMPLING_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "stop",
    "response_format",
    "max_thinking_tokens",
    "tools",
    "tool_choice",
)
REMOTE_SCHEMES = ("data:", "http://", "https://")


# ---- glmlab -> OpenAI (the client) ----------------------------------------------------------------


def request_fields(gen: Mapping[str, Any]) -> dict[str, Any]:
    """glmlab generation options as OpenAI request fields; unknown options are refused by name."""
    unknown = sorted(set(gen) - set(GENERATION_FIELDS) - {"do_sample", "schema"})
    if unknown:
        raise InputError(
            f"{', '.join(unknown)}: not a generation option; use {', '.join(GENERATION_FIELDS)}."
        )
    fields = {
        GENERATION_FIELDS[key]: value
        for key, value in gen.items()
        if key in GENERATION_FIELDS and value is not None
    }
    if gen.get("do_sample") is False:
        fields["temperature"] = 0
    if "stop" in fields:
        fields["stop"] = stop_list(fields["stop"])
    if gen.get("schema") is not None:
        fields["response_format"] = Schema.of(gen["schema"]).response_format()
    return fields


def thinking_fields(thinking: bool | None) -> dict[str, Any]:
    """The request fields that switch GLM-V's thinking (vLLM's and glmlab's `chat_template_kwargs`)."""
    return {} if thinking is None else {"chat_template_kwargs": {"enable_thinking": bool(thinking)}}


def to_openai_messages(
    messages: list[dict[str, Any]], image_part: Callable[[Image.Image], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Messages (OpenAI or transformers format) with every image read here and sent as `image_part(image)`.

    The client's own process reads local paths anyway, so private URL addresses are no extra reach.
    """
    conversation = to_conversation(messages, allow_urls=True, allow_private_urls=True)
    images, videos = iter(conversation.images), iter(conversation.videos)
    converted = []
    for message in conversation.messages:
        content = message["content"]
        if isinstance(content, list):
            content = [_outgoing_part(part, images, videos, image_part) for part in content]
        converted.append({**message, "content": content})
    return converted


def _outgoing_part(part: dict, images: Any, videos: Any, image_part: Callable) -> dict[str, Any]:
    """A normalised part as sent: images through `image_part`, videos as the file's own bytes in a
    video_url data URL (the server samples the frames, as vLLM does)."""
    if part["type"] == "image":
        return image_part(next(images))
    if part["type"] == "video":
        return {"type": "video_url", "video_url": {"url": next(videos).data_url()}}
    return part


# ---- OpenAI -> glmlab (the server) ----------------------------------------------------------------


def generation_options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI request's sampling fields as glmlab generation options (`GenerationSettings` names)."""
    top_k = fields.get("top_k")
    options = {
        "max_new_tokens": fields.get("max_completion_tokens") or fields.get("max_tokens"),
        "temperature": fields.get("temperature"),
        "top_p": fields.get("top_p"),
        "top_k": 0 if top_k == -1 else top_k,  # vLLM's "no top-k" is -1, transformers' is 0
        "repetition_penalty": fields.get("repetition_penalty"),
        "seed": fields.get("seed"),
        "stop": stop_list(fields.get("stop")),
        "schema": Schema.from_response_format(fields.get("response_format")),
        "max_thinking_tokens": fields.get("max_thinking_tokens"),
        "tools": fields.get("tools"),
        "tool_choice": fields.get("tool_choice"),
    }
    return {key: value for key, value in options.items() if value is not None}


def from_openai_messages(
    messages: list[dict[str, Any]], *, local_paths: bool = True, **image_options: Any
) -> list[dict[str, Any]]:
    """OpenAI messages as glmlab messages with every image decoded (`glmlab.images.to_pil` options).

    local_paths=False (the server): an image_url must be a data: or http(s) URL, never a path, so a
    request cannot make the process read its own files.
    """
    if not local_paths:
        for index, message in enumerate(messages):
            for position, part in enumerate(_parts(message)):
                _check_remote(part, f"messages[{index}].content[{position}]")
    conversation = to_conversation(messages, **image_options)
    images, videos = iter(conversation.images), iter(conversation.videos)
    converted = []
    for message in conversation.messages:
        content = message["content"]
        if isinstance(content, list):
            content = [_incoming_part(part, images, videos) for part in content]
        converted.append({**message, "content": content})
    return converted


def _incoming_part(part: dict, images: Any, videos: Any) -> dict[str, Any]:
    if part["type"] == "image":
        return {"type": "image", "image": next(images)}
    if part["type"] == "video":
        return {"type": "video", "video": next(videos)}  # sampled already: the model keeps its frames
    return part


def _parts(message: Any) -> list[Any]:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


def _check_remote(part: Any, where: str) -> None:
    if not isinstance(part, dict) or part.get("type") == "text":
        return
    if part.get("type") == "video_url":
        value = part.get("video_url")
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url.startswith("data:"):
            raise InputError(
                f"{where}: video_url.url {str(url)[:60]!r}: expected a data:video/...;base64 URL; the server "
                "fetches no video URLs and reads no paths on its own disk."
            )
        return
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if part.get("type") != "image_url" or not isinstance(url, str) or not url.startswith(REMOTE_SCHEMES):
        # to_pil would read a local path: a client must never make the server open its own files.
        raise InputError(
            f"{where}: image_url.url {str(url)[:60]!r}: expected a data: URL (base64 image) or an http(s) "
            "URL; the server does not read paths on its own disk."
        )
