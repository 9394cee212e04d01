"""Independent requests as rows of one `generate` call: each keeps its own sampling, limits and stream.

transformers' `generate` takes one GenerationConfig for a whole batch, and its continuous batching
(transformers 5.x `generate_batch`) builds 1-D position ids from plain token lists: it has no place for
images or Glm4v's 3-D rope. So glmlab batches requests itself (hand-written, as no library does this for
Glm4v): rows are left-padded into one batch (`glmlab.batching`), the batch runs greedy, and

- `RowSampler` (a logits processor) does each row's own repetition penalty (transformers' formula, all
  rows at once), temperature, top-k and top-p (transformers' own warpers), then draws from the row's own seeded generator and leaves only
  the chosen token finite, so greedy picks it: a row samples exactly as it would alone;
- `RowStops` (a stopping criterion, asked once per step with every row's tokens) sends each running
  row its new token, ends each row at its own eos, max_new_tokens, stop strings or stop signal, and
  hands that row its Answer at once (a short answer does not wait for a long neighbour). It streams,
  not a `generate` streamer: transformers puts a step's tokens after asking the stopping criteria
  (and on GPU one step later still), so a streamer would see a finished row's last token too late.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from glmlab.answer import Answer
from glmlab.generation import Stream, TextClock
from glmlab.settings import GenerationSettings


@dataclass
class Request:
    """A checked, prepared request: its prompt (`glmlab.model.Prompt`), settings, GenerationConfig
    (fitted to the context) and adapter. Made by `VLM.open_request`."""

    prompt: Any
    settings: GenerationSettings
    config: Any
    adapter: Any
    cache: bool = True  # may reuse the model's image-prefix cache, and share a prefix with its batch


@dataclass
class Row:
    """One request's place in a batch: the request, its stream, and its sampling seed."""

    request: Request
    stream: Stream
    seed: int | None = None
    started: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.monotonic)

    _start_callbacks: list[Callable[[], None]] = field(default_factory=list)

    def mark_started(self) -> None:
        """The row's batch begins (called once, under the batcher's lock)."""
        self.started.set()
        callbacks, self._start_callbacks = self._start_callbacks, []
        for callback in callbacks:
            callback()

    def add_start_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the row's batch begins; now if it has (register under the batcher's lock)."""
        if self.started.is_set():
            callback()
        else:
            self._start_callbacks.append(callback)

    @classmethod
    def open(cls, request: Request, clock: TextClock, seed: int | None = None) -> Row:
        return cls(request, Stream(None, clock, request.settings.stop), seed)

    @property
    def clock(self) -> TextClock:
        return self.stream.clock

    @property
    def stopped(self) -> bool:
        return self.stream.stop_event.is_set()


class AllStopped:
    """Set when every row's stop signal is set: what may abort a shared prefill (`interruptible`)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def is_set(self) -> bool:
        return all(row.stopped for row in self.rows)


def row_warpers(config: Any) -> list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The sampling warpers `generate` would build for this row's config, in its order."""
    warpers: list[Any] = []
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            warpers.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    return warpers


class RowSampler(LogitsProcessor):
    """Each row's next token by its own settings (see the module docstring); the rest becomes -inf.

    In `generate`'s order: each row's repetition penalty (for all rows at once, over the row's own
    tokens), then the row's constraints (thinking budget, schema), then its sampling warpers and draw.
    Greedy rows without constraints, the common case, take their argmax together: one step of a batch
    of 16 costs a few milliseconds here, not one Python pass per row.
    """

    def __init__(
        self, rows: list[Row], pad_spans: list[tuple[int, int]], constraints: list[list[Any]] | None = None
    ) -> None:
        self.configs = [row.request.config for row in rows]
        self.constraints = constraints or [[] for _ in rows]  # a row's budget and schema
        self.warpers = [row_warpers(config) for config in self.configs]
        self.generators = [_generator(row.seed) for row in rows]
        self.pad_spans = pad_spans  # (start, count) of each row's padding: left, or after a shared prefix
        self.penalties = torch.tensor(
            [[config.repetition_penalty or 1.0] for config in self.configs], dtype=torch.float32
        )
        self.batched = [
            index
            for index, config in enumerate(self.configs)
            if not config.do_sample and not self.constraints[index]
        ]
        self.one_by_one = [index for index in range(len(rows)) if index not in self.batched]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = self._penalised(input_ids, scores)
        chosen = torch.full_like(scores, -float("inf"))
        if self.batched:
            rows = torch.tensor(self.batched, device=scores.device)
            chosen[rows, scores[rows].argmax(dim=-1)] = 0.0
        for index in self.one_by_one:
            config = self.configs[index]
            row_ids, row_scores = input_ids[index : index + 1], scores[index : index + 1]
            for processor in [*self.constraints[index], *self.warpers[index]]:
                row_scores = processor(row_ids, row_scores)
            if config.do_sample:
                probs = torch.softmax(row_scores, dim=-1)
                token = torch.multinomial(probs[0], 1, generator=self.generators[index])[0]
            else:
                token = torch.argmax(row_scores[0])
            chosen[index, token] = 0.0
        return chosen

    def _penalised(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """transformers' repetition penalty for every row at once, each over its own tokens: a row's
        padding is pointed at the real token after it (scattering the same value twice is harmless)."""
        if bool((self.penalties == 1.0).all()):
            return scores
        ids = input_ids.clone()
        for index, (start, count) in enumerate(self.pad_spans):
            if count:
                ids[index, start : start + count] = ids[index, start + count]
        penalty = self.penalties.to(scores.device)
        picked = torch.gather(scores, 1, ids)
        picked = torch.where(picked < 0, picked * penalty, picked / penalty)
        return scores.scatter(1, ids, picked)


def _generator(seed: int | None) -> torch.Generator:
    """A seeded CPU generator: the row's seed, else one drawn from torch's global RNG (so a global
    `torch.manual_seed` still makes unseeded rows reproducible). Draws match `generate`'s own sampling
    after `torch.manual_seed(seed)`, as both use the CPU generator's multinomial."""
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return generator


class RowStops(StoppingCriteria):
    """Streams each row's tokens, ends each row at its own limits and finishes its stream then; see
    the module docstring.

    `finish(index, new_ids)` turns a row's generated ids into its Answer (`VLM.decode_answer`).
    Stop strings are matched on the decoded tail as `glmlab.generation.StopStrings` does.
    """

    def __init__(
        self,
        rows: list[Row],
        width: int,
        eos_ids: set[int],
        decode_tail: Callable[[list[int]], str],
        finish: Callable[[int, list[int]], None],
    ) -> None:
        self.rows = rows
        self.width = width
        self.eos_ids = eos_ids
        self.decode_tail = decode_tail
        self.finish = finish
        self.done = [False] * len(rows)
        self.windows = [
            4 * max(len(stop) for stop in row.request.settings.stop) + 4 if row.request.settings.stop else 0
            for row in rows
        ]
        for row in rows:
            row.clock.put(row.request.prompt.features["input_ids"][0])  # the prompt: each clock skips it

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.width
        newest = input_ids[:, -1].tolist()
        for index, row in enumerate(self.rows):
            if self.done[index]:
                continue
            row.clock.put(torch.tensor([newest[index]]))
            if self._row_ends(index, row, input_ids[index], newest[index], generated):
                self.done[index] = True
                self.finish(index, input_ids[index, self.width :].tolist())
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _row_ends(self, index: int, row: Row, ids: torch.Tensor, newest: int, generated: int) -> bool:
        if newest in self.eos_ids or generated >= row.request.config.max_new_tokens or row.stopped:
            return True
        stops = row.request.settings.stop
        if not stops:
            return False
        tail = ids[max(self.width, len(ids) - self.windows[index]) :].tolist()
        text = self.decode_tail(tail)
        return any(stop in text for stop in stops)


def finished_answer(row: Row, answer: Answer) -> None:
    """Hand a row its Answer and end its stream."""
    row.clock.end()
    row.stream.finish(answer)
