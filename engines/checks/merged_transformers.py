"""A merged export loads with the transformers vLLM pins, and answers token for token like glmlab.

Runs in vLLM's environment (its transformers, not glmlab's). Request: {"checkpoint": DIR, "cases":
[{messages, image, prompt_ids, tokens}]} with glmlab's prompt ids and greedy tokens for each case.
The prompt is rendered here by the checkpoint's own chat template and processor (AutoProcessor), so
the check covers the template and the image preprocessing too, not only the weights.
"""

from __future__ import annotations

import torch
import transformers
from common import CheckFailed, main
from transformers import AutoModelForImageTextToText, AutoProcessor


def check(request: dict) -> str:
    processor = AutoProcessor.from_pretrained(request["checkpoint"])
    model = AutoModelForImageTextToText.from_pretrained(request["checkpoint"], dtype=torch.float32)
    model.eval()
    for case in request["cases"]:
        messages = [
            {
                **message,
                "content": [
                    {"type": "image", "path": part["image"]} if part["type"] == "image" else part
                    for part in message["content"]
                ],
            }
            for message in case["messages"]
        ]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        prompt_ids = inputs["input_ids"][0].tolist()
        if prompt_ids != case["prompt_ids"]:
            rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            raise CheckFailed(
                f"prompt of {case['text']!r} differs: transformers {transformers.__version__} renders "
                f"{rendered!r} ({len(prompt_ids)} ids), glmlab {case['prompt_text']!r} ({len(case['prompt_ids'])} ids)"
            )
        count = len(case["tokens"])
        with torch.inference_mode():
            output = model.generate(
                **inputs, do_sample=False, repetition_penalty=1.0, max_new_tokens=count, min_new_tokens=count
            )
        tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
        if tokens != case["tokens"]:
            raise CheckFailed(f"greedy tokens of {case['text']!r}: {tokens}, glmlab {case['tokens']}")
    images = sum(1 for case in request["cases"] if case["image"])
    return f"transformers {transformers.__version__}: {len(request['cases'])} prompts ({images} with an image) equal"


if __name__ == "__main__":
    main(check)
