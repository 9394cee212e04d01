"""`ServerMetrics`: what `GET /metrics` shows, in Prometheus' text format (prometheus_client).

Each app has its own registry (tests and notebooks build many apps in one process; the global registry
would refuse the second one's metrics). Three kinds of source:

- `MetricsMiddleware` counts every response by route and status, the refusals of the checks before a
  route runs (400 Host, 401, 413, 415, 429) and unhandled errors (500) included;
- the scheduler reports each batch it runs (`observe_batch`) and each answer it finishes
  (`observe_answer`);
- the rest is read from its owner when Prometheus scrapes (`HostCollector`): the request counters of
  the `ModelHost`, the prefix cache's hits and misses, the number of adapters loaded. Nothing to keep
  in step, and a value is never stale.

All names start with `glmlab_`; times are in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "unmatched"  # a path no route serves: one label value, however many paths are tried

# vLLM's buckets for the same measures (vllm/engine/metrics.py), extended to this server's 300 s timeout
TTFT_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 240.0, 480.0)
TOKENS_PER_S_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class HostCounters(Protocol):
    """What the collector reads from `glmlab.serve.host.ModelHost` (not imported: the host owns the
    metrics, not the other way round)."""

    admitted: int
    running: int
    sending: int
    vlm: Any


class ServerMetrics:
    """One server's metrics: its own registry, the metrics the app and the scheduler fill, and the
    collector that reads the rest from `host` at scrape time."""

    def __init__(self, host: HostCounters) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "glmlab_requests",
            "HTTP responses by route (the path, or 'unmatched') and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "glmlab_batch_size",
            "Requests in each batch the model ran.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "glmlab_time_to_first_token_seconds",
            "From a request's arrival to its first generated token (queueing and prefill included).",
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "glmlab_request_latency_seconds",
            "From a request's arrival to its last generated token.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens_per_s = Histogram(
            "glmlab_tokens_per_second",
            "Decode speed of each answer: tokens after the first over the time after the first "
            "(glmlab.answer.Timing's decode_tokens_per_s).",
            buckets=TOKENS_PER_S_BUCKETS,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "glmlab_generated_tokens", "Completion tokens generated, all requests.", registry=registry
        )
        registry.register(HostCollector(host))

    def observe_batch(self, size: int) -> None:
        """The scheduler ran a batch of `size` requests (one decode run, prefill included)."""
        self.batch_size.observe(size)

    def observe_answer(self, ttft_s: float | None, latency_s: float, completion_tokens: int) -> None:
        """A request finished: `ttft_s` from its arrival to its first token (None when it generated
        none), `latency_s` to its end. The tokens-per-second sample needs two tokens after the first
        token's time, as `glmlab.answer.Timing.from_times` computes it."""
        self.latency.observe(latency_s)
        self.generated_tokens.inc(completion_tokens)
        if ttft_s is None:
            return
        self.ttft.observe(ttft_s)
        if completion_tokens > 1 and latency_s > ttft_s:
            self.tokens_per_s.observe((completion_tokens - 1) / (latency_s - ttft_s))

    def count_response(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def response(self) -> Response:
        """The registry in the text format Prometheus scrapes, with its content type."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class HostCollector(Collector):
    """Gauges and counters read from the host when Prometheus scrapes."""

    def __init__(self, host: HostCounters) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        host = self.host
        queued = host.admitted - host.running - host.sending
        yield _gauge("glmlab_requests_queued", "Requests admitted and waiting for the model.", queued)
        yield _gauge("glmlab_requests_running", "Requests the model is generating for.", host.running)
        yield _gauge(
            "glmlab_requests_sending",
            "Requests generated whose responses are still being sent.",
            host.sending,
        )
        vlm = host.vlm
        adapters = len(vlm.adapters) if vlm is not None else 0
        yield _gauge("glmlab_adapters_loaded", "LoRA adapters loaded beside the base model.", adapters)
        cache = getattr(vlm, "prefix_cache", None)  # glmlab.prefix_cache.PrefixCache
        yield _counter(
            "glmlab_prefix_cache_hits",
            "Prompts whose images' prefill was reused from the prefix cache.",
            cache.hits if cache is not None else 0,
        )
        yield _counter(
            "glmlab_prefix_cache_misses",
            "Prompts with images whose prefill was computed (and cached, if it fits).",
            cache.misses if cache is not None else 0,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class MetricsMiddleware:
    """Counts every HTTP response by route and status once it is sent (an exception that escapes the
    app, answered 500 by the error handler outside, counts as 500). Outermost, so the refusals of the
    checks inside it are counted too."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._paths: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            self.metrics.count_response(self._route(scope), status)

    def _route(self, scope: Scope) -> str:
        """The request's path if a route serves it (all routes here are fixed paths), else one label
        for all others: a client trying random paths cannot grow the label set."""
        if self._paths is None:
            self._paths = frozenset(getattr(route, "path", "") for route in scope["app"].routes)
        path = scope["path"]
        return path if path in self._paths else UNMATCHED_ROUTE
