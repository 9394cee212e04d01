"""Reuse of image-prefix KV caches: many questions about the same images pay for prefill once.

A GLM-V prompt with images is `[gMASK]<sop>...<|begin_of_image|><|image|>*N<|end_of_image|>question`.
Everything up to the last `<|end_of_image|>` (the images and the text before them) is the prefix; a
follow-up question about the same images shares it. The prefix is run once into a DynamicCache; each
question then generates from a copy of it with the full input ids but no pixel values, and with the
Glm4v rope offset (`model.model.rope_deltas`, the 3-D position shift the images introduce) restored
to the prefix's value. That is token-identical to the uncached path under greedy decoding.
Rows of one batch about the same images start from one copy of the prefix per row
(`shared_prefix_inputs`), so a batch pays for the images' prefill once.

No library offers prefix reuse for multimodal prompts under `generate`, hence this module.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

DEFAULT_CACHE_BYTES = 256 * 1024**2


@dataclass
class PrefixEntry:
    """A computed prefix: its KV cache and the rope offset it implies."""

    cache: Any
    rope_deltas: torch.Tensor
    nbytes: int


_DIGEST_STRIP_BYTES = 1 << 20


def image_digest(images: list[Image.Image]) -> str:
    """Content hash of images (pixels, size, mode): a changed image never hits the cache.

    Hashed in strips of rows (the same bytes as `tobytes()`, in order): `tobytes()` of a large image
    holds two copies of its pixels at once, more than the request's decode budget allows for.
    """
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.mode}{image.size}".encode())
        width, height = image.size
        row_bytes = max(1, len(image.crop((0, 0, width, 1)).tobytes()))
        rows = max(1, _DIGEST_STRIP_BYTES // row_bytes)
        for top in range(0, height, rows):
            digest.update(image.crop((0, top, width, min(height, top + rows))).tobytes())
    return digest.hexdigest()


def prefix_length(input_ids: torch.Tensor, end_of_image_id: int) -> int:
    """Tokens up to and including the last `<|end_of_image|>`; 0 when the prompt has no image."""
    positions = (input_ids[0] == end_of_image_id).nonzero()
    return int(positions[-1]) + 1 if len(positions) else 0


def cache_nbytes(cache: Any) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


class PrefixCache:
    """An LRU of prefix entries bounded in bytes (an entry larger than the bound is not kept)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, PrefixEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> PrefixEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple, entry: PrefixEntry) -> None:
        if entry.nbytes > self.max_bytes:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def compute_prefix(model: Any, inputs: dict[str, torch.Tensor], length: int) -> PrefixEntry:
    """Run the prefix (with its images) once and keep its cache and rope offset."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    prefix_inputs = {
        key: value[:, :length]
        for key, value in inputs.items()
        if key in ("input_ids", "attention_mask", "mm_token_type_ids")
    }
    model.model.rope_deltas = None
    model(
        **prefix_inputs,
        pixel_values=inputs.get("pixel_values"),
        image_grid_thw=inputs.get("image_grid_thw"),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return PrefixEntry(cache=cache, rope_deltas=model.model.rope_deltas.clone(), nbytes=cache_nbytes(cache))


def generate_inputs_from_prefix(
    model: Any, inputs: dict[str, torch.Tensor], entry: PrefixEntry
) -> dict[str, Any]:
    """`generate` kwargs continuing from a copy of the prefix cache (no pixels: they are in the cache)."""
    model.model.rope_deltas = entry.rope_deltas.clone()
    kept = {key: value for key, value in inputs.items() if key not in ("pixel_values", "image_grid_thw")}
    return {**kept, "cache": copy.deepcopy(entry.cache)}


def shared_prefix_inputs(
    model: Any, inputs: dict[str, torch.Tensor], entry: PrefixEntry, rows: int
) -> dict[str, Any]:
    """`generate` kwargs for `rows` prompts that share the prefix (`glmlab.batching.collate_after_prefix`):
    one copy of its cache per row, and its rope offset, which holds for every row because position ids
    count attended tokens only (the padding after the prefix is masked)."""
    model.model.rope_deltas = entry.rope_deltas.clone()
    cache = copy.deepcopy(entry.cache)
    cache.batch_repeat_interleave(rows)
    return {**inputs, "cache": cache}
