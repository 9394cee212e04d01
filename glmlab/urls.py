"""Fetching an http(s) image URL that someone else named, and telling public addresses from the rest.

A server that fetches the URLs its clients send must not become their way into its own network
(server-side request forgery). `fetch_url` therefore:

- resolves the host and refuses it when any of its addresses is loopback, private, link-local,
  reserved, multicast, unspecified or a cloud metadata address (unless `allow_private=True`, for
  intranets and tests; metadata addresses stay refused even then);
- follows redirects by hand (at most `MAX_REDIRECTS`) and checks every hop the same way;
- connects to the address it checked, not to a second DNS answer (no rebinding between check and
  connect), keeping the URL's host name for TLS (SNI and certificate checks) and the Host header;
- ignores proxy settings from the environment (`trust_env=False`), asks for an unencoded body,
  stops reading at `max_bytes` and gives the whole fetch one deadline (DNS, connect, TLS, every read);
- words every failure after the address check the same way, so the answers cannot tell an open
  port from a closed one or a slow host from a missing one (the reason goes to the log).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpcore  # httpx's connection layer, where the pinning and the deadline hook in
import httpx

from glmlab.errors import InputError

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Instance metadata services (AWS/GCP/Azure/OCI, AWS over IPv6, Alibaba Cloud): never fetched.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text) for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# getaddrinfo has no timeout of its own: it runs here so the fetch's deadline also bounds DNS.
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="glmlab-dns")


def address_refusal(address: str | IPAddress) -> str | None:
    """Why a server must not connect to `address` ("loopback", "private", ...), or None if it is public.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, NAT64) are judged by that address too.
    """
    ip = ipaddress.ip_address(address.split("%")[0] if isinstance(address, str) else address)
    for candidate in (*_embedded_ipv4(ip), ip):
        if candidate in METADATA_ADDRESSES:
            return "cloud metadata"
        for kind in ("loopback", "unspecified", "link_local", "multicast", "reserved"):
            if getattr(candidate, f"is_{kind}"):
                return kind.replace("_", "-")
        if candidate.is_private or not candidate.is_global:
            return "private"
    return None


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    if ip.version == 4:
        return []
    embedded = [ip.ipv4_mapped, ip.sixtofour]
    if ip in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [address for address in embedded if address is not None]


def is_loopback_host(host: str | None) -> bool:
    """'localhost' or a loopback address (IPv6 with or without brackets)."""
    host = (host or "").strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class _Unfetchable(Exception):
    """A failure the caller only learns as "could not fetch"; its text goes to the log."""


def fetch_url(url: str, *, max_bytes: int, timeout_s: float, allow_private: bool = False) -> bytes:
    """The body of `url` (http or https), within `max_bytes` and `timeout_s` in all.

    Raises InputError: naming the refused kind of address when the URL (or a redirect) leads to a
    non-public one, else one generic "could not fetch image URL" for every network or HTTP failure.
    """
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as error:
        raise InputError(f"{url[:200]}: not a valid URL ({error}).") from None
    deadline = time.monotonic() + timeout_s
    backend = _PinnedBackend(deadline)
    try:
        with httpx.Client(
            transport=_PinnedTransport(backend),
            trust_env=False,
            follow_redirects=False,
            timeout=timeout_s,
            headers={"Accept-Encoding": "identity", "User-Agent": "glmlab"},
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                if current.scheme not in ("http", "https") or not current.raw_host:
                    raise _Unfetchable(f"unsupported URL {current}")
                host = current.raw_host.decode("ascii")
                port = current.port or (443 if current.scheme == "https" else 80)
                backend.pins[host] = _checked_addresses(url, host, port, allow_private, deadline)
                with client.stream("GET", current) as response:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_STATUSES and location:
                        current = current.join(location)
                        continue
                    if response.status_code != 200:
                        raise _Unfetchable(f"HTTP {response.status_code} from {current}")
                    return _read_capped(response, max_bytes)
            raise _Unfetchable(f"more than {MAX_REDIRECTS} redirects")
    except InputError:
        raise
    except (_Unfetchable, httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as error:
        logger.info("could not fetch image URL %s: %s: %s", url[:200], type(error).__name__, error)
        raise InputError(
            f"{url[:200]}: could not fetch image URL (no answer, an HTTP error, over {max_bytes:,} bytes "
            f"or over {timeout_s:g} s); download it and send the image as a data URL."
        ) from None


def _checked_addresses(url: str, host: str, port: int, allow_private: bool, deadline: float) -> list[str]:
    """The host's addresses, all of them allowed, or InputError naming what they are."""
    addresses = _resolve(host, port, deadline)
    for address in addresses:
        refusal = address_refusal(address)
        if refusal and (refusal == "cloud metadata" or not allow_private):
            opt_in = (
                ""
                if refusal == "cloud metadata"
                else " (allow_private_urls=True, or `glmlab serve --allow-private-urls`, allows them)"
            )
            subject = f"{host} is" if address == host else f"{host} resolves to"
            raise InputError(
                f"{url[:200]}: refused: {subject} a {refusal} address; image URLs are fetched from "
                f"public addresses only{opt_in}."
            )
    return addresses


def _resolve(host: str, port: int, deadline: float) -> list[str]:
    try:
        ipaddress.ip_address(host.split("%")[0])
        return [host]  # a literal: no lookup
    except ValueError:
        pass
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(deadline - time.monotonic(), 0.001))
    except FutureTimeout:
        raise _Unfetchable(f"resolving {host} took too long") from None
    except socket.gaierror as error:
        raise _Unfetchable(f"cannot resolve {host}: {error}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise _Unfetchable(f"{host} has no address")
    return addresses


def _read_capped(response: Any, max_bytes: int) -> bytes:
    """The raw body (never decompressed here: no inflation bombs), at most `max_bytes`."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _Unfetchable(f"Content-Length {declared} is over {max_bytes}")
    chunks, size = [], 0
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise _Unfetchable(f"the body is over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# ---- connecting to the checked address, within the deadline --------------------------------------
# httpcore, under httpx, connects through a pluggable "network backend". Ours connects only to the
# addresses pinned for a host (after the check above) and clips every connect, TLS handshake, read
# and write to the time left, which httpx's own timeouts (per operation, not per fetch) cannot do.


def _time_left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the fetch's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self.stream, self.deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, _time_left(self.deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, _time_left(self.deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None):
        left = _time_left(self.deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, left), self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects a host name only to the addresses pinned for it (tried in order), never by a new lookup."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.pins: dict[str, list[str]] = {}
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        if host not in self.pins:
            raise httpcore.ConnectError(f"{host} was not checked")
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in self.pins[host]:
            left = _time_left(self.deadline, timeout, httpcore.ConnectTimeout)
            try:
                stream = self.inner.connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                error = failed
                continue
            return _DeadlineStream(stream, self.deadline)
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None):
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over `_PinnedBackend`. httpx has no public way to pass httpcore a network
    backend, so the connection pool it builds is replaced by one that uses ours (tested: a host name
    no DNS knows is fetched only through its pin)."""

    def __init__(self, backend: _PinnedBackend) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=backend,
            max_connections=1,
        )
