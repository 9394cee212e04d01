"""Benchmark 4, server: median latency through `glmlab serve` on loopback vs in-process. Target <= 1.10.

The same loaded model answers both ways (the server runs in a background thread of this process);
the served path adds the client's image encoding, HTTP, JSON and the server's request handling. The
prefix cache is disabled for both, so each request pays for its full prefill.
"""

from __future__ import annotations

from common import alternate, bench_image, load_bench_vlm, report, summarise

from glmlab.prefix_cache import PrefixCache

QUESTION = "Describe the picture in one sentence."
MAX_NEW_TOKENS = 16


def main() -> None:
    import glmlab
    import glmlab.serve

    vlm = load_bench_vlm()
    vlm.prefix_cache = PrefixCache(max_bytes=0)
    image = bench_image(seed=5)
    server = glmlab.serve.start(vlm)
    client = glmlab.Client(server.url, retries=0)
    settings = {"temperature": 0, "max_new_tokens": MAX_NEW_TOKENS}
    try:
        served_text = client.ask(image, QUESTION, **settings).raw
        assert served_text == vlm.ask(image, QUESTION, **settings).raw, "served and in-process answers differ"
        times = alternate(
            {
                "in-process": lambda: vlm.ask(image, QUESTION, **settings),
                "glmlab serve (loopback)": lambda: client.ask(image, QUESTION, **settings),
            },
            repeats=6,
        )
    finally:
        server.stop()
    table = summarise(times)
    median = dict(zip(table["run"], table["median_s"], strict=True))
    report(
        "server",
        table,
        {"server_latency": median["glmlab serve (loopback)"] / median["in-process"]},
        {"settings": {"max_new_tokens": MAX_NEW_TOKENS, "image": "448x448"}},
    )


if __name__ == "__main__":
    main()
