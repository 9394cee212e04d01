"""glmlab must not change the model's output: plain transformers code gives the same greedy tokens."""

import torch
from support import scene
from transformers import AutoModelForImageTextToText, AutoProcessor


def plain_transformers_greedy(path, image, question, max_new_tokens):
    """The model card's code, with no glmlab import."""
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}
    ]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    inputs.pop("token_type_ids", None)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist(), processor


def test_glmlab_gives_the_same_greedy_tokens_as_transformers(tiny_path, vlm):
    image = scene(140, 84, "green")
    expected_ids, processor = plain_transformers_greedy(tiny_path, image, "What is this?", 12)
    answer = vlm.ask(image, "What is this?", temperature=0, max_new_tokens=12)
    assert answer.usage.completion_tokens == 12
    expected_text = processor.decode([t for t in expected_ids if t not in vlm.hidden_token_ids])
    assert answer.raw == expected_text
