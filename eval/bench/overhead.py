"""Benchmark 1, overhead: `vlm.ask` vs the model card's plain transformers code. Target ratio <= 1.05.

Both run on the same loaded model, identical inputs, greedy decoding, the prefix cache off (this
measures glmlab's own cost, not its speed-ups).
"""

from __future__ import annotations

import torch
from common import alternate, bench_image, load_bench_vlm, report, summarise

QUESTION = "Describe the picture in one sentence."
MAX_NEW_TOKENS = 16


def main() -> None:
    vlm = load_bench_vlm()
    image = bench_image()
    model, processor = vlm.model, vlm.processor

    def plain_transformers() -> str:
        messages = [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}],
            }
        ]
        inputs = processor.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        inputs.pop("token_type_ids", None)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        return processor.decode(output[0, inputs["input_ids"].shape[1] :])

    def glmlab_ask() -> str:
        return vlm.ask(image, QUESTION, temperature=0, max_new_tokens=MAX_NEW_TOKENS, cache=False).raw

    times = alternate({"transformers": plain_transformers, "glmlab.ask": glmlab_ask}, repeats=6)
    table = summarise(times)
    median = dict(zip(table["run"], table["median_s"], strict=True))
    report(
        "overhead",
        table,
        {"overhead": median["glmlab.ask"] / median["transformers"]},
        {"settings": {"max_new_tokens": MAX_NEW_TOKENS, "image": "448x448", "image_tokens": 256}},
    )


if __name__ == "__main__":
    main()
