"""`Client`: a GLM-V model behind an OpenAI-compatible server, used exactly like a local `VLM`.

    client = glmlab.Client("http://localhost:8080/v1", model="invoices")   # glmlab serve, or vLLM
    answer = client.ask("invoice.png", "What is the total?", thinking=False)

`ask`, `chat`, `stream` and `chat_stream` take the arguments of the VLM methods of the same names and
return the same `Answer` (text, thinking, boxes, boxed values, usage, timing), so the eval harness, the widget and
the ComfyUI node work unchanged against a local model, `glmlab serve` or `vllm serve`. Every call is
streamed so the time to first token is measured here, at the client. Built on the official `openai`
package; it does not import torch. HTTPS certificates are verified (`ca_bundle` for a private CA).

Failover: `fallbacks` (other servers and/or models) are tried in order when a server cannot be reached,
times out before its first token, answers 5xx or 429, or lacks the model (404); `deadline` bounds a
whole call, retries and waits included, and `Answer.endpoint` says which server answered. The loop is
written here because the openai package retries one server only and has no total deadline.

    client = glmlab.Client("https://a.example/v1", fallbacks=["https://b.example/v1",
                           Endpoint("https://a.example/v1", model="glm-small")], deadline=60)
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
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
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # waits between retries of one server that gave no Retry-After


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


@dataclass(frozen=True)
class Endpoint:
    """One place a call may go: a server's base URL and, optionally, the model to ask it for.

    model None: the call's own choice (its adapter, else the client's model, else that server's base
    model). api_key None: the client's key.
    """

    url: str
    model: str | None = None
    api_key: str | None = None


class Client:
    """A GLM-V model served over HTTP (glmlab serve, vLLM): the VLM interface, remotely.

    base_url: the server's OpenAI base URL ("/v1" is added when missing).
    api_key: the server's key (default: env GLMLAB_API_KEY; NO_API_KEY sends none). model: the model or
    adapter name to use by default (default: the server's base model). timeout: seconds each request may
    wait for its answer to start and between streamed pieces. retries: extra attempts on one server
    after a 5xx or 429 (waiting its Retry-After, or 0.5 s, 1 s, ...), and after connection errors and
    timeouts on the last server only (a server that cannot be reached is left at once for the next).
    max_retry_after: the longest Retry-After waited for; a longer one moves on to the next server.
    fallbacks: URLs or `Endpoint`s tried in order after this server fails (see the module).
    fallback_model: the same server with this model, tried last (with a warning), e.g. when the chosen
    adapter is missing there (404). deadline: seconds one call may take in all (None: no limit).
    ca_bundle: a PEM file of the CA(s) that signed the servers' certificates (a private CA); verify=False
    turns certificate checks off (a test server only: anyone on the path can then read the traffic).
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
        fallbacks: Sequence[str | Endpoint] = (),
        deadline: float | None = None,
        max_retry_after: float = 10.0,
        ca_bundle: str | Path | None = None,
        verify: bool = True,
        image_format: str = "PNG",
    ) -> None:
        if deadline is not None and deadline <= 0:
            raise InputError(f"Client(deadline={deadline!r}): give seconds greater than 0, or None.")
        self.base_url = normalise_base_url(base_url)
        self.model = model
        self.fallback_model = fallback_model
        self.timeout, self.retries, self.deadline = timeout, retries, deadline
        self.max_retry_after = max_retry_after
        self.image_format = image_format
        self.api_key = api_key or os.environ.get("GLMLAB_API_KEY") or NO_API_KEY
        self.verify = tls_verification(ca_bundle, verify)
        self.http = httpx.Client(verify=self.verify, timeout=timeout)
        self.endpoints = [Endpoint(self.base_url)]
        self.endpoints += [
            Endpoint(normalise_base_url(item.url), item.model, item.api_key)
            if isinstance(item, Endpoint)
            else Endpoint(normalise_base_url(item))
            for item in fallbacks
        ]
        if fallback_model is not None:
            self.endpoints.append(Endpoint(self.base_url, fallback_model))
        self._openai: dict[tuple[str, str], openai.OpenAI] = {}
        self._base_models: dict[str, str] = {}
        self.openai = self.openai_for(self.endpoints[0])

    def openai_for(self, endpoint: Endpoint) -> openai.OpenAI:
        """The openai client of one endpoint (shared by endpoints with the same URL and key); retries
        are this class's own, so the SDK's are off."""
        key = (endpoint.url, endpoint.api_key or self.api_key)
        if key not in self._openai:
            self._openai[key] = openai.OpenAI(
                base_url=key[0], api_key=key[1], timeout=self.timeout, max_retries=0, http_client=self.http
            )
        return self._openai[key]

    @property
    def _base_model(self) -> str | None:
        return self._base_models.get(self.base_url)

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
        schema = Schema.of(gen["schema"]) if gen.get("schema") is not None else None
        return RemoteStream(self, adapter, body, schema)

    # ---- server management ---------------------------------------------------------------------

    def models(self) -> list[str]:
        """The names the server answers to: its base model first, then the loaded adapters."""
        return self._call(self._list_models, self.endpoints[0])

    def _list_models(self, endpoint: Endpoint, timeout: float | None = None) -> list[str]:
        listing = self.openai_for(endpoint).models.list(timeout=timeout or self.timeout)
        bases = [entry.id for entry in listing.data if not getattr(entry, "parent", None)]
        if bases:
            self._base_models[endpoint.url] = bases[0]
        return [entry.id for entry in listing.data]

    def health(self) -> dict[str, Any]:
        """The server's /health: {"status": "ok", ...}, or {"status": "loading"|"error", "message"} (no raise)."""
        url = self.base_url.removesuffix("/v1") + "/health"
        try:
            response = self.http.get(url)
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

    def model_for(self, endpoint: Endpoint, adapter: Any, timeout: float | None = None) -> str:
        """The model name to ask `endpoint` for (listing its models once when its base model is meant)."""
        if endpoint.model is not None:
            return endpoint.model
        if adapter is DEFAULT_ADAPTER and self.model:
            return self.model
        if adapter is not None and adapter is not DEFAULT_ADAPTER:
            return str(adapter)
        if endpoint.url not in self._base_models:
            self._list_models(endpoint, timeout)
        if endpoint.url not in self._base_models:
            raise ServerError(f"{endpoint.url}: lists no models.", url=endpoint.url)
        return self._base_models[endpoint.url]

    @property
    def base_model(self) -> str:
        """The server's base model name (its first listed model without a parent)."""
        return self._call(self.model_for, self.endpoints[0], None)

    def retry_wait(self, error: Exception, attempt: int, last: bool) -> float | None:
        """Seconds to wait before asking the same server again after `error`, or None to move on
        (or, on the last server, to give up)."""
        status = getattr(error, "status_code", None)
        if attempt >= self.retries:
            return None
        if status is None:  # not reached, or no answer in time: another server is the better bet
            return BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)] if last else None
        if status != 429 and status < 500:
            return None
        header = error.response.headers.get("retry-after") if hasattr(error, "response") else None
        try:
            wait = float(header) if header is not None else BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
        except ValueError:  # an HTTP date: rare; the backoff is a fair stand-in
            wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
        return wait if wait <= self.max_retry_after else None

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except openai.OpenAIError as error:
            raise self.error(error) from None

    def error(self, error: Exception, url: str | None = None) -> ServerError:
        """An `openai` (or httpx) exception as a ServerError that says what happened and what to do."""
        url = url or self.base_url
        if isinstance(error, ServerError):
            return error
        if _is_tls_failure(error):
            return ServerError(
                f"{url}: TLS failed ({error.__cause__ or error}); for a private CA pass "
                "Client(ca_bundle=PEM file of the CA that signed the server's certificate).",
                url=url,
            )
        if isinstance(error, (openai.APITimeoutError, httpx.TimeoutException)):
            return ServerError(
                f"{url}: no answer within {self.timeout:g} s (after {self.retries} retries); raise "
                "the client's timeout or ask for fewer tokens.",
                url=url,
            )
        if isinstance(error, (openai.APIConnectionError, httpx.TransportError)):
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
        self, client: Client, adapter: Any, body: dict[str, Any], schema: Schema | None = None
    ) -> None:
        self.client = client
        self.adapter = adapter
        self.model: str | None = None
        self.endpoint: str | None = None  # the base URL of the server that answered
        self.text = ""
        self._stop = False
        self._answer: Answer | None = None
        self._start = time.perf_counter()
        self._ends = None if client.deadline is None else time.monotonic() + client.deadline
        self.schema = schema
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._extensions = {
            key: body.pop(key) for key in (*EXTENSION_FIELDS, "chat_template_kwargs") if key in body
        }
        self._body = body
        self._failures: list[tuple[Endpoint, Exception]] = []
        self._index = 0
        self._response = self._open(0)

    def _left(self) -> float:
        """Seconds this call may still take (the per-request timeout when there is no deadline)."""
        if self._ends is None:
            return self.client.timeout
        left = self._ends - time.monotonic()
        if left <= 0:
            raise self._give_up(deadline=True)
        return min(self.client.timeout, left)

    def _open(self, start: int) -> Any:
        """The first endpoint from `start` on that answers, each retried as `Client.retry_wait` says."""
        endpoints = self.client.endpoints
        for index in range(start, len(endpoints)):
            endpoint = endpoints[index]
            attempt = 0
            while True:
                timeout = self._left()
                try:
                    model = self.client.model_for(endpoint, self.adapter, timeout)
                    response = self.client.openai_for(endpoint).chat.completions.create(
                        model=model, extra_body=self._extensions or None, timeout=timeout, **self._body
                    )
                except (openai.OpenAIError, httpx.HTTPError) as error:
                    if not _worth_another_try(error):
                        raise self.client.error(error, endpoint.url) from None
                    self._failures.append((endpoint, error))
                    wait = self.client.retry_wait(error, attempt, last=index == len(endpoints) - 1)
                    if wait is None:
                        break
                    attempt += 1
                    time.sleep(min(wait, self._left()))
                    continue
                if self._failures:
                    logger.warning(
                        "%s; using the fallback %r at %s",
                        _failure_line(*self._failures[-1]),
                        model,
                        endpoint.url,
                    )
                self._index, self.model, self.endpoint = index, model, endpoint.url
                return response
        raise self._give_up()

    def _give_up(self, deadline: bool = False) -> ServerError:
        """One error for the whole call: the only server's own message, or every endpoint's."""
        if deadline:
            tried = "; ".join(_failure_line(*failure) for failure in self._failures) or "none answered yet"
            url = self.endpoint or self.client.base_url
            return ServerError(
                f"{url}: no answer within the call's deadline of {self.client.deadline:g} s ({tried}); "
                "raise Client(deadline=...) or ask for fewer tokens.",
                url=url,
            )
        if len(self.client.endpoints) == 1:
            return self.client.error(self._failures[-1][1])
        last = self.client.error(self._failures[-1][1], self._failures[-1][0].url)
        lines = "; ".join(_failure_line(*failure) for failure in self._failures)
        return ServerError(
            f"every endpoint failed: {lines}",
            url=last.url,
            status=last.status,
            code=last.code,
            server_message=last.server_message,
        )

    def __iter__(self) -> Iterator[str]:
        if self._answer is not None:
            return
        first_token, usage, finish_reason, thinking = None, None, None, False
        while True:
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
                    if self._ends is not None and time.monotonic() > self._ends:
                        raise self._give_up(deadline=True)
                break
            except (openai.OpenAIError, httpx.HTTPError) as error:
                self._response.close()
                endpoint = self.client.endpoints[self._index]
                if first_token is not None or not _worth_another_try(error):
                    raise self.client.error(error, endpoint.url) from None
                # nothing arrived yet (a slow server's first token timed out): the next endpoint
                self._failures.append((endpoint, error))
                if self._index + 1 >= len(self.client.endpoints):
                    raise self._give_up() from None
                self._response = self._open(self._index + 1)
            except BaseException:
                self._response.close()
                raise
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
            self.text,
            usage=counts,
            timing=timing,
            finish_reason=finish_reason or "stop",
            model=self.model,
            endpoint=self.endpoint,
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


def _worth_another_try(error: Exception) -> bool:
    """Whether another attempt (here or elsewhere) may succeed: not reached, timed out, 5xx, 429, or
    the model missing (404). Other answers (400, 401, ...) would be the same anywhere."""
    if isinstance(error, (openai.APIConnectionError, httpx.TransportError)):
        return not _is_tls_failure(error)  # a certificate that fails to verify fails the same again
    status = getattr(error, "status_code", None)
    return status is not None and (status >= 500 or status in (404, 429))


def _is_tls_failure(error: BaseException | None) -> bool:
    """Whether an ssl error (a certificate that did not verify) is anywhere in the chain of causes."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, ssl.SSLError):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _failure_line(endpoint: Endpoint, error: Exception) -> str:
    status = getattr(error, "status_code", None)
    what = f"answered {status}" if status else type(error).__name__
    model = f" ({endpoint.model})" if endpoint.model else ""
    return f"{endpoint.url}{model} {what}"


def tls_verification(ca_bundle: str | Path | None, verify: bool) -> ssl.SSLContext | bool:
    """httpx's `verify`: the system's CAs by default, `ca_bundle`'s with one, none with verify=False."""
    if ca_bundle is None:
        return verify
    if not verify:
        raise InputError("Client(ca_bundle=..., verify=False): a CA bundle is for verifying; drop one.")
    path = Path(ca_bundle).expanduser()
    if not path.is_file():
        raise InputError(
            f"Client(ca_bundle={str(ca_bundle)!r}): no such file; give a PEM file of CA certificates."
        )
    return ssl.create_default_context(cafile=str(path))


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
