"""From records to training batches, with the model's own chat template and processor.

The prompt part of every sample is built by `glmlab.prompts` exactly as `VLM.prepare` builds it for
inference (same messages, same template, same `thinking` switch, same image budget), so the adapter
is trained on precisely what it will be asked. The target is what the template renders after that
prompt for the record's answer (thinking off: the answer itself, after the pre-filled
`<think></think>\\n`), tokenised on its own, then closed with the token generation stops on.

A video record's clips are sampled as `vlm.ask` samples them (`glmlab.videos` defaults: `fps`,
`max_frames`) and go to the processor as `videos=`, exactly as at inference.

Labels are -100 everywhere but the target: image and video tokens, system and user text, the template's
markers and padding never reach the loss. No sequence packing: Glm4v's 3-D mRoPE positions are
computed per sequence from `image_grid_thw`, and packing would corrupt them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from glmlab import prompts
from glmlab.batching import concat_images, concat_videos, pad_rows
from glmlab.data import keep_markers, to_dialogue
from glmlab.errors import InputError

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips
ANSWER_END_TOKEN = "<|user|>"


def answer_end_token_id(tokenizer: Any, eos_token_ids: set[int]) -> int:
    """The token that closes every target: `<|user|>` when it is one of the checkpoint's eos ids.

    In GLM's template an assistant turn ends where the next `<|user|>` begins, and generation stops
    on it (it is an eos id), so a target ending in `<|user|>` is a literal prefix of a rendered
    multi-turn conversation. A checkpoint without it falls back to the tokenizer's eos token.
    """
    token_id = tokenizer.convert_tokens_to_ids(ANSWER_END_TOKEN)
    if token_id in eos_token_ids:
        return token_id
    if tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no eos token and <|user|> is not an eos id; cannot end targets.")
    return tokenizer.eos_token_id


@dataclass
class EncodedSample:
    """One training sample: token ids, labels (-100 outside the target) and its image or video tensors."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    prompt_text: str
    target_text: str
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None


class LoraCollator:
    """Turns records (rows of a glmlab record dataset) into padded training batches.

    system / prompt: the recipe's system text and fixed instruction (None keeps the record's).
    thinking: the template's thinking switch, as passed to `VLM.ask(..., thinking=...)`.
    max_image_pixels: the image budget, as passed to `VLM.ask(..., max_image_pixels=...)`.
    """

    def __init__(
        self,
        processor: Any,
        *,
        eos_token_id: int,
        system: str | None = None,
        prompt: str | None = None,
        thinking: bool = False,
        max_image_pixels: int | None = None,
        padding_side: str = "right",
    ) -> None:
        self.processor = processor
        self.text_tokenizer = (
            processor.tokenizer
        )  # not `.tokenizer`: the Trainer would save it with every checkpoint
        self.eos_token_id = eos_token_id
        self.system = system
        self.prompt = prompt
        self.thinking = thinking
        self.max_image_pixels = max_image_pixels
        self.padding_side = padding_side
        self.pad_token_id = (
            self.text_tokenizer.pad_token_id if self.text_tokenizer.pad_token_id is not None else eos_token_id
        )

    # ---- one sample -----------------------------------------------------------------------------

    def prompt_messages(self, record: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The messages inference is asked with (images where the record's `<image>` markers put them,
        else first in the first user turn; videos first in the first user turn) and the answer."""
        dialogue = to_dialogue(record)
        turns = [dict(turn) for turn in dialogue.turns]
        if self.prompt is not None:
            asked = turns[dialogue.asked]["content"]
            turns[dialogue.asked] = {"role": "user", "content": keep_markers(asked, self.prompt)}
        system = self.system if self.system is not None else dialogue.system
        images = list(record.get("images") or []) + list(record.get("videos") or [])
        return prompts.conversation_messages(images, turns, system, markers=True), dialogue.answer

    def encode(self, record: dict[str, Any]) -> EncodedSample:
        """Token ids and labels of one record: the inference prompt, then the target and its end token."""
        messages, answer = self.prompt_messages(record)
        conversation = prompts.to_conversation(messages)
        prompt_text = prompts.render(self.processor, conversation.messages, thinking=self.thinking)
        full_text = prompts.render(
            self.processor,
            conversation.messages + [{"role": "assistant", "content": answer}],
            thinking=self.thinking,
            add_generation_prompt=False,
        )
        if not full_text.startswith(prompt_text):
            raise InputError(
                f"record {record.get('id')!r}: the chat template renders the answered conversation "
                "with a different prefix than the generation prompt; cannot split prompt from target."
            )
        target_text = full_text[len(prompt_text) :]
        features = prompts.encode(
            self.processor,
            [prompt_text],
            [conversation.images],
            max_image_pixels=self.max_image_pixels,
            videos=[conversation.videos],
        )
        prompt_ids = features["input_ids"][0]
        target_ids = torch.tensor(
            self.text_tokenizer(target_text, add_special_tokens=False)["input_ids"] + [self.eos_token_id],
            dtype=prompt_ids.dtype,
        )
        type_ids = features["mm_token_type_ids"][0]
        return EncodedSample(
            input_ids=torch.cat([prompt_ids, target_ids]),
            labels=torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), target_ids]),
            mm_token_type_ids=torch.cat([type_ids, torch.zeros_like(target_ids, dtype=type_ids.dtype)]),
            pixel_values=features.get("pixel_values"),
            image_grid_thw=features.get("image_grid_thw"),
            prompt_text=prompt_text,
            target_text=target_text,
            pixel_values_videos=features.get("pixel_values_videos"),
            video_grid_thw=features.get("video_grid_thw"),
        )

    # ---- a batch --------------------------------------------------------------------------------

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate([self.encode(record) for record in records])

    def collate(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        """Pad samples to one length (right or left); images and videos are concatenated in sample order."""
        rows = [
            {"input_ids": s.input_ids, "labels": s.labels, "mm_token_type_ids": s.mm_token_type_ids}
            for s in samples
        ]
        pad = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
        batch = pad_rows(rows, pad, side=self.padding_side)
        videos = [
            {"pixel_values_videos": s.pixel_values_videos, "video_grid_thw": s.video_grid_thw}
            for s in samples
        ]
        return (
            batch
            | concat_images([(s.pixel_values, s.image_grid_thw) for s in samples])
            | concat_videos(videos)
        )
