"""`Client`: a GLM-V model behind an OpenAI-compatible server, used exactly like a local `VLM`.

    client = glmlab.Client("http://localhost:8080/v1", model="invoices")   # glmlab serve, or vLLM
    answer = client.ask("invoice.png", "What is the total?", thinking=False)

`ask`, `chat`, `stream` and `chat_stream` take the arguments of the VLM methods of the same names and
return the same `Answer` (text, thinking, boxes, boxed values, usage, timing), so the eval harness, the widget and
the ComfyUI node work unchanged against a local model, `glmlab serve` or `vllm serve`. Every call is
streamed so the time to first token is measured here, at the client. Built on the official `openai`
package (its retries with backoff on connection errors, 429 and 5xx); it does not import torch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
from PIL import Image

from glmlab.answer import THINK_CLOSE, THINK_OPEN, Answer, Timing, Usage
from glmlab.errors import GlmlabError, InputError
from glmlab.images import image_to_data_url
from glmlab.interface import DEFAULT_ADAPTER, AdapterChoice
from glmlab.openai_format import EXTENSION_FIELDS, request_fields, thinking_fields, to_openai_messages
from glmlab.prompts import question_messages
from glmlab.structured import Schema

logger = logging.getLogger(__name__)
NO_API_KEY = "none"  # sent when there is no key: openai's client insists on one, a keyless server ignores it


class ServerError(GlmlabError, RuntimeError):
    """A server that could not be reached or answered with an error; names the URL, status and message."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        server_message: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url, self.status, self.server_message, self.code = url, status, server_message, code


class Client:
    """A GLM-V model served over HTTP (glmlab serve, vLLM): the VLM interface, remotely.

    base_url: the server's OpenAI base URL ("/v1" is added when missing).
    api_key: the server's key (default: env GLMLAB_API_KEY; NO_API_KEY sends none). model: the model or
    adapter name to use by default (default: the server's base model). timeout: seconds per request. retries: extra attempts,
    with exponential backoff, on connection errors, 429 and 5xx. fallback_model: used, with a warning,
    when the chosen model or adapter is missing on the server (404).
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8080/v1",
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
        retries: int = 2,
        fallback_model: str | None = None,
        image_format: str = "PNG",
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        self.model = model
        self.fallback_model = fallback_model
        self.timeout, self.retries = timeout, retries
        self.image_format = image_format
        self.openai = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("GLMLAB_API_KEY") or NO_API_KEY,
            timeout=timeout,
            max_retries=retries,
        )
        self._base_model: str | None = None

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, model={self.model!r})"

    # ---- the VLM interface ---------------------------------------------------------------------

    def ask(
        self,
        images: Any,
        question: str,
        *,
        system: str | None = None,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        **gen: Any,
    ) -> Answer:
        """Answer one question about zero or more images (any input `glmlab.images.to_pil` takes).

        adapter: a model or adapter name on the server, None for the base model; default `self.model`.
        max_image_pixels: downscale images to this area before sending (the server's budget applies too).
        gen: max_new_tokens, temperature (0 = greedy), top_p, top_k, repetition_penalty, seed, stop.
        """
        return self.stream(
            images,
            question,
            system=system,
            thinking=thinking,
            adapter=adapter,
            max_image_pixels=max_image_pixels,
            **gen,
        ).answer

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        **gen: Any,
    ) -> Answer:
        """Answer the last turn of a conversation (OpenAI or transformers message format)."""
        return self.chat_stream(
            messages, thinking=thinking, adapter=adapter, max_image_pixels=max_image_pixels, **gen
        ).answer

    def stream(
        self, images: Any, question: str, *, system: str | None = None, **options: Any
    ) -> RemoteStream:
        """Like `ask`, but returns a stream of text pieces as they arrive (then `.answer`)."""
        return self.chat_stream(question_messages(images, question, system), **options)

    def chat_stream(
        self,
        messages: list[dict[str, Any]],
        *,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        **gen: Any,
    ) -> RemoteStream:
        """Like `chat`, streamed. Bad input raises here, before anything is sent."""
        body = {
            "messages": self.openai_messages(messages, max_image_pixels=max_image_pixels),
            **request_fields(gen),
            **thinking_fields(thinking),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        model = self._model_for(adapter)
        schema = Schema.of(gen["schema"]) if gen.get("schema") is not None else None
        return RemoteStream(self, model, body, schema)

    # ---- server management ---------------------------------------------------------------------

    def models(self) -> list[str]:
        """The names the server answers to: its base model first, then the loaded adapters."""
        listing = self._call(self.openai.models.list)
        bases = [entry.id for entry in listing.data if not getattr(entry, "parent", None)]
        self._base_model = bases[0] if bases else self._base_model
        return [entry.id for entry in listing.data]

    def health(self) -> dict[str, Any]:
        """The server's /health: {"status": "ok", ...}, or {"status": "loading"|"error", "message"} (no raise)."""
        import httpx

        url = self.base_url.removesuffix("/v1") + "/health"
        try:
            response = httpx.get(url, timeout=self.timeout)
        except httpx.HTTPError as error:
            raise ServerError(
                f"{url}: could not connect ({error}); is the server running? Start one with `glmlab serve`.",
                url=url,
            ) from None
        body = (
            response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        )
        if response.status_code == 200:
            return body or {"status": "ok"}
        error = body.get("error", {}) if isinstance(body, dict) else {}
        status = "loading" if error.get("code") == "model_loading" else "error"
        return {
            "status": status,
            "http_status": response.status_code,
            "message": error.get("message", response.text),
        }

    def load_adapter(self, path: str | Path, name: str | None = None) -> str:
        """Load a LoRA adapter folder on the server (`POST /v1/load_lora_adapter`); returns its name.

        The path is sent resolved and absolute: the server must see the same filesystem.
        """
        folder = Path(path).expanduser().resolve()
        name = name or folder.name
        self._call(
            self.openai.post,
            "/load_lora_adapter",
            body={"lora_name": name, "lora_path": str(folder)},
            cast_to=str,
        )
        return name

    def unload_adapter(self, name: str) -> None:
        self._call(self.openai.post, "/unload_lora_adapter", body={"lora_name": name}, cast_to=str)

    # ---- helpers -------------------------------------------------------------------------------

    def openai_messages(
        self, messages: list[dict[str, Any]], *, max_image_pixels: int | None = None
    ) -> list[dict]:
        """Messages in OpenAI's format with every image and video inlined as a data URL
        (`glmlab.openai_format`)."""
        return to_openai_messages(messages, lambda image: self._image_part(image, max_image_pixels))

    def _image_part(self, image: Image.Image, max_image_pixels: int | None) -> dict[str, Any]:
        url = image_to_data_url(downscale(image, max_image_pixels), self.image_format)
        return {"type": "image_url", "image_url": {"url": url}}

    def _model_for(self, adapter: Any) -> str:
        if adapter is DEFAULT_ADAPTER:
            return self.model or self.base_model
        return self.base_model if adapter is None else str(adapter)

    @property
    def base_model(self) -> str:
        """The server's base model name (its first listed model without a parent)."""
        if self._base_model is None:
            self.models()
        if self._base_model is None:
            raise ServerError(f"{self.base_url}: lists no models.", url=self.base_url)
        return self._base_model

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except openai.OpenAIError as error:
            raise self.error(error) from None

    def error(self, error: openai.OpenAIError) -> ServerError:
        """An `openai` exception as a ServerError that says what happened and what to do."""
        url = self.base_url
        if isinstance(error, openai.APITimeoutError):
            return ServerError(
                f"{url}: no answer within {self.timeout:g} s (after {self.retries} retries); raise "
                "the client's timeout or ask for fewer tokens.",
                url=url,
            )
        if isinstance(error, openai.APIConnectionError):
            return ServerError(
                f"{url}: could not connect ({error.__cause__ or error}) after {self.retries} "
                "retries; is the server running? Start one with `glmlab serve`.",
                url=url,
            )
        body = getattr(error, "body", None)
        details = body.get("error", body) if isinstance(body, dict) else {}
        message = (
            details.get("message") if isinstance(details, dict) and details.get("message") else str(error)
        )
        code = details.get("code") if isinstance(details, dict) else None
        status = getattr(error, "status_code", None)
        where = f"answered {status}" if status else "reported an error while streaming"
        return ServerError(
            f"{url}: the server {where}: {message}", url=url, status=status, server_message=message, code=code
        )


class RemoteStream:
    """Text pieces of a server's answer as they arrive; `answer` holds the Answer afterwards.

    Mirrors `glmlab.generation.Stream`: iterate it, `stop()` to end early (the server stops generating
    when the connection closes), read `answer`. The pieces join to `answer.raw`, with the reasoning
    wrapped in <think>..</think> as a local model writes it.
    """

    def __init__(
        self, client: Client, model: str, body: dict[str, Any], schema: Schema | None = None
    ) -> None:
        self.client = client
        self.model = model
        self.text = ""
        self._stop = False
        self._answer: Answer | None = None
        self._start = time.perf_counter()
        self.schema = schema
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._response = self._open(body)

    def _open(self, body: dict[str, Any]) -> Any:
        create = self.client.openai.chat.completions.create
        extensions = {
            key: body.pop(key) for key in (*EXTENSION_FIELDS, "chat_template_kwargs") if key in body
        }
        try:
            return create(model=self.model, extra_body=extensions or None, **body)
        except openai.NotFoundError as error:
            fallback = self.client.fallback_model
            if fallback is None or fallback == self.model:
                raise self.client.error(error) from None
            logger.warning(
                "model %r is not on %s; using the fallback %r", self.model, self.client.base_url, fallback
            )
            self.model = fallback
            return self.client._call(create, model=fallback, extra_body=extensions or None, **body)
        except openai.OpenAIError as error:
            raise self.client.error(error) from None

    def __iter__(self) -> Iterator[str]:
        if self._answer is not None:
            return
        first_token, usage, finish_reason, thinking = None, None, None, False
        try:
            for chunk in self._response:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    finish_reason = choice.finish_reason or finish_reason
                    self._add_tool_calls(choice.delta)
                    piece, thinking = _raw_piece(choice.delta, thinking)
                    if piece:
                        first_token = first_token or time.perf_counter()
                        self.text += piece
                        yield piece
                if self._stop:
                    break
        except openai.OpenAIError as error:
            raise self.client.error(error) from None
        finally:
            self._response.close()
        self._answer = self._build(first_token, time.perf_counter(), usage, finish_reason)

    def _build(self, first_token: float | None, end: float, usage: Any, finish_reason: str | None) -> Answer:
        details = getattr(usage, "prompt_tokens_details", None)  # glmlab's server adds image_tokens there
        image_tokens = getattr(details, "image_tokens", None) or 0
        counts = Usage(
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            image_tokens=image_tokens,
            video_tokens=getattr(details, "video_tokens", None) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )
        timing = Timing.from_times(self._start, first_token, end, counts.completion_tokens)
        answer = Answer.from_raw(
            self.text, usage=counts, timing=timing, finish_reason=finish_reason or "stop", model=self.model
        )
        if self.schema is not None:
            answer.parsed, answer.error = self.schema.parse(answer.text)
        answer.tool_calls = [self._tool_calls[index] for index in sorted(self._tool_calls)]
        return answer

    def _add_tool_calls(self, delta: Any) -> None:
        """Tool calls arrive as deltas by index (name and id first, arguments in pieces)."""
        for call in getattr(delta, "tool_calls", None) or []:
            entry = self._tool_calls.setdefault(
                call.index, {"id": call.id, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            entry["id"] = call.id or entry["id"]
            if call.function is not None:
                entry["function"]["name"] += call.function.name or ""
                entry["function"]["arguments"] += call.function.arguments or ""

    def stop(self) -> None:
        """End the answer early; what arrived so far is kept."""
        self._stop = True

    @property
    def answer(self) -> Answer:
        for _ in self:
            pass
        assert self._answer is not None
        return self._answer


def _raw_piece(delta: Any, thinking: bool) -> tuple[str, bool]:
    """A delta as raw model text: reasoning wrapped in <think>..</think> (vLLM: `reasoning_content`,
    newer vLLM: `reasoning`)."""
    reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None) or ""
    content = delta.content or ""
    piece = ""
    if reasoning:
        piece += ("" if thinking else THINK_OPEN) + reasoning
        thinking = True
    if content:
        piece += (THINK_CLOSE if thinking else "") + content
        thinking = False
    return piece, thinking


def downscale(image: Image.Image, max_image_pixels: int | None) -> Image.Image:
    """The image scaled down (aspect kept) to at most `max_image_pixels` pixels; unchanged if smaller."""
    if max_image_pixels is None or image.width * image.height <= max_image_pixels:
        return image
    scale = math.sqrt(max_image_pixels / (image.width * image.height))
    return image.resize(
        (max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.BICUBIC
    )


def normalise_base_url(url: str) -> str:
    """'http://host:8080' or 'http://host:8080/v1/' -> 'http://host:8080/v1'."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"{url}: not a server URL; expected e.g. http://localhost:8080/v1.")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path if path else '/v1'}"
