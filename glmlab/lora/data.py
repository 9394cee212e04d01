"""The records a recipe trains and evaluates on: generated, read from a folder, or loaded from the hub.

Whatever the source, the result is two `datasets.Dataset`s in glmlab's record format (`glmlab.data`):
the training records and a held-out evaluation split that never overlaps them, plus a fingerprint of
both so a run's `glmlab.json` says exactly which data made the adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from glmlab.data import DataSource, load_source
from glmlab.errors import ConfigError
from glmlab.lora.recipe import LoraRecipe

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
    source = _source(recipe)
    if source.generator:
        train, held_out, description = _generated(source, recipe.evaluation.samples)
    else:
        train, held_out, description = _split(source, recipe.evaluation.samples)
    logger.info(
        "data: %s -> %d training and %d held-out records",
        description,
        len(train),
        0 if held_out is None else len(held_out),
    )
    return TrainingData(train, held_out, description, fingerprint(train, held_out))


def _source(recipe: LoraRecipe) -> DataSource:
    """The recipe's data source with its seed resolved (data.seed, else the recipe's seed)."""
    return replace(recipe.data, seed=recipe.data_seed)


def _generated(source: DataSource, eval_samples: int):
    """Training records from the source's seed, held-out ones generated with another seed."""
    train = load_source(source)
    held_out = None
    if eval_samples:
        held_out = load_source(replace(source, n=eval_samples, seed=source.seed + EVAL_SEED_OFFSET))
    options = json.dumps(source.options, sort_keys=True)
    return train, held_out, f"generator {source.generator} {options} seed {source.seed}"


def _split(source: DataSource, eval_samples: int):
    """A folder or hub set shuffled with the source's seed: the last records held out, at most n trained on."""
    records = load_source(replace(source, n=None))
    name = source.folder or f"{source.hub} ({source.split or 'train'})"
    if eval_samples >= len(records):
        raise ConfigError(
            f"evaluation.samples={eval_samples}: {name} holds only {len(records)} records; "
            "hold out fewer so some remain for training."
        )
    shuffled = records.shuffle(seed=source.seed)
    cut = len(shuffled) - eval_samples
    kept = min(cut, source.n or cut)
    if kept < cut:
        logger.info("data.n=%d: training on %d of %d records", kept, kept, cut)
    train = shuffled.select(range(kept))
    held_out = shuffled.select(range(cut, len(shuffled))) if eval_samples else None
    return train, held_out, f"{name} shuffled with seed {source.seed}"


def fingerprint(*datasets: Any) -> str:
    """sha256 of every record's id, messages, metadata, image and video bytes, in order (train first).

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
                for video in row.get("videos") or []:
                    digest.update(video)
        digest.update(b"\x00split\x00")
    return digest.hexdigest()
