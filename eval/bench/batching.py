"""Benchmark 3, batching: 32 samples, `vlm.batch(batch_size=8)` vs a loop of `vlm.ask`. Target >= 3x.

Decode is memory-bound (each step reads every weight); a batch reads them once for 8 sequences.
Image prefill is compute-bound: 8 images cost 8 times one, batched or not (on a CPU as on a GPU once
the image tokens fill it). So the gain grows with the answer length, and the benchmark sweeps it:
- 8 tokens: a one-word VQA answer (eval/shapes.yaml); reported, no target.
- 16 tokens: a short phrase; reported, no target (the figure of earlier runs).
- 64 tokens: the target row. A structured answer: the invoice suites' JSON averages ~170-220 tokens
  (lora/invoices-*.yaml), and GLM-4.6V thinks before answering by default, so 64 is conservative.
Each length runs the loop and then the batch on the same 32 samples after a warm-up (one round each,
to keep `make bench` under 10 minutes), and checks that both gave the same answers.
"""

from __future__ import annotations

import time

import pandas as pd
from common import bench_image, load_bench_vlm, report

SAMPLES = 32
BATCH_SIZE = 8
ANSWER_TOKENS = (8, 16, 64)
TARGET_TOKENS = 64
QUESTIONS = [
    "What is in the picture?",
    "Which colours appear?",
    "How many shapes are there?",
    "Describe the layout of the shapes briefly.",
]


def timed(function, *args, **kwargs) -> tuple[float, list]:
    start = time.perf_counter()
    answers = function(*args, **kwargs)
    return time.perf_counter() - start, answers


def loop_of_ask(vlm, items: list, **settings) -> list:
    return [vlm.ask(image, question, cache=False, **settings) for image, question in items]


def main() -> None:
    vlm = load_bench_vlm()
    items = [(bench_image(seed=index), QUESTIONS[index % len(QUESTIONS)]) for index in range(SAMPLES)]
    vlm.batch(items[:BATCH_SIZE], batch_size=BATCH_SIZE, temperature=0, max_new_tokens=4)  # warm-up
    vlm.ask(*items[0], cache=False, temperature=0, max_new_tokens=4)
    rows = []
    for tokens in ANSWER_TOKENS:
        settings = {"temperature": 0, "max_new_tokens": tokens}
        loop_s, looped = timed(loop_of_ask, vlm, items, **settings)
        batch_s, batched = timed(vlm.batch, items, batch_size=BATCH_SIZE, **settings)
        assert [a.raw for a in batched] == [a.raw for a in looped], "batched and looped answers differ"
        for run, seconds, answers in (("loop of ask", loop_s, looped), ("batch", batch_s, batched)):
            rows.append(
                {
                    "max_new_tokens": tokens,
                    "run": run,
                    "seconds": seconds,
                    "samples_per_s": SAMPLES / seconds,
                    "completion_tokens": sum(answer.usage.completion_tokens for answer in answers),
                }
            )
        print(f"{tokens} tokens: loop {loop_s:.1f} s, batch {batch_s:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    speedup = {
        tokens: (
            table.query("max_new_tokens == @tokens and run == 'batch'")["samples_per_s"].item()
            / table.query("max_new_tokens == @tokens and run == 'loop of ask'")["samples_per_s"].item()
        )
        for tokens in ANSWER_TOKENS
    }
    ratios = {"batching_throughput": speedup[TARGET_TOKENS]}
    ratios |= {f"batching_throughput_{tokens}_tokens": speedup[tokens] for tokens in ANSWER_TOKENS}
    report(
        "batching",
        table,
        ratios,
        {
            "settings": {
                "samples": SAMPLES,
                "batch_size": BATCH_SIZE,
                "answer_tokens": list(ANSWER_TOKENS),
                "target_tokens": TARGET_TOKENS,
                "image": "448x448",
            }
        },
    )


if __name__ == "__main__":
    main()
