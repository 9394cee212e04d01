"""From questions and chat messages to model inputs: the one prompt path of glmlab.

`ask`, `chat`, batching, training samples, eval prompts and server requests all build their inputs
here, with the checkpoint's own chat template and processor, so what a model is trained on is exactly
what it is asked at inference (a second prompt builder is how train/inference skew is born).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from glmlab.errors import InputError
from glmlab.images import to_pil
from glmlab.settings import MIN_IMAGE_PIXELS
from glmlab.videos import Video, is_video, load_video

IMAGE_ITEM_TYPES = ("image", "image_url", "input_image")
VIDEO_ITEM_TYPES = ("video", "video_url")
ROLES = ("system", "user", "assistant", "tool", "observation")
# Where a record's user text places an image (LLaVA's and LLaMA-Factory's marker). It is not a model
# token: `conversation_messages(..., markers=True)` turns each one into an image item, and the chat
# template renders the checkpoint's own image tokens there.
IMAGE_MARKER = "<image>"


@dataclass
class Conversation:
    """Messages in the template's form (image and video items carry no payload), their images and
    their videos (sampled frames, `glmlab.videos.Video`) in order."""

    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)


def pixel_budget_size(max_image_pixels: int) -> dict[str, int]:
    """The Glm46V processor `size` for a largest resized image area of `max_image_pixels`.

    The processor treats a still image as two temporal frames, so its `longest_edge` (a pixel count,
    not an edge) is twice the area one image may keep: max_image_pixels=1024*1024 keeps a 1024x1024
    image whole (~1,340 image tokens for GLM-4.6V-Flash), larger images are scaled down to fit.
    """
    if max_image_pixels < MIN_IMAGE_PIXELS:
        raise InputError(
            f"max_image_pixels={max_image_pixels}: must be at least {MIN_IMAGE_PIXELS} (one 28x28 image token)."
        )
    return {"shortest_edge": min(12544, 2 * max_image_pixels), "longest_edge": 2 * max_image_pixels}


def question_messages(images: Any, question: str, system: str | None = None) -> list[dict[str, Any]]:
    """The messages of a single question about zero or more images (images first, as the model card)."""
    if not isinstance(question, str):
        raise InputError(f"question: expected a string, got {type(question).__name__}.")
    return conversation_messages(images, [{"role": "user", "content": question}], system)


def conversation_messages(
    images: Any, turns: list[dict[str, str]], system: str | None = None, *, markers: bool = False
) -> list[dict[str, Any]]:
    """Prompt messages for text turns about images: the system text, then the turns, the images opening
    the first user turn. Inference, training samples and eval questions are all built here.

    markers=True (records): when the user turns hold `IMAGE_MARKER`s, one per image, each image goes
    where its marker is, in order; text around a marker is stripped, as a question after images is.
    Without markers the images open the first user turn, as they do for a plain question."""
    first_user = next((i for i, turn in enumerate(turns) if turn["role"] == "user"), None)
    if first_user is None:
        raise InputError("turns: no user turn to attach the images to.")
    items = [_media_item(item) for item in _as_list(images)]
    placed = markers and any(IMAGE_MARKER in turn["content"] for turn in turns if turn["role"] == "user")
    if placed:
        count = sum(turn["content"].count(IMAGE_MARKER) for turn in turns if turn["role"] == "user")
        if count != len(items):
            raise InputError(
                f"turns: the user text holds {count} {IMAGE_MARKER} marker(s) for {len(items)} image(s); "
                f"give one marker per image, or none (the images then open the first user turn)."
            )
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    remaining = iter(items)
    for position, turn in enumerate(turns):
        content: Any = turn["content"]
        if placed and turn["role"] == "user" and IMAGE_MARKER in content:
            content = _placed_parts(content, remaining)
        elif position == first_user and not placed:
            content = items + [{"type": "text", "text": content}]
        messages.append({"role": turn["role"], "content": content})
    return messages


def _placed_parts(text: str, items: Any) -> list[dict[str, Any]]:
    """`a <image> b` -> text a, the next image item, text b (empty pieces left out)."""
    parts: list[dict[str, Any]] = []
    for index, piece in enumerate(text.split(IMAGE_MARKER)):
        if index:
            parts.append(next(items))
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
    return parts


def to_conversation(
    messages: list[dict[str, Any]], *, video_options: dict[str, Any] | None = None, **image_options: Any
) -> Conversation:
    """Normalise OpenAI-format and transformers-format messages; load every image and video they reference.

    OpenAI parts: {"type": "text", "text"}, {"type": "image_url", "image_url": {"url": data/http URL}},
    {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}} (as vLLM takes them).
    transformers parts: {"type": "image", "image" | "url" | "path": any glmlab image input},
    {"type": "video", "video" | "path": a video path, data URL, bytes or Video}.
    An item that expands to several images (a PDF) becomes several image items. `video_options` are
    `glmlab.videos.VideoOptions` fields (fps, max_frames and the limits).
    """
    if not isinstance(messages, list) or not messages:
        raise InputError("messages: expected a non-empty list of {'role', 'content'} dicts.")
    normalised, images, videos = [], [], []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InputError(
                f"messages[{index}]: expected a dict with 'role' in {ROLES}, got {message!r:.80}."
            )
        content = message.get("content")
        if content is None or isinstance(content, str):
            normalised.append(_copy_message(message, content or ""))
            continue
        if not isinstance(content, list):
            raise InputError(f"messages[{index}].content: expected a string or a list of parts.")
        parts = []
        for position, part in enumerate(content):
            where = f"messages[{index}].content[{position}]"
            if isinstance(part, dict) and part.get("type") in VIDEO_ITEM_TYPES:
                videos.append(load_video(_video_source(part, where), **(video_options or {})))
                parts.append({"type": "video"})
                continue
            new_parts, new_images = _normalise_part(part, where, image_options)
            parts += new_parts
            images += new_images
        normalised.append(_copy_message(message, parts))
    if images and videos:
        # Glm4v marks a video's frames with the image token, and transformers' model then cannot tell
        # the two apart (it matches image features against every image token, the frames' included).
        raise InputError(
            f"messages: {len(images)} image(s) and {len(videos)} video(s) in one conversation; GLM-V models "
            "in transformers take images or videos in one prompt, not both. Ask about them separately."
        )
    return Conversation(normalised, images, videos)


def render(
    processor: Any,
    messages: list[dict[str, Any]],
    *,
    thinking: bool | None = None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text of `messages` under the checkpoint's chat template.

    `thinking=None` keeps the model's default (GLM-4.6V: on); False passes enable_thinking=False.
    `tools` (OpenAI-style function definitions) go to the template, which lists them in a system turn.
    """
    kwargs = {} if thinking is None else {"enable_thinking": bool(thinking)}
    return processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, tools=tools, **kwargs
    )


def encode(
    processor: Any,
    texts: list[str],
    images: list[list[Image.Image]],
    *,
    max_image_pixels: int | None = None,
    videos: list[list[Video]] | None = None,
) -> Any:
    """Tokenise prompt texts and expand their image and video placeholders (left-padded when several).

    Videos go in as their sampled frames with their metadata and `do_sample_frames=False`: glmlab
    sampled them already (`glmlab.videos`), and the metadata gives the prompt the frames' real
    timestamps. Returns the processor's BatchFeature without `token_type_ids` (the model card drops it).
    """
    kwargs: dict[str, Any] = {}
    if max_image_pixels is not None:
        kwargs["images_kwargs"] = {"size": pixel_budget_size(max_image_pixels)}
    flat = [image for sample in images for image in sample]
    batch_images = (images if len(texts) > 1 else images[0]) if flat else None
    clips = [video for sample in videos or [] for video in sample]
    if clips:
        kwargs["videos"] = [video.frames for video in clips]
        kwargs["videos_kwargs"] = {
            "video_metadata": [video.metadata() for video in clips],
            "do_sample_frames": False,
        }
    try:
        features = processor(
            text=texts, images=batch_images, return_tensors="pt", padding=len(texts) > 1, **kwargs
        )
    except ValueError as error:  # e.g. an aspect ratio over 200:1, placeholder/image count mismatch
        raise InputError(f"the images or videos could not be processed: {error}") from None
    features.pop("token_type_ids", None)
    return features


# ---- parts ---------------------------------------------------------------------------------------


def _normalise_part(part: Any, where: str, image_options: dict) -> tuple[list[dict], list[Image.Image]]:
    if isinstance(part, str):
        return [{"type": "text", "text": part}], []
    if not isinstance(part, dict) or "type" not in part:
        raise InputError(f"{where}: expected a dict with a 'type', got {part!r:.80}.")
    kind = part["type"]
    if kind in ("text", "input_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise InputError(f"{where}: a text part needs a string 'text'.")
        return [{"type": "text", "text": text}], []
    if kind in IMAGE_ITEM_TYPES:
        loaded = to_pil(_image_source(part, where), **image_options)
        return [{"type": "image"} for _ in loaded], loaded
    raise InputError(
        f"{where}: unsupported content type {kind!r}; use 'text', 'image', 'image_url', 'video' or 'video_url'."
    )


def _media_item(source: Any) -> dict[str, Any]:
    """A question's image or video item: videos are told apart by `glmlab.videos.is_video`."""
    if is_video(source):
        return {"type": "video", "video": source}
    return {"type": "image", "image": source}


def _video_source(part: dict, where: str) -> Any:
    if part["type"] == "video_url":
        value = part.get("video_url")
        url = value.get("url") if isinstance(value, dict) else value
        if not url:
            raise InputError(f"{where}: a video_url part needs video_url.url (a data:video/...;base64 URL).")
        return url
    for key in ("video", "path", "url"):
        if part.get(key) is not None:
            return part[key]
    raise InputError(f"{where}: a video part needs 'video' or 'path'.")


def _image_source(part: dict, where: str) -> Any:
    if part["type"] in ("image_url", "input_image"):
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        if not url:
            raise InputError(f"{where}: an image_url part needs image_url.url (a data URL or http(s) URL).")
        return url
    for key in ("image", "url", "path"):
        if part.get(key) is not None:
            return part[key]
    raise InputError(f"{where}: an image part needs 'image', 'url' or 'path'.")


def _copy_message(message: dict, content: Any) -> dict:
    """A new message dict: callers' messages are never mutated."""
    copied = {"role": message["role"], "content": content}
    if message.get("reasoning_content"):
        copied["reasoning_content"] = message["reasoning_content"]
    if message.get("tool_calls"):
        copied["tool_calls"] = [_template_call(call) for call in message["tool_calls"]]
    if message.get("tool_call_id"):
        copied["tool_call_id"] = message["tool_call_id"]
    return copied


def _template_call(call: dict) -> dict:
    """An OpenAI tool call as the chat template reads it: arguments as a dict, not a JSON string."""
    function = dict(call.get("function", call))
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            raise InputError(f"tool call {function.get('name')!r}: arguments are not JSON.") from None
    return {**call, "function": function}


def _as_list(images: Any) -> list:
    if images is None:
        return []
    return list(images) if isinstance(images, list | tuple) else [images]
