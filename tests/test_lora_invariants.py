"""Invariants of LoRA on Glm4v that have caught real bugs: identity at init, adapter-only updates,
save -> reload identity (glmlab and plain peft), and gradient checkpointing under PEFT."""

from __future__ import annotations

import warnings

import pytest
import torch
from support import scene

import glmlab
from glmlab.data import load_records
from glmlab.lora import LoraRecipe
from glmlab.lora.collator import LoraCollator, answer_end_token_id
from glmlab.lora.training import _optimizer, _with_adapter

RECIPE = LoraRecipe(
    data={"generator": "shapes"},
    base_model="tiny",
    adapter={"rank": 4, "alpha": 8, "dropout": 0.0, "adapt_vision": "merger"},
    optimizer={"learning_rate": 1e-2, "loraplus_lr_ratio": 4},
)


def fresh_vlm(tiny_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return glmlab.load(str(tiny_path))


@pytest.fixture(scope="module")
def batch(tiny_path):
    vlm = fresh_vlm(tiny_path)
    records = load_records(
        [
            {"image": scene(112, 112, colour), "question": "What colour?", "answer": colour}
            for colour in ("red", "green", "blue")
        ]
    )
    collator = LoraCollator(vlm.processor, eos_token_id=answer_end_token_id(vlm.tokenizer, vlm.eos_token_ids))
    return collator(list(records))


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**{key: value for key, value in batch.items() if key != "labels"}).logits


def one_step(model, batch):
    model.train()
    optimizer = _optimizer(model, RECIPE)
    model(**batch).loss.backward()
    optimizer.step()


def test_fresh_lora_adapter_leaves_the_output_unchanged(tiny_path, batch):
    vlm = fresh_vlm(tiny_path)
    before = logits_of(vlm.model, batch)
    model = _with_adapter(vlm, RECIPE.replace(**{"adapter.modules_to_save": ["lm_head"]}))
    assert torch.equal(logits_of(model, batch), before)


def test_one_optimiser_step_changes_only_adapter_weights(tiny_path, batch):
    vlm = fresh_vlm(tiny_path)
    model = _with_adapter(vlm, RECIPE)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    one_step(model, batch)
    changed = {
        name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])
    }
    assert changed, "the step changed nothing"
    assert all(".lora_A." in name or ".lora_B." in name for name in changed), sorted(changed)[:5]
    assert any(".lora_B." in name and "merger" in name for name in changed)


def test_save_then_reload_gives_identical_outputs_in_glmlab_and_plain_peft(tiny_path, batch, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    vlm = fresh_vlm(tiny_path)
    model = _with_adapter(vlm, RECIPE.replace(**{"adapter.modules_to_save": ["lm_head"]}))
    one_step(model, batch)
    trained = logits_of(model, batch)
    model.save_pretrained(str(tmp_path / "adapter"))

    reloaded = glmlab.load(str(tiny_path), adapter=tmp_path / "adapter")
    assert torch.equal(logits_of(reloaded.model, batch), trained)
    plain = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(str(tiny_path)), str(tmp_path / "adapter")
    )
    assert torch.equal(logits_of(plain, batch), trained)


def test_gradient_checkpointing_with_peft_gives_the_same_gradients(tiny_path, batch):
    def adapter_gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        vlm = fresh_vlm(tiny_path)
        model = _with_adapter(vlm, RECIPE)
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert vlm.model.is_activation_checkpointing
        model.train()
        model(**batch).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = adapter_gradients(False), adapter_gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7, msg=name)
