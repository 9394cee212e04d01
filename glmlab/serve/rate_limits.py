"""Per-client rate limits: requests per minute (RPM) and tokens per minute (TPM), over moving 60 s windows.

A client is its API key when the server has one (all users of one key share its limits), else the
address it connects from (behind a reverse proxy on loopback, uvicorn takes it from X-Forwarded-For;
otherwise everyone behind one proxy or NAT shares one address). Requests are checked at admission,
before the body is read or an image decoded (`RateLimitMiddleware`); a request's tokens (prompt +
completion) are charged when it finishes (`RateLimits.charge_tokens`, called by the scheduler), and
while the last 60 s hold `tpm` or more a new request is refused. Refusals are 429 with Retry-After and
a message naming the limit, in OpenAI's error shape.

The windows are the `limits` package's moving windows in its MemoryStorage (one process, no store to
run). Its moving-window `hit` refuses, and records nothing, when a cost does not fit the room left;
tokens already spent must be recorded in full (or a client could use any number of tokens per
request while each charge fills only the room left), so tokens go into a window whose item has no
practical cap (`UNCAPPED`) and admission compares the window's count with the TPM. The storage keeps
one list slot per token in a window (8 bytes), bounded by what the server generates in a minute.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from glmlab.serve.errors import APIError

UNCAPPED = 2**62  # the token window's item: no charge is ever refused (see the module docstring)
LIMITED_ROUTES = frozenset({"/v1/chat/completions"})  # the routes that make the model work


@dataclass
class RateLimits:
    """One server's limits (None: that limit is off) and the windows of every client it has seen."""

    rpm: int | None = None
    tpm: int | None = None
    by_api_key: bool = False  # key clients by their API key (the server has one), else by address

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if self.enabled else None
        self._requests = RateLimitItemPerMinute(self.rpm) if self.rpm is not None else None
        self._tokens = RateLimitItemPerMinute(UNCAPPED)

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def client_key(self, scope: Scope) -> str:
        """The client a request counts against: a digest of its API key (never the key itself, which
        would then sit in memory beside every window), or its address."""
        if self.by_api_key:
            token = Headers(scope=scope).get("authorization", "").partition(" ")[2].strip()
            return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        client = scope.get("client")
        return "address:" + (client[0] if client else "unknown")

    def admit(self, client: str) -> None:
        """Count one request of `client`, or raise APIError 429 when it is over a limit (a request
        refused for its tokens does not use up one of its requests)."""
        if self._limiter is None:
            return
        if self.tpm is not None and (used := self.tokens_used(client)) >= self.tpm:
            raise self._refusal(client, self._tokens, "tokens per minute (TPM)", self.tpm, used)
        if self._requests is not None and not self._limiter.hit(self._requests, client):
            rpm = self._requests.amount
            raise self._refusal(client, self._requests, "requests per minute (RPM)", rpm, rpm)

    def charge_tokens(self, client: str, tokens: int) -> None:
        """Record the tokens (prompt + completion) a finished request of `client` used: all of them,
        also past the TPM (the client then waits until they leave the window). A no-op with TPM off."""
        if self._limiter is None or self.tpm is None or tokens <= 0:
            return
        self._limiter.hit(self._tokens, client, cost=tokens)

    def tokens_used(self, client: str) -> int:
        """Tokens `client` was charged in the last 60 s."""
        if self._limiter is None:
            return 0
        return UNCAPPED - self._limiter.get_window_stats(self._tokens, client).remaining

    def _refusal(
        self, client: str, item: RateLimitItemPerMinute, limit: str, amount: int, used: int
    ) -> APIError:
        """429 for `client` over `limit`. Retry-After is when the oldest entries of its window leave
        it: the earliest moment it can have room (a client far over the TPM may be told again then)."""
        assert self._limiter is not None
        reset = self._limiter.get_window_stats(item, client).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        who = "this API key" if client.startswith("key:") else "this client address"
        flag = "--rate-limit-tpm" if item is self._tokens else "--rate-limit-rpm"
        return APIError(
            429,
            f"rate limit reached on {limit}: limit {amount:,}, used {used:,} "
            f"in the last 60 s by {who} (the server's {flag}). Retry in {retry} s (Retry-After).",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry)},
        )


class RateLimitMiddleware:
    """Admits each request to a LIMITED_ROUTES route against its client's limits before its body is
    read (inside the Host and API-key checks: a refused key never uses a client's requests)."""

    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in LIMITED_ROUTES:
            try:
                self.limits.admit(self.limits.client_key(scope))
            except APIError as error:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
