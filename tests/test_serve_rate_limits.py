"""Per-client rate limits (--rate-limit-rpm, --rate-limit-tpm): a client over a limit gets 429 with
Retry-After and a message naming the limit; other clients are unaffected. In-process apps (create_app
+ TestClient); a TestClient's `client` is the address the server sees."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from support import API_KEY, GREEDY
from typer.testing import CliRunner

from glmlab.cli import app as cli
from glmlab.config import InvalidConfig
from glmlab.serve import ServerSettings, create_app
from glmlab.serve.errors import APIError
from glmlab.serve.rate_limits import RateLimits

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOCAL = "http://localhost"
CHAT = "/v1/chat/completions"
HI = {"messages": [{"role": "user", "content": "Hi"}], **GREEDY}
BAD = {"messages": "Hi"}  # a 400 after admission: counts as a request, costs no model time
FIRST, SECOND = ("10.0.0.1", 40000), ("10.0.0.2", 40000)


def clients(served_vlm, **settings) -> tuple[TestClient, TestClient]:
    """Two clients of one new app, from two addresses."""
    app = create_app(served_vlm, ServerSettings(model="tiny", **settings))
    return tuple(
        TestClient(app, base_url=LOCAL, raise_server_exceptions=False, client=address)
        for address in (FIRST, SECOND)
    )


def refusal(response) -> tuple[str, int]:
    """The 429's message and Retry-After, checked against each other and OpenAI's error shape."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    retry = int(response.headers["retry-after"])
    assert 1 <= retry <= 60
    assert error["message"].endswith(f"Retry in {retry} s (Retry-After).")
    return error["message"], retry


def test_the_request_after_the_rpm_is_refused_for_that_client_only(served_vlm):
    first, second = clients(served_vlm, rate_limit_rpm=2)
    assert first.post(CHAT, json=HI).status_code == 200
    assert first.post(CHAT, json=BAD).status_code == 400
    message, retry = refusal(first.post(CHAT, json=HI))
    assert message == (
        "rate limit reached on requests per minute (RPM): limit 2, used 2 in the last 60 s by this client "
        f"address (the server's --rate-limit-rpm). Retry in {retry} s (Retry-After)."
    )
    assert second.post(CHAT, json=HI).status_code == 200  # another address has its own window
    assert first.get("/v1/models").status_code == 200  # only generation is limited


def test_with_an_api_key_the_key_is_the_client_and_a_wrong_key_uses_none_of_its_requests(served_vlm):
    first, second = clients(served_vlm, rate_limit_rpm=1, api_key=API_KEY)
    for _ in range(3):
        assert first.post(CHAT, json=BAD, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert first.post(CHAT, json=BAD, headers=AUTH).status_code == 400
    message, _ = refusal(second.post(CHAT, json=BAD, headers=AUTH))  # same key, another address
    assert "limit 1, used 1 in the last 60 s by this API key" in message
    assert API_KEY not in message


def test_tokens_charged_past_the_tpm_refuse_the_next_request_until_they_leave_the_window(served_vlm):
    first, second = clients(served_vlm, rate_limit_tpm=100)
    limits = first.app.state.host.rate_limits
    key = limits.client_key({"type": "http", "client": FIRST, "headers": []})
    assert key == "address:10.0.0.1"
    limits.charge_tokens(key, 99)
    assert first.post(CHAT, json=BAD).status_code == 400  # 99 of 100: admitted
    limits.charge_tokens(key, 250)  # past the limit: recorded whole
    assert limits.tokens_used(key) == 349
    message, retry = refusal(first.post(CHAT, json=HI))
    assert message == (
        "rate limit reached on tokens per minute (TPM): limit 100, used 349 in the last 60 s by this "
        f"client address (the server's --rate-limit-tpm). Retry in {retry} s (Retry-After)."
    )
    assert second.post(CHAT, json=BAD).status_code == 400  # another address is unaffected
    assert limits.tokens_used("address:10.0.0.2") == 0


def test_a_request_refused_for_tokens_does_not_use_up_a_request():
    limits = RateLimits(rpm=1, tpm=10)
    limits.charge_tokens("address:a", 10)
    for _ in range(3):
        with pytest.raises(APIError, match=r"tokens per minute \(TPM\): limit 10, used 10") as refused:
            limits.admit("address:a")
        assert refused.value.status == 429
    assert limits.tokens_used("address:a") == 10
    limits.admit("address:b")  # the RPM's one request, for another client
    with pytest.raises(APIError, match=r"requests per minute \(RPM\): limit 1, used 1"):
        limits.admit("address:b")


def test_limits_off_by_default_admit_everything_and_charge_nothing(served_vlm):
    limits = RateLimits()
    assert not limits.enabled
    for _ in range(100):
        limits.admit("address:a")
    limits.charge_tokens("address:a", 10**6)
    assert limits.tokens_used("address:a") == 0
    first, _ = clients(served_vlm)
    assert not first.app.state.host.rate_limits.enabled


def test_the_limits_are_checked_settings_and_cli_flags():
    with pytest.raises(InvalidConfig, match=re.escape("rate_limit_rpm=0: must be at least 1 (or unset)")):
        ServerSettings(model="tiny", rate_limit_rpm=0)
    with pytest.raises(InvalidConfig, match=re.escape("rate_limit_tpm=1.5: must be at least 1 (or unset)")):
        ServerSettings(model="tiny", rate_limit_tpm=1.5)
    refused = CliRunner().invoke(cli, ["serve", "--model", "tiny", "--rate-limit-tpm", "0", "--dry-run"])
    assert refused.exit_code == 2 and "ServerSettings.rate_limit_tpm=0" in refused.output
    flags = ["serve", "--model", "tiny", "--rate-limit-rpm", "30", "--rate-limit-tpm", "20000", "--dry-run"]
    accepted = CliRunner().invoke(cli, flags)
    assert accepted.exit_code == 0, accepted.output


def test_a_finished_answer_charges_its_prompt_and_completion_tokens(served_vlm):
    first, second = clients(served_vlm, rate_limit_tpm=10)
    limits = first.app.state.host.rate_limits
    used = first.post(CHAT, json=HI).json()["usage"]["total_tokens"]
    assert used > 10 and limits.tokens_used("address:10.0.0.1") == used
    message, _ = refusal(first.post(CHAT, json=HI))
    assert f"limit 10, used {used} in the last 60 s" in message
    streamed = {**HI, "stream": True, "stream_options": {"include_usage": True}}
    with second.stream("POST", CHAT, json=streamed) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: {")]
    usage = json.loads(events[-1].removeprefix("data: "))["usage"]
    assert limits.tokens_used("address:10.0.0.2") == usage["total_tokens"] == used
