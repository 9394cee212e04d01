"""glmlab.Client over HTTPS (a throwaway CA made here) and its failover across real local servers:
one stopped, one answering 503 (still loading), one slow (its first token comes after the timeout)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from glmlab.client import Client, Endpoint, ServerError
from glmlab.errors import ConfigError
from glmlab.serve import ServerSettings, start
from glmlab.serve.app import create_app
from glmlab.serve.runner import ServerThread

GREEDY = {"temperature": 0, "max_new_tokens": 4}


@pytest.fixture(scope="module")
def answering(served_vlm):
    running = start(served_vlm, ServerSettings(model="tiny", port=0))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def loading():
    """A real server whose model never finishes loading: every chat answers 503 with Retry-After 2."""
    release = threading.Event()

    def loader(*args, **kwargs):
        release.wait()
        raise RuntimeError("stopped by the test")

    running = ServerThread(create_app(ServerSettings(model="tiny", port=0), loader=loader)).start()
    yield running
    release.set()
    running.stop()


@pytest.fixture(scope="module")
def slow(tiny_path):
    """A real server on its own tiny model whose every forward pass first sleeps 1.5 s."""
    import glmlab

    model = glmlab.load(str(tiny_path))
    model.model.register_forward_pre_hook(lambda *_: time.sleep(1.5))
    running = start(model, ServerSettings(model="tiny", port=0))
    yield running
    running.stop()


@pytest.fixture
def stopped_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- HTTPS ----------------------------------------------------------------------------------------


def test_https_server_answers_a_client_that_trusts_its_ca(https_server, tls, served_vlm):
    assert https_server.url.startswith("https://127.0.0.1:")
    answer = Client(https_server.url, ca_bundle=tls / "ca.pem", retries=0).ask(None, "Hi", **GREEDY)
    assert answer.text == served_vlm.ask(None, "Hi", adapter=None, **GREEDY).text
    assert answer.endpoint == https_server.url


def test_client_verifies_certificates_by_default(https_server):
    with pytest.raises(ServerError, match=r"TLS failed .*CERTIFICATE_VERIFY_FAILED.*ca_bundle="):
        Client(https_server.url, retries=0).ask(None, "Hi", adapter="tiny", **GREEDY)
    assert Client(https_server.url, verify=False, retries=0).health()["status"] == "ok"


def test_tls_settings_need_both_files_and_existing_ones(tls):
    with pytest.raises(ConfigError, match="ssl_keyfile is unset: HTTPS needs both"):
        ServerSettings(model="tiny", ssl_certfile=str(tls / "cert.pem"))
    with pytest.raises(ConfigError, match=r"ssl_keyfile='nope\.pem': no such file"):
        ServerSettings(model="tiny", ssl_certfile=str(tls / "cert.pem"), ssl_keyfile="nope.pem")
    with pytest.raises(Exception, match="no such file; give a PEM file of CA certificates"):
        Client("https://127.0.0.1:1/v1", ca_bundle=tls / "missing.pem")


# ---- failover -------------------------------------------------------------------------------------


def test_a_stopped_server_fails_over_at_once(stopped_url, answering, caplog):
    client = Client(stopped_url, fallbacks=[answering.url], retries=2, timeout=5)
    began = time.monotonic()
    answer = client.ask(None, "Hi", **GREEDY)
    assert answer.endpoint == answering.url and answer.model == "tiny"
    assert time.monotonic() - began < 3  # no backoff on a server that cannot be reached
    assert f"{stopped_url} APIConnectionError; using the fallback 'tiny' at {answering.url}" in caplog.text


def test_a_503_is_retried_after_its_retry_after_then_failed_over(loading, answering):
    client = Client(loading.url, fallbacks=[answering.url], retries=1, max_retry_after=5)
    began = time.monotonic()
    answer = client.ask(None, "Hi", adapter="tiny", **GREEDY)
    assert answer.endpoint == answering.url
    assert 2 <= time.monotonic() - began < 10  # one Retry-After (2 s) waited on the loading server
    quick = Client(loading.url, fallbacks=[answering.url], retries=1, max_retry_after=1)
    began = time.monotonic()
    assert quick.ask(None, "Hi", adapter="tiny", **GREEDY).endpoint == answering.url
    assert time.monotonic() - began < 2  # a Retry-After above the cap is not waited for


def test_every_endpoint_failing_names_each(stopped_url, loading):
    client = Client(stopped_url, fallbacks=[Endpoint(loading.url, model="tiny")], retries=0)
    with pytest.raises(
        ServerError, match="every endpoint failed: .*APIConnectionError; .*answered 503"
    ) as caught:
        client.ask(None, "Hi", **GREEDY)
    assert caught.value.status == 503 and caught.value.url == loading.url


def test_a_slow_server_times_out_before_its_first_token_and_fails_over(slow, answering):
    client = Client(slow.url, fallbacks=[answering.url], retries=0, timeout=0.5)
    answer = client.ask(None, "Hi", adapter="tiny", **GREEDY)
    assert answer.endpoint == answering.url and answer.text


def test_the_deadline_bounds_the_whole_call(slow, loading):
    client = Client(loading.url, fallbacks=[slow.url], retries=5, timeout=30, deadline=3)
    began = time.monotonic()
    with pytest.raises(ServerError, match=r"no answer within the call's deadline of 3 s \(.*answered 503"):
        client.ask(None, "Hi", adapter="tiny", max_new_tokens=50)
    assert time.monotonic() - began < 6
