"""The records a recipe trains and evaluates on: generated, read from a folder, or loaded from the hub.

Whatever the source, the result is two `datasets.Dataset`s in glmlab's record format (`glmlab.data`):
the training records and a held-out evaluation split that never overlaps them, plus a fingerprint of
both so a run's `glmlab.json` says exactly which data made the adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from glmlab.errors import ConfigError
from glmlab.lora.recipe import DEFAULT_GENERATED_SAMPLES, LoraRecipe

logger = logging.getLogger(__name__)
EVAL_SEED_OFFSET = 1_000_003  # generated eval records use another seed, so they are other images


@dataclass
class TrainingData:
    """Training and held-out records, where they came from, and a content fingerprint."""

    train: Any
    eval: Any | None
    source: str
    fingerprint: str

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "train_records": len(self.train),
            "eval_records": 0 if self.eval is None else len(self.eval),
            "fingerprint": self.fingerprint,
        }


def load_training_data(recipe: LoraRecipe) -> TrainingData:
    """The recipe's training and evaluation records (`datasets.Dataset`s in the glmlab record format)."""
    if recipe.generator:
        train, held_out, source = _generated(recipe)
    else:
        train, held_out, source = _loaded(recipe)
    logger.info(
        "data: %s -> %d training and %d held-out records",
        source,
        len(train),
        0 if held_out is None else len(held_out),
    )
    return TrainingData(train, held_out, source, fingerprint(train, held_out))


def _generated(recipe: LoraRecipe):
    from glmlab.data import generate, load_records

    count = recipe.train_samples or DEFAULT_GENERATED_SAMPLES
    train = load_records(generate(recipe.generator, count, seed=recipe.seed, **recipe.generator_options))
    held_out = None
    if recipe.eval_samples:
        records = generate(
            recipe.generator,
            recipe.eval_samples,
            seed=recipe.seed + EVAL_SEED_OFFSET,
            **recipe.generator_options,
        )
        held_out = load_records(records)
    options = json.dumps(recipe.generator_options, sort_keys=True)
    return train, held_out, f"generator {recipe.generator} {options} seed {recipe.seed}"


def _loaded(recipe: LoraRecipe):
    from glmlab.data import load_records

    if recipe.data_path:
        records, source = load_records(recipe.data_path), recipe.data_path
    else:
        records = load_records(recipe.hub_dataset, split=recipe.hub_split)
        source = f"{recipe.hub_dataset} ({recipe.hub_split})"
    if recipe.eval_samples >= len(records):
        raise ConfigError(
            f"eval_samples={recipe.eval_samples}: {source} holds only {len(records)} records; "
            "hold out fewer so some remain for training."
        )
    shuffled = records.shuffle(seed=recipe.seed)
    cut = len(shuffled) - recipe.eval_samples
    kept = min(cut, recipe.train_samples or cut)
    if kept < cut:
        logger.info("train_samples=%d: training on %d of %d records", kept, kept, cut)
    train = shuffled.select(range(kept))
    held_out = shuffled.select(range(cut, len(shuffled))) if recipe.eval_samples else None
    return train, held_out, f"{source} shuffled with seed {recipe.seed}"


def fingerprint(*datasets: Any) -> str:
    """sha256 of every record's id, messages, metadata and image bytes, in order (train first).

    Read through the Arrow format: the stored image bytes as they are, with no decoding and no cast."""
    digest = hashlib.sha256()
    for dataset in datasets:
        if dataset is None:
            continue
        for table in dataset.with_format("arrow").iter(batch_size=256):
            for row in table.to_pylist():
                text = json.dumps([row["id"], row["messages"], row["metadata"]], ensure_ascii=False)
                digest.update(text.encode())
                for image in row["images"]:
                    digest.update(image["bytes"] or b"")
        digest.update(b"\x00split\x00")
    return digest.hexdigest()
