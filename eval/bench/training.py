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
RECIPE = {
    "data": {
        "generator": "shapes",
        "options": {"size": 224, "question_types": ["color"]},
        "n": STEPS * BATCH,
    },
    "prompt": {"thinking": False, "max_image_pixels": 224 * 224},
    "adapter": {"rank": 16, "alpha": 32, "dropout": 0.0, "adapt_vision": "none", "modules_to_save": []},
    "optimizer": {
        "learning_rate": 1e-4,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_grad_norm": 0.0,
        "max_steps": STEPS,
        "batch_size": BATCH,
        "gradient_accumulation_steps": 1,
        "loraplus_lr_ratio": None,
    },
    "hardware": {"gradient_checkpointing": False},
    "evaluation": {"samples": 0},
    "checkpoints": {"every_steps": 10_000},
}


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
        thinking=recipe.prompt.thinking,
        max_image_pixels=recipe.prompt.max_image_pixels,
    )
    records = load_training_data(recipe).train
    batches = [
        collator([records[i] for i in range(step * BATCH, (step + 1) * BATCH)]) for step in range(STEPS)
    ]
    model = AutoModelForImageTextToText.from_pretrained(recipe.base_model)
    model = get_peft_model(
        model,
        LoraConfig(
            r=recipe.adapter.rank,
            lora_alpha=recipe.adapter.alpha,
            lora_dropout=0.0,
            target_modules=recipe.adapter.targets,
        ),
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=recipe.optimizer.learning_rate
    )
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
    recipe = LoraRecipe.from_dict({"name": "bench", "base_model": str(bench_checkpoint()), **RECIPE})
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
