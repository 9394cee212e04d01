"""Batched generation: many prompts through one `generate` call, padding kept small.

Items are prepared one by one (so one bad image fails only its item), grouped by prompt length
(image tokens included) so a batch holds similar prompts (little padding), left-padded into one tensor batch,
and the answers returned in input order. Collating already-processed Glm4v features is hand-written:
the processor pads text but cannot merge separately processed image batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from glmlab.errors import InputError
from glmlab.prompts import question_messages


@dataclass
class BatchItem:
    """One item of a batch: its place in the input and its prepared prompt (or why it has none)."""

    index: int
    prompt: Any = None
    error: str | None = None


def item_messages(item: Any) -> list[dict[str, Any]]:
    """Messages of one batch item: {"messages": [...]}, {"images", "question", "system"} or (images, question)."""
    if isinstance(item, tuple) and len(item) == 2:
        return question_messages(item[0], item[1], None)
    if isinstance(item, dict) and "messages" in item:
        return item["messages"]
    if isinstance(item, dict) and "question" in item:
        return question_messages(item.get("images", item.get("image")), item["question"], item.get("system"))
    raise InputError(
        f"batch item {item!r:.80}: expected (images, question), {{'images', 'question'}} or {{'messages'}}."
    )


def group_for_padding(items: list[BatchItem], batch_size: int) -> list[list[BatchItem]]:
    """Batches of prepared items with similar prompt lengths (sorted, then chunked): only the token
    sequences are padded (image patches are concatenated), and a prompt's length counts its image
    tokens, so this also groups images of similar size."""
    ordered = sorted(items, key=lambda item: item.prompt.features["input_ids"].shape[1])
    return [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]


def collate_left_padded(features: list[Any], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack single-prompt processor outputs into one left-padded batch."""
    length = max(feature["input_ids"].shape[1] for feature in features)
    batch: dict[str, list[torch.Tensor]] = {"input_ids": [], "attention_mask": [], "mm_token_type_ids": []}
    for feature in features:
        pad = length - feature["input_ids"].shape[1]
        batch["input_ids"].append(_left_pad(feature["input_ids"], pad, pad_token_id))
        batch["attention_mask"].append(_left_pad(feature["attention_mask"], pad, 0))
        batch["mm_token_type_ids"].append(_left_pad(feature["mm_token_type_ids"], pad, 0))
    collated = {key: torch.cat(values) for key, values in batch.items()}
    with_images = [feature for feature in features if "pixel_values" in feature]
    if with_images:
        collated["pixel_values"] = torch.cat([feature["pixel_values"] for feature in with_images])
        collated["image_grid_thw"] = torch.cat([feature["image_grid_thw"] for feature in with_images])
    return collated


def _left_pad(tensor: torch.Tensor, pad: int, value: int) -> torch.Tensor:
    if pad == 0:
        return tensor
    return torch.cat([torch.full((tensor.shape[0], pad), value, dtype=tensor.dtype), tensor], dim=1)
