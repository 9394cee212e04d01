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
    groups = []
    for has_video in (False, True):  # a batch holds images or videos, never both (prompts.to_conversation)
        kind = [item for item in items if ("pixel_values_videos" in item.prompt.features) is has_video]
        ordered = sorted(kind, key=lambda item: item.prompt.features["input_ids"].shape[1])
        groups += [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]
    return groups


def collate_left_padded(features: list[Any], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack single-prompt processor outputs into one left-padded batch."""
    rows = [{key: feature[key][0] for key in ("input_ids", "mm_token_type_ids")} for feature in features]
    batch = pad_rows(rows, {"input_ids": pad_token_id, "mm_token_type_ids": 0}, side="left")
    return (
        batch
        | concat_images(
            [(feature.get("pixel_values"), feature.get("image_grid_thw")) for feature in features]
        )
        | concat_videos(features)
    )


def collate_after_prefix(features: list[Any], length: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Rows that share their first `length` tokens (one image prefix, computed once into a KV cache):
    the prefix, then each row's padding, then its own rest. Padding in the middle is masked out and
    position ids count only attended tokens, so each row sees its prompt exactly as alone; no pixels
    (they are in the prefix's cache)."""
    rests = [
        {key: feature[key][0, length:] for key in ("input_ids", "mm_token_type_ids")} for feature in features
    ]
    batch = pad_rows(rests, {"input_ids": pad_token_id, "mm_token_type_ids": 0}, side="left")
    first = features[0]
    prefix = {
        "input_ids": first["input_ids"][:, :length],
        "mm_token_type_ids": first["mm_token_type_ids"][:, :length],
        "attention_mask": torch.ones((1, length), dtype=torch.long),
    }
    return {
        key: torch.cat([prefix[key].expand(len(features), -1).to(batch[key].dtype), batch[key]], dim=1)
        for key in batch
    }


def pad_rows(
    rows: list[dict[str, torch.Tensor]], pad_values: dict[str, int], side: str
) -> dict[str, torch.Tensor]:
    """1-D sequences (one dict per sample, the keys of `pad_values`) as [batch, longest] tensors padded
    on `side`, with their attention_mask. Shared by inference batches (left) and training batches."""
    length = max(len(row["input_ids"]) for row in rows)
    batch = {
        key: torch.full((len(rows), length), value, dtype=torch.long) for key, value in pad_values.items()
    }
    batch["attention_mask"] = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        size = len(row["input_ids"])
        span = slice(0, size) if side == "right" else slice(length - size, length)
        for key in pad_values:
            batch[key][index, span] = row[key]
        batch["attention_mask"][index, span] = 1
    return batch


def concat_videos(features: list[Any]) -> dict[str, torch.Tensor]:
    """pixel_values_videos and video_grid_thw of samples, concatenated in sample order; {} without videos."""
    present = [feature for feature in features if feature.get("pixel_values_videos") is not None]
    if not present:
        return {}
    return {
        "pixel_values_videos": torch.cat([feature["pixel_values_videos"] for feature in present]),
        "video_grid_thw": torch.cat([feature["video_grid_thw"] for feature in present]),
    }


def concat_images(images: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> dict[str, torch.Tensor]:
    """pixel_values and image_grid_thw of samples, concatenated in sample order (the vision tower
    takes every image's patches as one sequence); {} when no sample has an image."""
    present = [(pixels, grid) for pixels, grid in images if pixels is not None]
    if not present:
        return {}
    return {
        "pixel_values": torch.cat([pixels for pixels, _ in present]),
        "image_grid_thw": torch.cat([grid for _, grid in present]),
    }
