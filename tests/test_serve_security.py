"""Secrets and addresses: API keys, the Host header check, JSON-only bodies, and image URL fetching.

URL fetches run against a web server on 127.0.0.1 (with `allow_private` where the fetch must reach
it); addresses that must never be contacted (metadata, other hosts) are only named in redirects and
resolver answers, and the tests check that no connection went to them.
"""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time

import httpcore
import pytest
from fastapi.testclient import TestClient
from support import API_KEY, data_url, scene
from typer.testing import CliRunner

from glmlab.cli import app as cli
from glmlab.errors import ConfigError, InputError
from glmlab.images import to_pil
from glmlab.serve import ServerSettings, create_app, start
from glmlab.urls import MAX_REDIRECTS, address_refusal, fetch_url

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOCAL = "http://localhost"
GENERIC = "could not fetch image URL"


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch):
    monkeypatch.delenv("GLMLAB_API_KEY", raising=False)


# ---- API keys and listening addresses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("two words", "holds spaces or non-ASCII"),
        ("clé-secrète", "holds spaces or non-ASCII"),
    ],
)
def test_an_empty_or_unsendable_api_key_is_refused(key, problem):
    with pytest.raises(ConfigError, match=f"ServerSettings.api_key {problem}"):
        ServerSettings(model="tiny", api_key=key)


def test_an_empty_key_from_the_environment_is_refused_and_named(monkeypatch):
    monkeypatch.setenv("GLMLAB_API_KEY", "")
    with pytest.raises(ConfigError, match=r"api_key \(from GLMLAB_API_KEY\) is empty"):
        ServerSettings(model="tiny")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_key(host):
    assert ServerSettings(model="tiny", host=host).api_key is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "gpu-box.lan"])
def test_listening_beyond_loopback_needs_a_key_or_an_explicit_no_auth(host, caplog):
    with pytest.raises(ConfigError, match=rf"host='{host}': listening beyond loopback needs an API key"):
        ServerSettings(model="tiny", host=host)
    assert ServerSettings(model="tiny", host=host, api_key=API_KEY).api_key == API_KEY
    assert "AUTHENTICATION IS OFF" not in caplog.text
    ServerSettings(model="tiny", host=host, no_auth=True)
    assert f"AUTHENTICATION IS OFF (--no-auth): anyone who can reach {host}:8080" in caplog.text
    with pytest.raises(ConfigError, match="no_auth=True and an api_key are both set"):
        ServerSettings(model="tiny", host=host, no_auth=True, api_key=API_KEY)


def test_the_cli_refuses_an_empty_key_and_an_open_address_without_no_auth():
    empty = CliRunner().invoke(cli, ["serve", "--model", "tiny", "--api-key", "", "--dry-run"])
    assert empty.exit_code == 2 and "ServerSettings.api_key is empty" in empty.output
    open_ = CliRunner().invoke(cli, ["serve", "--model", "tiny", "--host", "0.0.0.0", "--dry-run"])
    assert open_.exit_code == 2 and "pass --no-auth" in open_.output
    keyed = CliRunner().invoke(
        cli, ["serve", "--model", "tiny", "--host", "0.0.0.0", "--api-key", API_KEY, "--dry-run"]
    )
    assert keyed.exit_code == 0 and "http://0.0.0.0:8080/v1" in keyed.output
    unauthenticated = CliRunner().invoke(
        cli, ["serve", "--model", "tiny", "--host", "0.0.0.0", "--no-auth", "--dry-run"]
    )
    assert unauthenticated.exit_code == 0, unauthenticated.output


def test_start_checks_a_host_given_to_it_before_binding(served_vlm):
    with pytest.raises(ConfigError, match="host='0.0.0.0': listening beyond loopback needs an API key"):
        start(served_vlm, ServerSettings(model="tiny", port=0), host="0.0.0.0")


# ---- Host header (DNS rebinding) and JSON bodies ---------------------------------------------------


@pytest.fixture(scope="module")
def client(served_vlm):
    settings = ServerSettings(model="tiny", api_key=API_KEY, allowed_hosts=["GPU.lan", "*.corp.example"])
    with TestClient(
        create_app(served_vlm, settings), base_url=LOCAL, raise_server_exceptions=False, headers=AUTH
    ) as test_client:
        yield test_client


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
    return error["message"]


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "gpu.lan:8080", "a.corp.example"]
)
def test_loopback_names_and_allowed_hosts_are_answered(client, host):
    assert client.get("/v1/models", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "testserver",
        "attacker.example",
        "attacker.example:8080",
        "127.0.0.1.attacker.example",
        "corp.example",
        "[::1",
    ],
)
def test_any_other_host_header_is_400_before_any_route(client, host):
    for path in ("/health", "/v1/models"):
        message = error_of(client.get(path, headers={"host": host}), 400, "invalid_host")
        assert "--allowed-host" in message and "localhost, 127.0.0.1, [::1]" in message


def test_the_allowed_hosts_setting_is_checked_and_names_what_is_answered():
    for bad in ("gpu.lan:8080", "*evil", "a b", "http://gpu.lan"):
        with pytest.raises(ConfigError, match="allowed_hosts"):
            ServerSettings(model="tiny", allowed_hosts=[bad])
    assert ServerSettings(model="tiny", host="0.0.0.0", no_auth=True).trusted_hosts() == [
        "localhost",
        "127.0.0.1",
        "[::1]",
    ]
    listening = ServerSettings(model="tiny", host="fd00::5", api_key=API_KEY, allowed_hosts=["gpu.lan"])
    assert listening.trusted_hosts() == ["localhost", "127.0.0.1", "[::1]", "[fd00::5]", "gpu.lan"]


def test_allowed_host_star_turns_the_check_off(served_vlm):
    settings = ServerSettings(model="tiny", allowed_hosts=["*"])
    with TestClient(create_app(served_vlm, settings), raise_server_exceptions=False) as anyone:
        assert anyone.get("/v1/models", headers={"host": "behind.a.proxy"}).status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_post_without_a_json_content_type_is_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}'
    for path in ("/v1/chat/completions", "/v1/load_lora_adapter"):
        message = error_of(client.post(path, content=body, headers=headers), 415, "unsupported_media_type")
        assert "Content-Type: application/json" in message and path in message
    assert (
        client.post(
            "/v1/chat/completions", content=body, headers={**headers, **{"Authorization": ""}}
        ).status_code
        == 401
    )


def test_a_json_content_type_with_parameters_passes_the_floor(client):
    response = client.post(
        "/v1/chat/completions",
        content=b'{"messages": []}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    error_of(response, 400, "invalid_request")


# ---- image URLs ------------------------------------------------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    scene(48, 32, "blue").save(buffer, format="PNG")
    return buffer.getvalue()


class Web:
    """A web server on 127.0.0.1 whose routes misbehave in the ways a hostile image URL would."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        image = png_bytes()
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                web.hits.append(self.path)
                try:
                    web.route(self, image)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the fetcher hung up, as it should

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, handler, image: bytes) -> None:
        path = handler.path
        redirects = {
            "/to-image": "/image.png",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-metadata-v6": "http://[fd00:ec2::254]/latest/meta-data/",
            "/loop": "/loop",
            "/to-ftp": "ftp://127.0.0.1/image.png",
        }
        if path == "/image.png":
            self.send(handler, 200, image, {"Content-Type": "image/png"})
        elif path in redirects:
            self.send(handler, 302, b"", {"Location": redirects[path]})
        elif path == "/missing":
            self.send(handler, 404, b"not here", {})
        elif path == "/endless":  # no Content-Length: the body ends when the server closes
            handler.send_response(200)
            handler.send_header("Connection", "close")
            handler.end_headers()
            while True:
                handler.wfile.write(b"\0" * 65536)
        elif path == "/declares-a-gigabyte":
            handler.send_response(200)
            handler.send_header("Content-Length", str(10**9))
            handler.end_headers()
            time.sleep(5)
        elif path == "/drip":  # a byte every 50 ms: no single read ever times out
            handler.send_response(200)
            handler.send_header("Connection", "close")
            handler.end_headers()
            for _ in range(400):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(0.05)
        elif path == "/drip-headers":
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(400):
                handler.wfile.write(b"X")
                handler.wfile.flush()
                time.sleep(0.05)

    @staticmethod
    def send(handler, status: int, body: bytes, headers: dict[str, str]) -> None:
        handler.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def web():
    running = Web()
    yield running
    running.server.shutdown()


@pytest.fixture
def connections(monkeypatch):
    """Every address a fetch connects to."""
    seen: list[str] = []
    real = httpcore.SyncBackend.connect_tcp

    def connect(self, host, port, *args, **kwargs):
        seen.append(host)
        return real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    return seen


def fetch(url: str, **options) -> bytes:
    return fetch_url(url, **{"max_bytes": 1 << 20, "timeout_s": 5.0, "allow_private": True, **options})


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT
        ("fd12:3456::1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 around 10.0.0.1
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classifier(address, kind):
    assert address_refusal(address) == kind


def test_a_loopback_url_is_refused_without_the_opt_in_and_never_contacted(web, connections):
    for url in (web.url("/image.png"), web.url("/image.png").replace("127.0.0.1", "localhost")):
        with pytest.raises(
            InputError, match="(is|resolves to) a loopback address; image URLs are fetched from public"
        ) as error:
            to_pil(url, allow_urls=True)
        assert "allow_private_urls=True" in str(error.value)
    assert web.hits == [] and connections == []
    (image,) = to_pil(web.url("/image.png"), allow_urls=True, allow_private_urls=True)
    assert image.size == (48, 32) and image.getpixel((5, 5)) == scene(48, 32, "blue").getpixel((5, 5))


def test_redirects_are_followed_by_hand_and_each_hop_is_checked_before_connecting(web, connections):
    web.hits.clear()
    assert fetch(web.url("/to-image")) == png_bytes()
    assert web.hits == ["/to-image", "/image.png"]
    for path, address in (("/to-metadata", "169.254.169.254"), ("/to-metadata-v6", "fd00:ec2::254")):
        with pytest.raises(InputError, match=f"refused: {address} is a cloud metadata address"):
            fetch(web.url(path))  # refused even with allow_private
    assert set(connections) == {"127.0.0.1"}
    web.hits.clear()
    with pytest.raises(InputError, match=GENERIC):
        fetch(web.url("/loop"))
    assert web.hits == ["/loop"] * (MAX_REDIRECTS + 1)
    with pytest.raises(InputError, match=GENERIC):
        fetch(web.url("/to-ftp"))


def test_the_connection_goes_to_the_address_that_was_checked(web, monkeypatch):
    """DNS rebinding: the first answer is checked, a second one would point elsewhere; none is asked."""
    real = socket.getaddrinfo
    lookups = []

    def resolve(host, *args, **kwargs):
        if host == "images.test":
            lookups.append(host)
            host = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"  # nothing listens on .2
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    port = web.base.rsplit(":", 1)[1]
    assert fetch(f"http://images.test:{port}/image.png") == png_bytes()
    assert lookups == ["images.test"]


def test_the_body_is_capped_while_it_streams(web):
    for path in ("/endless", "/declares-a-gigabyte"):
        started = time.monotonic()
        with pytest.raises(InputError, match=GENERIC):
            fetch(web.url(path), max_bytes=1 << 20, timeout_s=20)
        assert time.monotonic() - started < 4  # stopped at the cap, long before the deadline


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_the_deadline_bounds_the_whole_fetch_not_each_read(web, path):
    started = time.monotonic()
    with pytest.raises(InputError, match=GENERIC):
        fetch(web.url(path), timeout_s=1.0)
    assert 0.9 < time.monotonic() - started < 2.0


def test_every_failure_after_the_check_reads_the_same(web):
    """A closed port, an HTTP error, a stalled body and an oversized one: one text (and no reason)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/image.png"
    texts = set()
    for url in (closed, web.url("/missing"), web.url("/drip"), web.url("/endless")):
        with pytest.raises(InputError) as error:
            fetch(url, timeout_s=1.0)
        texts.add(str(error.value).removeprefix(url))
    assert texts == {
        f": {GENERIC} (no answer, an HTTP error, over 1,048,576 bytes or over 1 s); download it and "
        "send the image as a data URL."
    }


def test_proxy_settings_in_the_environment_are_ignored(web, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch(web.url("/image.png")) == png_bytes()


def test_the_server_fetches_private_urls_only_when_told_to(served_vlm, web):
    web.hits.clear()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": web.url("/image.png")}},
                    {"type": "text", "text": "Colour?"},
                ],
            }
        ],
        "max_tokens": 2,
        "temperature": 0,
    }
    with pytest.raises(ConfigError, match="allow_private_urls=True: only has a meaning with allow_urls"):
        ServerSettings(model="tiny", allow_private_urls=True)
    refusing = create_app(served_vlm, ServerSettings(model="tiny", allow_urls=True))
    with TestClient(refusing, base_url=LOCAL, raise_server_exceptions=False) as test_client:
        message = error_of(test_client.post("/v1/chat/completions", json=body), 400, "InputError")
    assert "127.0.0.1 is a loopback address" in message and "--allow-private-urls" in message
    assert web.hits == []
    opted_in = create_app(served_vlm, ServerSettings(model="tiny", allow_urls=True, allow_private_urls=True))
    with TestClient(opted_in, base_url=LOCAL, raise_server_exceptions=False) as test_client:
        answer = test_client.post("/v1/chat/completions", json=body).json()
    messages = [{**body["messages"][0], "content": [body["messages"][0]["content"][1]]}]
    messages[0]["content"].insert(
        0, {"type": "image_url", "image_url": {"url": data_url(scene(48, 32, "blue"))}}
    )
    local = served_vlm.chat(messages, adapter=None, temperature=0, max_new_tokens=2)
    assert answer["choices"][0]["message"]["content"] == local.text
    assert web.hits == ["/image.png"]
