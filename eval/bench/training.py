"""Benchmark 5, training: `glmlab.lora.train` step time vs a plain PEFT + torch loop. Target <= 1.10.

Both train the same LoRA (same targets, rank, optimiser, learning rate) on the bench checkpoint, on
the same batches (built by glmlab's collator from the same records), for the same number of steps;
the plain loop is what a user would write: the model's own loss, backward, AdamW step. glmlab's time
is the Trainer loop alone (`TrainResult.train_runtime_s`: no model loading, no checkpoint writing).
"""

from __future__ import annotations

import tempfile
import time
import warnings

import pandas as pd
import torch
from common import bench_checkpoint, report

STEPS = 6
BATCH = 4
RECIPE = dict(
    generator="shapes",
    generator_options={"size": 224, "question_types": ["color"]},
    train_samples=STEPS * BATCH,
    eval_samples=0,
    rank=16,
    alpha=32,
    dropout=0.0,
    adapt_vision="none",
    modules_to_save=[],
    learning_rate=1e-4,
    lr_scheduler="constant",
    warmup_ratio=0.0,
    max_grad_norm=0.0,
    max_steps=STEPS,
    batch_size=BATCH,
    gradient_accumulation_steps=1,
    max_image_pixels=224 * 224,
    save_every_steps=10_000,
    thinking=False,
    gradient_checkpointing=False,
    loraplus_lr_ratio=None,
)


def glmlab_step_s(recipe) -> float:
    from glmlab.lora import train

    with tempfile.TemporaryDirectory() as out:
        result = train(recipe, out)
    return result.train_runtime_s / STEPS


def plain_step_s(recipe) -> float:
    """The plain PEFT + torch loop on glmlab's batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    import glmlab
    from glmlab.lora.collator import LoraCollator, answer_end_token_id
    from glmlab.lora.data import load_training_data

    torch.manual_seed(recipe.seed)
    vlm = glmlab.load(recipe.base_model, device="cpu", dtype="float32")
    collator = LoraCollator(
        vlm.processor,
        eos_token_id=answer_end_token_id(vlm.tokenizer, vlm.eos_token_ids),
        thinking=recipe.thinking,
        max_image_pixels=recipe.max_image_pixels,
    )
    records = load_training_data(recipe).train
    batches = [
        collator([records[i] for i in range(step * BATCH, (step + 1) * BATCH)]) for step in range(STEPS)
    ]
    model = AutoModelForImageTextToText.from_pretrained(recipe.base_model)
    model = get_peft_model(
        model,
        LoraConfig(
            r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=0.0, target_modules=recipe.target_modules
        ),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate)
    model.train()
    start = time.perf_counter()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - start) / STEPS


def main() -> None:
    from glmlab.lora import LoraRecipe

    warnings.simplefilter("ignore")
    recipe = LoraRecipe(name="bench", base_model=str(bench_checkpoint()), **RECIPE)
    rows = []
    for _ in range(2):  # alternate
        rows.append({"run": "plain PEFT + torch loop", "step_s": plain_step_s(recipe)})
        rows.append({"run": "glmlab.lora.train", "step_s": glmlab_step_s(recipe)})
    table = pd.DataFrame(rows).groupby("run", as_index=False).median()
    by_run = table.set_index("run")["step_s"]
    report(
        "training",
        table,
        {"training_step_time": by_run["glmlab.lora.train"] / by_run["plain PEFT + torch loop"]},
        {"settings": {"steps": STEPS, "batch_size": BATCH, "rank": 16, "image": "224x224"}},
    )


if __name__ == "__main__":
    main()
