"""The small pieces around `model.generate`: its GenerationConfig, timing, stopping, streaming.

The per-call options themselves are `glmlab.settings.GenerationSettings`, plain data kept apart from
this module so that eval suites validate them without importing torch. Defaults are layered so a user can see where each came from: the model card's recommended sampling,
then the checkpoint's own generation_config, then what the caller passed.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from glmlab.answer import Answer
from glmlab.settings import GenerationSettings

# GLM-4.6V-Flash model card: top_p 0.6, top_k 2, temperature 0.8, repetition_penalty 1.1.
RECOMMENDED_SAMPLING = {
    "do_sample": True,
    "temperature": 0.8,
    "top_p": 0.6,
    "top_k": 2,
    "repetition_penalty": 1.1,
}
DEFAULT_MAX_NEW_TOKENS = 2048  # when the checkpoint sets none; thinking answers can need up to 16K
# Structural tokens that never belong in answer text (eos ids are added per checkpoint).
STRUCTURAL_TOKENS = (
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|endoftext|>",
)


def generation_config(base: GenerationConfig, settings: GenerationSettings) -> GenerationConfig:
    """The GenerationConfig of one call: recommended sampling < checkpoint values < caller's values."""
    config = copy.deepcopy(base)
    explicit = base.to_diff_dict()
    for key, value in RECOMMENDED_SAMPLING.items():
        if key not in explicit:
            setattr(config, key, value)
    if "max_new_tokens" not in explicit:
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    for key, value in settings.to_dict().items():
        if key not in ("seed", "stop", "schema", "max_thinking_tokens"):
            setattr(config, key, value)
    if settings.temperature == 0 or settings.do_sample is False:
        config.do_sample = False
        config.temperature, config.top_p, config.top_k = 1.0, 1.0, 50
    elif settings.temperature is not None or settings.top_p is not None or settings.top_k is not None:
        config.do_sample = True
    return config  # stop strings are not set here: see StopStrings


def seed_everything(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)


class TokenClock(BaseStreamer):
    """Records when the first generated token arrives (generate's first `put` is the prompt)."""

    def __init__(self) -> None:
        self.first_token_time: float | None = None
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
        elif self.first_token_time is None:
            self.first_token_time = time.perf_counter()

    def end(self) -> None:
        pass


class TextClock(TextIteratorStreamer):
    """A TextIteratorStreamer that also records the first token's time and hides structural tokens."""

    def __init__(self, tokenizer: Any, hidden_ids: set[int]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=False)
        self.hidden_ids = hidden_ids
        self.first_token_time: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.next_tokens_are_prompt:
            super().put(value)
            return
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        kept = [token for token in value.flatten().tolist() if token not in self.hidden_ids]
        if kept:
            super().put(torch.tensor(kept))


class StopSignal(StoppingCriteria):
    """Ends generation when its event is set (the widget's Stop button, a disconnected client)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class StopStrings(StoppingCriteria):
    """Ends a row once one of `stops` appears in its text generated after `prompt_length` tokens.

    Hand-written instead of transformers' `stop_strings` (StopStringCriteria), whose set-up walks the
    whole vocabulary for every stop string: seconds of model time per request for a few long ones.
    This decodes, each step, only the tail that can hold a stop string (a character is at most 4
    byte-level tokens), hiding structural tokens as the answer does; the answer itself is still cut
    by `VLM.decode_answer`, so this only decides when generating can end.
    """

    def __init__(self, tokenizer: Any, stops: list[str], prompt_length: int, hidden_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.prompt_length = prompt_length
        self.hidden_ids = hidden_ids
        self.window = 4 * max(len(stop) for stop in stops) + 4

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        done = []
        for row in input_ids[:, start:].tolist():
            text = self.tokenizer.decode([token for token in row if token not in self.hidden_ids])
            done.append(any(stop in text for stop in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class ThinkingBudget:
    """A logits processor for one row ([1, vocab] scores): once the thinking has `budget` tokens, only
    `</think>` may come next, and the answer follows, as GLM-V's reference thinking-budget processor
    does. `cut` records that it ended the thinking. Thinking opens at the model's `<think>` (GLM-4.6V
    writes it itself after the generation prompt) or at the prompt's end when the prompt opened it.
    """

    def __init__(
        self, budget: int, prompt_length: int, think_start_id: int, think_end_id: int, opened: bool
    ) -> None:
        self.budget = budget
        self.prompt_length = prompt_length
        self.start_id, self.end_id = think_start_id, think_end_id
        self.opened = opened
        self.cut = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[0, self.prompt_length :].tolist()
        if self.end_id in generated:
            return scores
        if not self.opened and self.start_id not in generated:
            return scores
        thought = len(generated) if self.opened else len(generated) - generated.index(self.start_id) - 1
        if thought < self.budget:
            return scores
        self.cut = True
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.end_id] = 0.0
        return forced


class Interrupted(Exception):
    """Raised inside the network by `interruptible` to abandon a prefill that was asked to stop."""


@contextlib.contextmanager
def interruptible(model: torch.nn.Module, event: threading.Event | None, clock: Any):
    """Let `event` abort the prompt's forward pass (prefill, image prefix) between two layers.

    A StoppingCriteria is only asked after a token is generated, so without this a long prompt would
    hold the model past any deadline. Every block of every ModuleList (decoder layers, vision blocks)
    checks the event before running; once `clock` has seen the first token, StopSignal takes over
    (it keeps the tokens generated so far, which an exception would lose).
    """
    if event is None:
        yield
        return

    def check(module: torch.nn.Module, args: Any) -> None:
        if event.is_set() and clock.first_token_time is None:
            raise Interrupted

    blocks = [
        block for module in model.modules() if isinstance(module, torch.nn.ModuleList) for block in module
    ]
    handles = [block.register_forward_pre_hook(check) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Stream:
    """Text pieces of an answer as they are generated; `answer` holds the final Answer afterwards.

    Iterate it (`for piece in vlm.stream(...)`), call `stop()` to end generation early (what was
    generated is kept), and read `answer` (blocks until generation ends). With `run`, the stream runs
    it in its own thread; without, whoever generates (a batch of rows, `glmlab.rows`) calls `finish`
    or `fail`.
    """

    def __init__(
        self,
        run: Callable[[TextClock, threading.Event], Answer] | None,
        streamer: TextClock,
        stops: list[str] | None = None,
    ) -> None:
        self.clock = streamer
        self._stops = stops or []
        self.stop_event = threading.Event()
        self._done = threading.Event()
        self._done_callbacks: list[Callable[[], None]] = []
        self._callbacks_lock = threading.Lock()
        self._answer: Answer | None = None
        self._error: BaseException | None = None
        self._consumed = False
        self.text = ""
        if run is not None:
            threading.Thread(target=self._work, args=(run,), daemon=True, name="glmlab-generate").start()

    def _work(self, run: Callable[[TextClock, threading.Event], Answer]) -> None:
        try:
            self.finish(run(self.clock, self.stop_event))
        except BaseException as error:  # re-raised in the consumer's thread
            self.fail(error)

    def finish(self, answer: Answer) -> None:
        """The answer is complete (its streamer has ended)."""
        self._answer = answer
        self._set_done()

    def fail(self, error: BaseException) -> None:
        """Generation failed: readers get `error`."""
        self._error = error
        self.clock.end()
        self._set_done()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the generating thread) once generation has ended; now if it has."""
        with self._callbacks_lock:
            if not self._done.is_set():
                self._done_callbacks.append(callback)
                return
        callback()

    def _set_done(self) -> None:
        with self._callbacks_lock:
            self._done.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            callback()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def __iter__(self) -> Iterator[str]:
        if not self._consumed:
            held, stopped = "", False
            for piece in self.clock:  # read to the end even after a stop string: generation ends there
                if stopped or not piece:
                    continue
                ready, held, stopped = split_at_stop(held + piece, self._stops)
                if ready:
                    self.text += ready
                    yield ready
            if held and not stopped:
                self.text += held
                yield held
            self._consumed = True
        self._done.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until generation has ended (the model is done with it), whether or not it was read."""
        return self._done.wait(timeout)

    @property
    def answer(self) -> Answer:
        for _ in self:
            pass
        assert self._answer is not None
        return self._answer


def split_at_stop(text: str, stops: list[str]) -> tuple[str, str, bool]:
    """(text safe to show, tail held back, whether a stop string was reached).

    Hand-written: transformers' streamers show a stop string before generation halts on it, while the
    final Answer cuts it off; holding back any tail that could start a stop string keeps them equal.
    """
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    if found:
        return text[: min(found)], "", True
    held = max((n for stop in stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)
    return text[: len(text) - held], text[len(text) - held :], False
