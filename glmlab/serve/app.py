"""`create_app`: glmlab's OpenAI-compatible server as a FastAPI app, built by a factory.

The factory takes settings (the model loads in a background thread) or an already loaded VLM (a
notebook's, a test's), so tests build the app in-process and `glmlab serve` runs the same app under
uvicorn. Blocking model work runs in worker threads; the event loop only routes, queues and streams.
Routes: POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics (Prometheus),
POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter (the last two as vLLM names them), and GET /
with its two files under /static/: the chat page (`glmlab.serve.page`), a client of the routes above.

Before a route runs, middleware checks, in this order: the Host header (400 unless a loopback name,
the listening address or --allowed-host: a web page cannot reach the server by DNS rebinding), the
API key (401; /health, the page's files and, unless --metrics-require-key, /metrics are open), a JSON
Content-Type on POST bodies (415: a browser's cross-site "simple" request cannot carry one without a
CORS preflight, which this server never grants), the body size (413) and the client's rate limits
(429). Every response is counted for /metrics, these refusals included.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glmlab.errors import GlmlabError
from glmlab.rows import Row
from glmlab.serve import errors, schemas
from glmlab.serve.errors import APIError
from glmlab.serve.host import ModelHost, Ticket, wait_for_thread_event
from glmlab.serve.metrics import MetricsMiddleware
from glmlab.serve.page import add_page, is_page_request
from glmlab.serve.rate_limits import RateLimitMiddleware
from glmlab.serve.settings import ServerSettings

logger = logging.getLogger(__name__)


def create_app(
    source: ServerSettings | Any,
    settings: ServerSettings | None = None,
    *,
    loader: Callable[..., Any] | None = None,
) -> FastAPI:
    """The server app over `source`: ServerSettings (loads `settings.model` in the background) or a VLM.

    settings: limits and adapters when `source` is a VLM (default: ServerSettings named after it).
    loader: what loads the model (default `glmlab.load`); tests pass one that waits, to see the 503.
    """
    if isinstance(source, ServerSettings):
        settings, vlm = source, None
    else:
        vlm = source
        settings = settings or ServerSettings(model=vlm.name)
    host = ModelHost(settings, vlm)
    if vlm is None:
        if loader is None:
            from glmlab.loading import load as loader
        host.start_loading(loader)
    app = FastAPI(
        title="glmlab",
        summary="OpenAI-compatible server for GLM-V models",
        docs_url=None,
        redoc_url=None,
        strict_content_type=True,  # never parse a body without a JSON Content-Type as JSON
    )
    app.state.host = host
    # Added innermost first. The metrics wrap everything (they count every answer, refusals included);
    # then the Host check runs first and the rate limits last, just before the route.
    if host.rate_limits.enabled:
        app.add_middleware(RateLimitMiddleware, limits=host.rate_limits)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(JSONContentTypeMiddleware)
    if settings.api_key is not None:  # ServerSettings refuses an empty key
        open_paths = {"/health"} | (set() if settings.metrics_require_key else {"/metrics"})
        app.add_middleware(APIKeyMiddleware, api_key=settings.api_key, open_paths=frozenset(open_paths))
    app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.trusted_hosts())
    app.add_middleware(MetricsMiddleware, metrics=host.metrics)
    errors.install(app)
    _add_routes(app, host)
    add_page(app)
    _document_errors_as_answered(app)
    return app


class HostCheckMiddleware(TrustedHostMiddleware):
    """Starlette's Host header check (its patterns: exact names, '*.example.com', '*'), answering
    OpenAI's error shape instead of plain text, and never redirecting."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        host = _host_name(header)
        if not host or not any(
            host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
            for pattern in self.allowed_hosts
        ):
            error = APIError(
                400,
                f"the Host header {header[:100]!r} is not one this server answers to (localhost, "
                "127.0.0.1, [::1], its --host address and the names given with --allowed-host); "
                "start it with --allowed-host NAME to add the name clients use.",
                code="invalid_host",
            )
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _host_name(header: str) -> str:
    """The name in a Host header, lowercased: 'Example.com:8080' -> 'example.com', '[::1]:80' -> '[::1]'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.partition(":")[0]


class JSONContentTypeMiddleware:
    """415 for a POST whose Content-Type is not JSON, before its body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            content_type = Headers(scope=scope).get("content-type", "")
            media = content_type.partition(";")[0].strip().lower()
            if media != "application/json" and not (
                media.startswith("application/") and media.endswith("+json")
            ):
                got = repr(content_type) if content_type else "no Content-Type"
                error = APIError(
                    415,
                    f"{scope['method']} {scope['path']} takes a JSON body sent with 'Content-Type: "
                    f"application/json' (got {got}).",
                    code="unsupported_media_type",
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class APIKeyMiddleware:
    """401 without `Authorization: Bearer <key>`, before the body is read, on every path but
    `open_paths` and the chat page's files (which hold no secret): /health, and /metrics unless
    --metrics-require-key (open like vLLM's, so a Prometheus scraper needs no key: it shows counts and
    timings, no prompts, keys or adapter names)."""

    def __init__(
        self, app: ASGIApp, api_key: str, open_paths: frozenset[str] = frozenset({"/health"})
    ) -> None:
        self.app = app
        self.key = api_key.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths and not is_page_request(scope):
            scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                error = APIError(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>' (the key the "
                    "server was started with, --api-key or GLMLAB_API_KEY).",
                    code="invalid_api_key",
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: by its Content-Length before reading, and by the bytes actually
    received (chunked or lying clients). By hand because starlette's limiter answers in plain text."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.too_large().response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if received > self.max_bytes:  # FastAPI's body parsing passes HTTPException on to the handlers
                raise HTTPException(413, detail=self.too_large().message)
            return message

        await self.app(scope, limited_receive, send)

    def too_large(self) -> APIError:
        return APIError(
            413,
            f"the request body is larger than this server's limit ({self.max_bytes:,} bytes); "
            "send smaller or fewer images, or raise --max-request-bytes.",
            code="request_too_large",
        )


def _add_routes(app: FastAPI, host: ModelHost) -> None:
    created = int(time.time())
    # Every status a route can answer is declared (with OpenAI's error body) in /openapi.json.
    auth = (401,) if host.settings.api_key else ()
    plain_text = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}

    @app.get("/health", responses=errors.documented(500, 503))
    async def health() -> dict[str, Any]:
        vlm = host.require_ready()
        return {
            "status": "ok",
            "model": host.base_name,
            "adapters": list(vlm.adapters),
            "running": host.running,
            "queued": host.admitted - host.running - host.sending,
            "sending": host.sending,
        }

    metrics_auth = (401,) if host.settings.metrics_require_key else ()

    @app.get(
        "/metrics",
        response_class=Response,
        responses={**plain_text, **errors.documented(*metrics_auth, 500)},
    )
    async def metrics() -> Response:
        """Prometheus' text format: requests by route and status, queue, batches, TTFT, latency,
        tokens per second, prefix cache, adapters (glmlab.serve.metrics)."""
        return host.metrics.response()

    @app.get("/v1/models", responses=errors.documented(*auth, 500, 503))
    async def models() -> dict[str, Any]:
        names = host.model_names()
        return schemas.models_body(names[0], names[1:], created)

    @app.post(
        "/v1/load_lora_adapter",
        response_class=PlainTextResponse,
        responses={**plain_text, **errors.documented(400, *auth, 413, 415, 500, 503)},
    )
    async def load_lora_adapter(request: schemas.LoadAdapterRequest) -> PlainTextResponse:
        name = await run_in_threadpool(
            host.load_adapter, request.lora_name, request.lora_path, replace=request.load_inplace
        )
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post(
        "/v1/unload_lora_adapter",
        response_class=PlainTextResponse,
        responses={**plain_text, **errors.documented(400, *auth, 404, 413, 415, 500, 503)},
    )
    async def unload_lora_adapter(request: schemas.UnloadAdapterRequest) -> PlainTextResponse:
        await run_in_threadpool(host.unload_adapter, request.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{request.lora_name}' removed successfully.")

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses={
            200: {
                "description": "A chat.completion, or with stream=true its chunks as server-sent events.",
                "content": {"text/event-stream": {}},  # no schema: server-sent events are not one JSON value
            },
            **errors.documented(400, *auth, 404, 413, 415, 429, 500, 503, 504),
        },
    )
    async def chat_completions(
        request: schemas.ChatCompletionRequest, http: Request
    ) -> JSONResponse | StreamingResponse:
        adapter = host.resolve_model(request.model)
        model_name = request.model or host.base_name
        deadline = anyio.current_time() + host.settings.timeout_s
        _check_choices(request.n, host.settings)
        finished = partial(_finished, host, host.rate_limits.client_key(http.scope), time.perf_counter())
        ticket = host.admit()
        try:
            streams = await _start_generation(host, ticket, request, adapter, deadline)
        except BaseException:
            ticket.close()
            raise
        if request.stream:
            events = _events(
                streams,
                schemas.new_completion_id(),
                model_name,
                request.include_usage,
                deadline,
                finished,
                request.tool_mode,
            )
            return EventStreamResponse(
                events,
                generated=ticket.finish_generation,
                cleanup=ticket.close,
                send_timeout_s=host.settings.send_timeout_s,
            )
        try:
            answers = await _finish(streams, deadline)
        finally:
            with anyio.CancelScope(shield=True):
                await ticket.finish_generation()
            ticket.close()
        finished(answers)
        return JSONResponse(schemas.completion_body(schemas.new_completion_id(), model_name, answers))


def _document_errors_as_answered(app: FastAPI) -> None:
    """/openapi.json with OpenAI's error body for every declared error status, and without FastAPI's
    automatic 422 (validation errors are answered as 400)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas_ = document.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas_.pop(name, None)
            schemas_.update(errors.error_schemas())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _check_choices(n: int, settings: ServerSettings) -> None:
    if n > settings.max_n:
        raise APIError(
            400,
            f"n={n} asks for more choices than this server gives one request ({settings.max_n}, --max-n).",
            code="invalid_value",
            param="n",
        )


async def _start_generation(
    host: ModelHost,
    ticket: Ticket,
    request: schemas.ChatCompletionRequest,
    adapter: str | None,
    deadline: float,
) -> list[Any]:
    """Decode the images, check and prepare the request, queue one row per choice and wait for their
    batch to start: the rows' streams (`glmlab.generation.Stream`).

    Raises APIError 400 for bad input (before queueing), 503 when other requests' images fill the decode
    memory, 429 after --max-queue-wait, 504 when the deadline passes in the queue.
    """
    settings = host.settings
    _check_videos(request, settings)
    messages = await run_in_threadpool(
        request.glmlab_messages,
        allow_urls=settings.allow_urls,
        allow_private_urls=settings.allow_private_urls,
        max_url_bytes=settings.max_request_bytes,
        max_input_pixels=settings.max_input_pixels,
        max_frames=settings.max_images,
        budget=ticket.images,  # released when the ticket closes, with the request
        video_options={  # sampled frames count in the same budget as images
            "fps": settings.video_fps,
            "max_frames": settings.video_max_frames,
            "budget": ticket.images,
        },
    )
    prepared = await run_in_threadpool(
        partial(
            host.vlm.open_request,
            messages,
            thinking=request.thinking,
            adapter=adapter,
            max_image_pixels=settings.max_image_pixels,
            max_model_len=settings.max_model_len,
            **request.generation_options(),
        )
    )
    rows = [
        Row.open(prepared, host.vlm.text_clock(), _choice_seed(prepared.settings.seed, index))
        for index in range(request.n)
    ]
    await ticket.start_generation(rows, deadline)
    return [row.stream for row in rows]


def _check_videos(request: schemas.ChatCompletionRequest, settings: ServerSettings) -> None:
    count = request.video_count()
    if count > settings.max_videos:
        raise APIError(
            400,
            f"the request holds {count} videos, more than this server takes in one request "
            f"({settings.max_videos}, --max-videos); send them in separate requests.",
            code="invalid_value",
            param="messages",
        )


def _choice_seed(seed: int | None, index: int) -> int | None:
    """Choice i of a seeded request samples with seed + i: the choices differ, and each is reproducible."""
    return None if seed is None else seed + index


async def _finish(streams: list[Any], deadline: float) -> list[Any]:
    """The streams' Answers, or 504 when the deadline passes first."""
    with anyio.move_on_after(deadline - anyio.current_time()):
        for stream in streams:
            await wait_for_thread_event(stream.add_done_callback)
        return [stream.answer for stream in streams]
    raise _timeout("generating")


def _finished(host: ModelHost, client: str, arrived: float, answers: list[Any]) -> None:
    """A request's complete answers: each reported to /metrics (TTFT and latency from the request's
    arrival, queueing included) and their tokens charged to the client's TPM window (the prompt once,
    as usage counts it)."""
    latency = time.perf_counter() - arrived
    for answer in answers:
        timing = answer.timing
        ttft = None if timing.ttft_s is None else max(0.0, latency - (timing.total_s - timing.ttft_s))
        host.metrics.observe_answer(ttft, latency, answer.usage.completion_tokens)
    host.rate_limits.charge_tokens(client, schemas.usage_body(answers)["total_tokens"])


def _timeout(stage: str) -> APIError:
    return APIError(
        504,
        f"the request timed out while {stage} (the server's limit is set with --timeout); "
        "ask for fewer tokens or retry when the server is less busy.",
        code="timeout",
    )


async def _pieces(stream: Any, deadline: float) -> AsyncIterator[str]:
    """The stream's text pieces, each fetched off the event loop; APIError 504 at the deadline."""
    pieces = iter(stream)
    while True:
        with anyio.move_on_after(deadline - anyio.current_time()) as scope:
            piece = await anyio.to_thread.run_sync(next, pieces, None, abandon_on_cancel=True)
        if scope.cancelled_caught:
            stream.stop()
            raise _timeout("generating")
        if piece is None:
            return
        yield piece


async def _events(
    streams: list[Any],
    completion_id: str,
    model: str,
    include_usage: bool,
    deadline: float,
    finished: Callable[[list[Any]], None],
    tool_mode: str | None = None,
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: role, content/reasoning deltas, finish, usage, [DONE].

    With several choices (n), each choice's events follow the previous choice's (each chunk names
    its index); all of them generate together. `finished` gets the Answers once they are complete.
    """
    created = int(time.time())
    try:
        for index, stream in enumerate(streams):
            chunk = partial(schemas.chunk_body, completion_id, created, model, index=index)
            router, gate = schemas.ThinkingRouter(), schemas.ToolCallGate(tool_mode)
            yield _sse(chunk({"role": "assistant", "content": ""}))
            async for piece in _pieces(stream, deadline):
                for field, text in gate.route(router.feed(piece)):
                    yield _sse(chunk({field: text}))
            for field, text in gate.route([*router.flush(), ("content", None)]):
                yield _sse(chunk({field: text}))
            answer = stream.answer
            if answer.tool_calls:
                calls = [{"index": position, **call} for position, call in enumerate(answer.tool_calls)]
                yield _sse(chunk({"tool_calls": calls}))
            yield _sse(chunk({}, answer.finish_reason))
        answers = [stream.answer for stream in streams]
        finished(answers)
        if include_usage:
            yield _sse(schemas.usage_chunk_body(completion_id, created, model, answers))
    except APIError as error:  # headers are sent: errors travel as an event
        yield _sse(error.body())
    except GlmlabError as error:
        yield _sse(errors.from_glmlab_error(error).body())
    except Exception as error:
        logger.exception("generation failed while streaming")
        yield _sse(
            errors.error_body(500, f"internal server error ({type(error).__name__}); see the server log.")
        )
    yield "data: [DONE]\n\n"


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


class EventStreamResponse(StreamingResponse):
    """A text/event-stream response whose generation runs ahead of the client.

    Events are buffered as they are made (one answer's worth: at most max_tokens small pieces), so
    `generated` (stop generating, wait until the model is done with the request) runs as soon as the
    model is done, not when a slow client has read everything. Each send must finish within
    `send_timeout_s`, or the stream is dropped and the connection closed: a stalled reader loses its
    own stream, not other users' requests. `generated` and `cleanup` (free the queue place) always
    run, also when the client disconnects mid-stream or before the first event.
    """

    def __init__(
        self,
        events: AsyncIterator[str],
        *,
        generated: Callable[[], Any],
        cleanup: Callable[[], Any],
        send_timeout_s: float,
    ) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._events = events
        self._generated = generated
        self._cleanup = cleanup
        self._send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sink, self.body_iterator = anyio.create_memory_object_stream[str](math.inf)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._produce, sink)
                await super().__call__(scope, receive, partial(self._send, send, group.cancel_scope))
                group.cancel_scope.cancel()  # sent, dropped or disconnected: nothing more to produce
        finally:
            with anyio.CancelScope(shield=True):
                await self._generated()
                self._cleanup()
                await self._events.aclose()

    async def _produce(self, sink: Any) -> None:
        with sink:
            async for event in self._events:
                sink.send_nowait(event)
        await self._generated()

    async def _send(self, send: Send, stream_scope: anyio.CancelScope, message: Message) -> None:
        with anyio.move_on_after(self._send_timeout_s) as timer:
            await send(message)
        if timer.cancelled_caught:
            logger.warning(
                "a streaming client read nothing for %.0f s (--send-timeout): its stream is dropped",
                self._send_timeout_s,
            )
            stream_scope.cancel()
