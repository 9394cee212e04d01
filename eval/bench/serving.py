"""Benchmark 6, serving: `glmlab serve` batching across requests vs the same server with batching off.

16 clients at once on loopback, their requests spread over the base model and two adapters, each
about its own 448x448 picture, 64-token greedy answers, streamed (time to first token is the first
piece's arrival). Both servers serve the same loaded model (so only one runs at a time): one with
--max-batch-size 16, one with --max-batch-size 1 (one request at a time, the server before batching).
The prefix cache is off: distinct users send distinct pictures. Rounds alternate, after a warm-up.
Prints the table (throughput, p50/p95 TTFT and latency), checks that both servers gave every request
the same answer, and ends with `RATIO serving_throughput=<x>` (target >= 3) and
`RATIO serving_single_client_latency=<x>` (a lone user, batching on / off; target <= 1.10).

Then a class asking about one picture: the 16 clients send the same 448x448 picture (each its own data
URL) with different questions to the base model, rounds alternating as above. The batching server
prefills the picture once per batch (rows about one image share it); the one-at-a-time server prefills it
for every request (its prefix cache is off too). Reported as `RATIO serving_one_picture_throughput`, no
target (`prefix_cache.py` measures the shared prefill alone, in one process).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from common import bench_image, load_bench_vlm, report

from glmlab.prefix_cache import PrefixCache

CLIENTS = 16
MAX_TOKENS = 64
ROUNDS = 2
SINGLE_REPEATS = 4
QUESTION = "Describe the picture in detail."
CLASS_PICTURE = 1234  # bench_image's seed for the picture the whole class asks about
CLASS_QUESTIONS = [
    "Describe the picture in detail.",
    "Which colours appear, and where?",
    "How many shapes are there?",
    "What is in the top left corner?",
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def one_request(client, model: str, seed: int, question: str = QUESTION) -> dict:
    """Stream one greedy answer about picture `seed`; its time to first piece, latency and text."""
    start = time.perf_counter()
    stream = client.stream(
        bench_image(seed), question, adapter=model, temperature=0, max_new_tokens=MAX_TOKENS
    )
    first = None
    for _ in stream:
        first = first or time.perf_counter()
    end = time.perf_counter()
    return {"ttft_s": (first or end) - start, "latency_s": end - start, "text": stream.answer.raw}


def load_round(client, models: list[str | None], one_picture: bool = False) -> tuple[float, list[dict]]:
    """All clients at once (a barrier), one request each; the wall time and each request's figures.
    one_picture: every client asks about the same picture, each its own question (a class)."""
    results: list[dict] = [{} for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS + 1)

    def work(index: int) -> None:
        barrier.wait()
        model = models[index % len(models)]
        if one_picture:
            question = CLASS_QUESTIONS[index % len(CLASS_QUESTIONS)]
            results[index] = one_request(client, model, CLASS_PICTURE, question)
        else:
            results[index] = one_request(client, model, seed=index)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, results


def main() -> None:
    import glmlab
    import glmlab.serve
    from glmlab.adapters import random_adapter
    from glmlab.serve import ServerSettings

    vlm = load_bench_vlm()
    vlm.prefix_cache = PrefixCache(max_bytes=0)
    folder = Path(tempfile.mkdtemp(prefix="glmlab-bench-serving-"))
    adapters = {
        name: str(random_adapter(vlm, folder / name, seed=seed))
        for seed, name in enumerate(("alpha", "beta"), 1)
    }
    servers, clients = {}, {}
    batch_sizes: dict[str, list[int]] = {}
    for name, batch in (("batching off", 1), ("batching on", CLIENTS)):
        settings = ServerSettings(
            model=vlm.source,
            adapters=adapters,
            max_batch_size=batch,
            max_concurrency=4 * CLIENTS,
            max_queue_wait_s=3600,
            timeout_s=3600,
        )
        servers[name] = glmlab.serve.start(vlm, settings, port=0)
        batcher = servers[name].app.state.host.batcher
        batcher.on_batch = lambda rows, seen=batch_sizes.setdefault(name, []): seen.append(len(rows))
        clients[name] = glmlab.Client(servers[name].url, retries=0, timeout=600)
    models = [None, "alpha", "beta"]
    try:
        for client in clients.values():  # warm-up: a request and a full load round each
            one_request(client, None, seed=99)
            load_round(client, models)
        walls: dict[str, list[float]] = {name: [] for name in clients}
        figures: dict[str, list[dict]] = {name: [] for name in clients}
        texts: dict[str, list[str]] = {}
        for _ in range(ROUNDS):
            for name, client in clients.items():
                wall, results = load_round(client, models)
                walls[name].append(wall)
                figures[name] += results
                texts.setdefault(name, [result["text"] for result in results])
        class_walls: dict[str, list[float]] = {name: [] for name in clients}
        class_texts: dict[str, list[str]] = {}
        for _ in range(ROUNDS):
            for name, client in clients.items():
                wall, results = load_round(client, [None], one_picture=True)
                class_walls[name].append(wall)
                class_texts.setdefault(name, [result["text"] for result in results])
        same = texts["batching on"] == texts["batching off"]
        same = same and class_texts["batching on"] == class_texts["batching off"]
        single = {name: [] for name in clients}
        for _ in range(SINGLE_REPEATS):
            for name, client in clients.items():
                single[name].append(one_request(client, "alpha", seed=7)["latency_s"])
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for name in clients:
        ttft = [result["ttft_s"] for result in figures[name]]
        latency = [result["latency_s"] for result in figures[name]]
        rows.append(
            {
                "server": name,
                "requests_per_s": CLIENTS * ROUNDS / sum(walls[name]),
                "ttft_p50_s": percentile(ttft, 0.5),
                "ttft_p95_s": percentile(ttft, 0.95),
                "latency_p50_s": percentile(latency, 0.5),
                "latency_p95_s": percentile(latency, 0.95),
                "one_client_latency_s": statistics.median(single[name]),
                "one_picture_requests_per_s": CLIENTS * ROUNDS / sum(class_walls[name]),
                "mean_batch_rows": statistics.fmean(batch_sizes[name]),
            }
        )
    table = pd.DataFrame(rows)
    print(f"answers identical with batching on and off: {same}")
    throughput = dict(zip(table["server"], table["requests_per_s"], strict=True))
    lone = dict(zip(table["server"], table["one_client_latency_s"], strict=True))
    one_picture = dict(zip(table["server"], table["one_picture_requests_per_s"], strict=True))
    report(
        "serving",
        table,
        {
            "serving_throughput": throughput["batching on"] / throughput["batching off"],
            "serving_single_client_latency": lone["batching on"] / lone["batching off"],
            "serving_one_picture_throughput": one_picture["batching on"] / one_picture["batching off"],
        },
        {
            "settings": {
                "clients": CLIENTS,
                "rounds": ROUNDS,
                "max_tokens": MAX_TOKENS,
                "image": "448x448",
                "models": ["base", "alpha", "beta"],
            },
            "answers_identical": same,
        },
    )


if __name__ == "__main__":
    main()
