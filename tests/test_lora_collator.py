"""The collator: inference prompts, answer-only labels, padding and images, and the adapted modules."""

from __future__ import annotations

import pytest
import torch
from support import scene

from glmlab import prompts
from glmlab.data import load_records
from glmlab.lora.collator import IGNORE_INDEX, LoraCollator, answer_end_token_id

USER_TOKEN_ID = 151336  # <|user|>: an eos id of GLM-4.6V, and where the template's next turn begins


@pytest.fixture(scope="module")
def records():
    return load_records(
        [
            {
                "id": "one",
                "image": scene(112, 112, "red"),
                "question": "What colour is the circle?",
                "answer": "red",
            },
            {
                "id": "two",
                "images": [scene(112, 112, "blue"), scene(56, 84, "green")],
                "question": "Which colours are there?",
                "answer": "blue and green",
            },
            {
                "id": "three",
                "image": scene(168, 112, "yellow"),
                "question": "Colour?",
                "answer": "a yellow circle",
            },
        ]
    )


def make_collator(vlm, **options):
    eos = answer_end_token_id(vlm.tokenizer, vlm.eos_token_ids)
    return LoraCollator(vlm.processor, eos_token_id=eos, max_image_pixels=vlm.max_image_pixels, **options)


def test_answers_end_with_the_user_token_generation_stops_on(vlm):
    assert answer_end_token_id(vlm.tokenizer, vlm.eos_token_ids) == USER_TOKEN_ID


@pytest.mark.parametrize("thinking", [False, True])
def test_prompt_part_is_exactly_what_inference_sends(vlm, records, thinking):
    collator = make_collator(vlm, thinking=thinking, system="Be brief.")
    for record in records:
        sample = collator.encode(record)
        prompt = vlm.prepare(
            prompts.question_messages(record["images"], record["messages"][0]["content"], "Be brief."),
            thinking=thinking,
        )
        assert sample.prompt_text == prompt.text
        prompt_length = prompt.features["input_ids"].shape[1]
        assert sample.input_ids[:prompt_length].tolist() == prompt.features["input_ids"][0].tolist()
        assert torch.equal(sample.pixel_values, prompt.features["pixel_values"])


def test_label_mask_keeps_only_answer_tokens(vlm, records):
    batch = make_collator(vlm, thinking=False)(list(records))
    for row, record in enumerate(records):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert vlm.tokenizer.decode(kept) == record["messages"][-1]["content"] + "<|user|>"
        image_positions = batch["input_ids"][row] == vlm.image_token_id
        assert (batch["labels"][row][image_positions] == IGNORE_INDEX).all()


def test_thinking_on_target_starts_with_an_empty_think_block(vlm, records):
    sample = make_collator(vlm, thinking=True).encode(records[0])
    assert sample.prompt_text.endswith("<|assistant|>\n")
    assert sample.target_text == "<think></think>\nred"
    assert "/nothink" not in sample.prompt_text


def test_thinking_off_target_is_the_answer_after_the_prefilled_think_block(vlm, records):
    sample = make_collator(vlm, thinking=False).encode(records[0])
    assert sample.prompt_text.endswith("/nothink<|assistant|>\n<think></think>\n")
    assert sample.target_text == "red"


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_collator_shapes_with_several_images_and_padding(vlm, records, padding_side):
    collator = make_collator(vlm, padding_side=padding_side)
    samples = [collator.encode(record) for record in records]
    batch = collator.collate(samples)
    lengths = [len(sample.input_ids) for sample in samples]
    assert (
        batch["input_ids"].shape
        == batch["labels"].shape
        == batch["mm_token_type_ids"].shape
        == (3, max(lengths))
    )
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["image_grid_thw"].shape == (4, 3)  # one row per image, in sample order
    patches = int(batch["image_grid_thw"].prod(1).sum())
    assert batch["pixel_values"].shape[0] == patches
    assert int((batch["input_ids"] == vlm.image_token_id).sum()) == patches // 4  # 2x2 merge
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == IGNORE_INDEX).all()
    assert (batch["input_ids"][padding] == vlm.tokenizer.pad_token_id).all()
    shortest = lengths.index(min(lengths))
    assert padding[shortest, -1 if padding_side == "right" else 0]
    assert torch.equal(batch["mm_token_type_ids"] == 1, batch["input_ids"] == vlm.image_token_id)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_gives_each_sample_its_unpadded_loss(vlm, records, side):
    """Padding and batching must not change what a sample contributes (positions, masks, mRoPE)."""
    collator = make_collator(vlm, padding_side=side)

    def answer_logits(batch, row):
        with torch.no_grad():
            logits = vlm.model(**{k: v for k, v in batch.items() if k != "labels"}).logits[row]
        return logits[:-1][batch["labels"][row][1:] != IGNORE_INDEX]

    batch = collator(list(records))
    for row, record in enumerate(records):
        alone = collator([record])
        torch.testing.assert_close(answer_logits(batch, row), answer_logits(alone, 0), atol=1e-4, rtol=1e-4)


def test_target_modules_adapt_text_gate_up_but_no_vision_by_default(tiny_path):
    import glmlab
    from glmlab.lora import LoraRecipe
    from glmlab.lora.training import _with_adapter, adapted_module_names

    vlm = glmlab.load(str(tiny_path))
    names = adapted_module_names(
        _with_adapter(vlm, LoraRecipe(data={"generator": "shapes"}, base_model="tiny"))
    )
    assert not [name for name in names if ".visual." in name]
    assert any(name.endswith("language_model.layers.0.mlp.gate_up_proj") for name in names)
    assert len(names) == 2 * 6  # q, k, v, o, gate_up, down in each of the 2 tiny layers
    merger = adapted_module_names(
        _with_adapter(
            glmlab.load(str(tiny_path)),
            LoraRecipe(data={"generator": "shapes"}, adapter={"adapt_vision": "merger"}),
        )
    )
    assert sum(".visual.merger." in name for name in merger) == 4


def test_the_trainer_loss_is_the_models_own_and_accumulation_adds_up_to_one_big_batch(vlm, records, tmp_path):
    """LoraTrainer.compute_loss (logits at answer positions only) against transformers' full loss."""
    from transformers import TrainingArguments

    from glmlab.lora.training import LoraTrainer

    trainer = LoraTrainer(model=vlm.model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    collator = make_collator(vlm)
    whole = collator(list(records))
    with torch.no_grad():
        expected = vlm.model(**whole).loss  # mean over every labelled token of the batch
        assert torch.allclose(trainer.compute_loss(vlm.model, whole), expected, atol=1e-5)
        micro = [collator([records[0], records[1]]), collator([records[2]])]
        labelled = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in micro)
        accumulated = sum(
            trainer.compute_loss(vlm.model, batch, num_items_in_batch=labelled) for batch in micro
        )
    assert torch.allclose(accumulated, expected, atol=1e-5)
