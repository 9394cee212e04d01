"""Benchmark 3, batching: 32 samples, `vlm.batch(batch_size=8)` vs a loop of `vlm.ask`. Target >= 3x.

Decode is memory-bound (each step reads every weight); a batch reads them once for 8 sequences.
"""

from __future__ import annotations

import time

import pandas as pd
from common import bench_image, load_bench_vlm, report, time_call

SAMPLES = 32
MAX_NEW_TOKENS = 16
QUESTIONS = [
    "What is in the picture?",
    "Which colours appear?",
    "How many shapes are there?",
    "Describe the layout of the shapes briefly.",
]


def main() -> None:
    vlm = load_bench_vlm()
    items = [(bench_image(seed=index), QUESTIONS[index % len(QUESTIONS)]) for index in range(SAMPLES)]
    settings = {"temperature": 0, "max_new_tokens": MAX_NEW_TOKENS}
    vlm.batch(items[:8], batch_size=8, **settings)  # warm-up
    vlm.ask(*items[0], cache=False, **settings)
    rows = []
    for _ in range(2):  # alternate
        loop_s = time_call(
            lambda: [vlm.ask(image, question, cache=False, **settings) for image, question in items]
        )
        start = time.perf_counter()
        answers = vlm.batch(items, batch_size=8, **settings)
        batch_s = time.perf_counter() - start
        tokens = sum(answer.usage.completion_tokens for answer in answers)
        rows += [
            {"run": "loop of ask", "seconds": loop_s, "samples_per_s": SAMPLES / loop_s},
            {
                "run": "batch(batch_size=8)",
                "seconds": batch_s,
                "samples_per_s": SAMPLES / batch_s,
                "completion_tokens": tokens,
            },
        ]
    table = pd.DataFrame(rows).groupby("run", as_index=False).median()
    by_run = table.set_index("run")
    report(
        "batching",
        table,
        {
            "batching_throughput": by_run.loc["batch(batch_size=8)", "samples_per_s"]
            / by_run.loc["loop of ask", "samples_per_s"]
        },
        {
            "settings": {
                "samples": SAMPLES,
                "batch_size": 8,
                "max_new_tokens": MAX_NEW_TOKENS,
                "image": "448x448",
            }
        },
    )


if __name__ == "__main__":
    main()
