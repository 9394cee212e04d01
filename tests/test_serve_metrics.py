"""GET /metrics: Prometheus' text format, parsed back with prometheus_client's own parser. Each app has
its own registry, so every test builds a fresh app and knows its exact counts."""

from __future__ import annotations

import time

import anyio
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support import API_KEY, GREEDY, image_message, scene

from glmlab.errors import ConfigError
from glmlab.rows import Row
from glmlab.serve import ServerSettings, create_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOCAL = "http://localhost"
CHAT = "/v1/chat/completions"
HI = {"messages": [{"role": "user", "content": "Hi"}], **GREEDY}


def client_of(served_vlm, **settings) -> TestClient:
    app = create_app(served_vlm, ServerSettings(model="tiny", **settings))
    return TestClient(app, base_url=LOCAL, raise_server_exceptions=False)


def scrape(client: TestClient, **kwargs) -> dict[str, float]:
    """Every sample of GET /metrics by name and labels, e.g. 'glmlab_requests_total{route=/health,status=200}'."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def requests_by_status(samples: dict[str, float]) -> dict[str, float]:
    prefix = "glmlab_requests_total{"
    return {
        name.removeprefix(prefix)[:-1]: value for name, value in samples.items() if name.startswith(prefix)
    }


def test_every_response_is_counted_by_route_and_status_the_refusals_before_a_route_included(served_vlm):
    client = client_of(served_vlm, api_key=API_KEY, rate_limit_rpm=2)
    assert client.post(CHAT, json=HI, headers=AUTH).status_code == 200
    assert client.post(CHAT, json={"messages": "Hi"}, headers=AUTH).status_code == 400
    assert client.post(CHAT, json=HI).status_code == 401  # no key: refused before the rate limit
    assert client.post(CHAT, json=HI, headers=AUTH).status_code == 429  # the third of 2 per minute
    assert client.get("/no/such/path", headers=AUTH).status_code == 404
    assert client.get("/v1/models", headers={**AUTH, "host": "attacker.example"}).status_code == 400
    counts = requests_by_status(scrape(client))  # open without the key, like vLLM's /metrics
    assert counts == {
        f"route={CHAT},status=200": 1,
        f"route={CHAT},status=400": 1,
        f"route={CHAT},status=401": 1,
        f"route={CHAT},status=429": 1,
        "route=unmatched,status=404": 1,  # any path no route serves: one label value
        "route=/v1/models,status=400": 1,
    }
    assert requests_by_status(scrape(client))["route=/metrics,status=200"] == 1  # the first scrape


def test_queue_gauges_follow_a_ticket_through_the_host(served_vlm):
    client = client_of(served_vlm)
    host = client.app.state.host

    def gauges() -> tuple[float, float, float]:
        samples = scrape(client)
        return (
            samples["glmlab_requests_queued"],
            samples["glmlab_requests_running"],
            samples["glmlab_requests_sending"],
        )

    assert gauges() == (0, 0, 0)
    ticket = host.admit()
    assert gauges() == (1, 0, 0)
    request = served_vlm.open_request([{"role": "user", "content": "hi"}], temperature=0, max_new_tokens=2)
    rows = [Row.open(request, served_vlm.text_clock())]
    anyio.run(ticket.start_generation, rows, time.monotonic() + 60)  # asyncio's clock is monotonic
    assert gauges() == (0, 1, 0)
    anyio.run(ticket.finish_generation)
    assert gauges() == (0, 0, 1)
    ticket.close()
    assert gauges() == (0, 0, 0)


def test_adapters_loaded_counts_an_adapter_loaded_and_unloaded_at_run_time(served_vlm, adapters):
    client = client_of(
        served_vlm, adapters={"alpha": str(adapters["alpha"])}, adapter_roots=[str(adapters["gamma"].parent)]
    )
    assert scrape(client)["glmlab_adapters_loaded"] == 1
    loaded = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "gamma", "lora_path": str(adapters["gamma"])}
    )
    assert loaded.status_code == 200, loaded.text
    assert scrape(client)["glmlab_adapters_loaded"] == 2
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "gamma"}).status_code == 200
    assert scrape(client)["glmlab_adapters_loaded"] == 1


def test_prefix_cache_hits_and_misses_are_the_models_own_counters(served_vlm):
    client = client_of(served_vlm)
    before = scrape(client)
    question = {"messages": image_message(scene(96, 96, "green"), "What colour?"), **GREEDY}
    for _ in range(2):  # the same image twice: computed once, then reused
        assert client.post(CHAT, json=question).status_code == 200
    after = scrape(client)
    assert after["glmlab_prefix_cache_misses_total"] - before["glmlab_prefix_cache_misses_total"] == 1
    assert after["glmlab_prefix_cache_hits_total"] - before["glmlab_prefix_cache_hits_total"] == 1
    assert after["glmlab_prefix_cache_hits_total"] == served_vlm.prefix_cache.hits
    assert after["glmlab_prefix_cache_misses_total"] == served_vlm.prefix_cache.misses


def test_the_schedulers_reports_fill_the_histograms_exactly(served_vlm):
    client = client_of(served_vlm)
    metrics = client.app.state.host.metrics
    metrics.observe_batch(3)
    metrics.observe_batch(1)
    metrics.observe_answer(0.5, 2.0, 31)  # 30 tokens after the first in 1.5 s: 20 tokens/s
    metrics.observe_answer(None, 1.0, 0)  # no token: a latency, no TTFT, no speed
    metrics.observe_answer(0.2, 0.3, 1)  # one token: no speed
    samples = scrape(client)
    assert samples["glmlab_batch_size_count"] == 2 and samples["glmlab_batch_size_sum"] == 4
    assert (
        samples["glmlab_batch_size_bucket{le=2.0}"] == 1 and samples["glmlab_batch_size_bucket{le=4.0}"] == 2
    )
    assert samples["glmlab_time_to_first_token_seconds_count"] == 2
    assert samples["glmlab_time_to_first_token_seconds_sum"] == pytest.approx(0.7)
    assert samples["glmlab_request_latency_seconds_count"] == 3
    assert samples["glmlab_request_latency_seconds_sum"] == pytest.approx(3.3)
    assert samples["glmlab_request_latency_seconds_bucket{le=1.0}"] == 2
    assert samples["glmlab_tokens_per_second_count"] == 1
    assert samples["glmlab_tokens_per_second_sum"] == pytest.approx(20.0)
    assert samples["glmlab_generated_tokens_total"] == 32


def test_metrics_require_the_key_only_when_told(served_vlm):
    client = client_of(served_vlm, api_key=API_KEY, metrics_require_key=True)
    assert client.get("/metrics").status_code == 401
    assert scrape(client, headers=AUTH)["glmlab_requests_total{route=/metrics,status=401}"] == 1
    document = client.get("/openapi.json", headers=AUTH).json()
    assert set(document["paths"]["/metrics"]["get"]["responses"]) == {"200", "401", "500"}
    assert client.get("/health").status_code == 200  # /health stays open
    with pytest.raises(ConfigError, match="metrics_require_key=True: only has a meaning with an api_key"):
        ServerSettings(model="tiny", metrics_require_key=True)


def test_answers_streamed_or_not_fill_the_histograms_from_their_arrival(served_vlm):
    client = client_of(served_vlm)
    assert client.post(CHAT, json=HI).json()["usage"]["completion_tokens"] == 6
    with client.stream("POST", CHAT, json={**HI, "stream": True}) as response:
        assert "data: [DONE]" in "".join(response.iter_text())
    samples = scrape(client)
    assert samples["glmlab_batch_size_count"] == 2 and samples["glmlab_batch_size_sum"] == 2  # one at a time
    assert samples["glmlab_request_latency_seconds_count"] == 2
    assert samples["glmlab_time_to_first_token_seconds_count"] == 2
    ttft, latency = (
        samples["glmlab_time_to_first_token_seconds_sum"],
        samples["glmlab_request_latency_seconds_sum"],
    )
    assert 0 < ttft < latency
    assert samples["glmlab_tokens_per_second_count"] == 2
    assert samples["glmlab_generated_tokens_total"] == 12
