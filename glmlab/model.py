"""`VLM`: a loaded GLM-V model that answers questions about images.

It owns the network, the processor and one lock: generation, adapter switching and the Glm4v rope
offset (`model.model.rope_deltas`, state on the model object) are not safe to share across threads,
so every call that touches them runs under the lock. Prompts are built by `glmlab.prompts`, settings
by `glmlab.generation`, and answers parsed by `glmlab.answer`; this module only wires them together.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from glmlab import batching, prompts, rows, tools
from glmlab.adapters import AdapterSet
from glmlab.answer import Answer, Timing, Usage
from glmlab.errors import GlmlabError, InputError, ModelLoadError
from glmlab.generation import (
    STRUCTURAL_TOKENS,
    GenerationSettings,
    Interrupted,
    StopSignal,
    StopStrings,
    Stream,
    TextClock,
    ThinkingBudget,
    TokenClock,
    generation_config,
    interruptible,
    seed_everything,
)
from glmlab.interface import DEFAULT_ADAPTER, AdapterChoice
from glmlab.prefix_cache import (
    DEFAULT_CACHE_BYTES,
    PrefixCache,
    PrefixEntry,
    compute_prefix,
    generate_inputs_from_prefix,
    image_digest,
    prefix_length,
    shared_prefix_inputs,
)
from glmlab.structured import Grammars, Schema

logger = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One prepared request: the rendered text, its images, and the processor's tensors."""

    text: str
    images: list
    features: Any

    @property
    def prompt_tokens(self) -> int:
        return int(self.features["attention_mask"].sum())

    @functools.cached_property
    def image_digest(self) -> str:
        """The images' content hash (`prefix_cache.image_digest`), computed once per prompt."""
        return image_digest(self.images)


class VLM:
    """A GLM-V model with its processor. Create it with `glmlab.load(...)`."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str,
        source: str,
        max_image_pixels: int | None = None,
        allow_urls: bool = False,
        quantized: str | None = None,
        prefix_cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.source = source
        self.quantized = quantized
        self.allow_urls = allow_urls
        self.max_image_pixels = max_image_pixels or processor.image_processor.size["longest_edge"] // 2
        self._adapters = AdapterSet(lambda: self.model, name)
        self.lock = threading.RLock()
        self.image_token_id = model.config.image_token_id
        self.end_of_image_id = model.config.image_end_token_id
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.video_options: dict[str, Any] = {}  # glmlab.videos.VideoOptions fields (fps, max_frames, limits)
        self._grammars: Grammars | None = None  # built at the first schema-constrained call
        self.eos_token_ids = _eos_ids(model)
        self.hidden_token_ids = self.eos_token_ids | {
            token_id
            for token_id in self.tokenizer.convert_tokens_to_ids(list(STRUCTURAL_TOKENS))
            if token_id is not None and token_id != self.tokenizer.unk_token_id
        }

    def __repr__(self) -> str:
        adapters = f", adapters={list(self.adapters)}" if self.adapters else ""
        return f"VLM({self.name!r}, device={self.device}, dtype={self.dtype}{adapters})"

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embeddings' device. Under a device map (glmlab.load's
        device="auto"/max_memory) weights offloaded to disk sit on "meta" and run on the CPU, and
        accelerate's hooks move inputs on from there to each layer's device."""
        weight = self.model.get_input_embeddings().weight
        return torch.device("cpu") if weight.device.type == "meta" else weight.device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.model.parameters() if p.is_floating_point()).dtype

    @property
    def context_length(self) -> int:
        """Prompt plus new tokens the model can attend to (its text config's max_position_embeddings)."""
        return int(self.model.config.get_text_config().max_position_embeddings)

    # ---- asking --------------------------------------------------------------------------------

    def ask(
        self,
        images: Any,
        question: str,
        *,
        system: str | None = None,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        cache: bool = True,
        **gen: Any,
    ) -> Answer:
        """Answer one question about zero or more images (any input `glmlab.images.to_pil` takes).

        thinking: None keeps the model's default (on for GLM-4.6V), False renders `/nothink`.
        adapter: a loaded adapter's name, None for the base model; default the active adapter.
        cache: reuse the image prefix's KV cache across questions about the same images.
        gen: max_new_tokens, temperature (0 = greedy), top_p, top_k, repetition_penalty, seed, stop.
        """
        messages = prompts.question_messages(images, question, system)
        return self.chat(
            messages,
            thinking=thinking,
            adapter=adapter,
            max_image_pixels=max_image_pixels,
            cache=cache,
            **gen,
        )

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        cache: bool | PrefixCache = True,
        max_model_len: int | None = None,
        **gen: Any,
    ) -> Answer:
        """Answer the last turn of a conversation (OpenAI or transformers message format).

        cache: True uses the model's prefix cache, False none, a PrefixCache that one (a session's).
        max_model_len: a lower limit than the model's context on prompt + new tokens (see `fit_context`).
        """
        request = self.open_request(
            messages,
            thinking=thinking,
            adapter=adapter,
            max_image_pixels=max_image_pixels,
            max_model_len=max_model_len,
            **gen,
        )
        cache_used = self._cache_for(cache)
        return self._generate(
            request.prompt, request.settings, request.config, adapter, TokenClock(), None, cache_used
        )

    def batch(
        self,
        items: list[Any],
        *,
        batch_size: int = 8,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        progress: bool = False,
        cache: bool = True,
        **gen: Any,
    ) -> list[Answer]:
        """Answer many items in batches; answers come back in input order.

        items: (images, question) tuples, {"images", "question", "system"} or {"messages"} dicts.
        A bad item gets an Answer with finish_reason "error" and `error` set; the others still run.
        Each group runs as rows of one `generate` call (`generate_rows`, as the server's batches do), so
        every item keeps its own sampling (seeded by `seed`), stop strings and timing (its own TTFT).
        cache: items of a group about the same images share one prefill of them (and the prefix cache).
        """
        from tqdm.auto import tqdm

        settings = GenerationSettings(**gen)
        self._check_requested_adapter(adapter)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r}: must be an integer >= 1.")
        prepared = [
            self._prepare_item(index, item, thinking, max_image_pixels, settings)
            for index, item in enumerate(items)
        ]
        answers: list[Answer | None] = [None] * len(items)
        for item in prepared:
            if item.error is not None:
                answers[item.index] = Answer(text="", finish_reason="error", error=item.error)
        groups = batching.group_for_padding([item for item in prepared if item.error is None], batch_size)
        for group in tqdm(groups, desc="batches", disable=not progress):
            answered = self._generate_batch(group, settings, adapter, cache)
            for item, answer in zip(group, answered, strict=True):
                answers[item.index] = answer
        return answers  # type: ignore[return-value]

    def session(self, images: Any, *, system: str | None = None, **options: Any) -> Session:
        """A handle for many questions about the same images: images load once, their prefix is kept."""
        return Session(self, images, system, options)

    def stream(self, images: Any, question: str, *, system: str | None = None, **options: Any) -> Stream:
        """Like `ask`, but returns a `Stream` of text pieces as they are generated (then `.answer`)."""
        return self.chat_stream(prompts.question_messages(images, question, system), **options)

    def chat_stream(
        self,
        messages: list[dict[str, Any]],
        *,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        cache: bool = True,
        max_model_len: int | None = None,
        **gen: Any,
    ) -> Stream:
        """Like `chat`, streamed. Bad input (a prompt over the context too) raises here, before any
        thread starts."""
        request = self.open_request(
            messages,
            thinking=thinking,
            adapter=adapter,
            max_image_pixels=max_image_pixels,
            max_model_len=max_model_len,
            **gen,
        )
        cache = self._cache_for(cache)
        return Stream(
            lambda clock, stop: self._generate(
                request.prompt, request.settings, request.config, adapter, clock, stop, cache
            ),
            self.text_clock(),
            request.settings.stop,
        )

    def open_request(
        self,
        messages: list[dict[str, Any]],
        *,
        thinking: bool | None = None,
        adapter: AdapterChoice = DEFAULT_ADAPTER,
        max_image_pixels: int | None = None,
        max_model_len: int | None = None,
        **gen: Any,
    ) -> rows.Request:
        """A checked, prepared request (settings, adapter, prompt, context fit): bad input raises here."""
        settings = GenerationSettings(**gen)
        self._check_requested_adapter(adapter)
        if settings.schema is not None:  # a schema the grammar engine refuses fails here, as bad input
            self.grammars.compiled(Schema.of(settings.schema))
        prompt = self.prepare(
            messages,
            thinking=thinking,
            max_image_pixels=max_image_pixels,
            tools=self._template_tools(settings),
        )
        config = self.fit_context(prompt.prompt_tokens, settings, max_model_len)
        return rows.Request(prompt, settings, config, adapter)

    def text_clock(self) -> TextClock:
        """A streamer for one answer: text pieces, the first token's time, structural tokens hidden."""
        return TextClock(self.tokenizer, self.hidden_token_ids)

    def fit_context(
        self, prompt_tokens: int, settings: GenerationSettings, max_model_len: int | None = None
    ) -> Any:
        """The call's GenerationConfig, checked against the context before any prefill runs.

        A prompt plus max_new_tokens over the limit (the model's context, or `max_model_len` if lower)
        raises InputError saying both numbers; when the caller set no max_new_tokens, the default
        shrinks to what fits instead (as vLLM does).
        """
        config = generation_config(self.model.generation_config, settings)
        limit = min(self.context_length, max_model_len or self.context_length)
        what = (
            f"the max_model_len limit of {limit:,} tokens"
            if limit < self.context_length
            else f"the {limit:,}-token context of {self.name}"
        )
        if prompt_tokens >= limit:
            raise InputError(
                f"the prompt has {prompt_tokens:,} tokens, which leaves no room under {what}; "
                "shorten it or send fewer or smaller images (max_image_pixels)."
            )
        if prompt_tokens + config.max_new_tokens > limit:
            if settings.max_new_tokens is not None:
                raise InputError(
                    f"the prompt has {prompt_tokens:,} tokens and max_new_tokens (max_tokens) asks for "
                    f"{config.max_new_tokens:,} more: {prompt_tokens + config.max_new_tokens:,} in all, "
                    f"over {what}; ask for at most {limit - prompt_tokens:,} new tokens or shorten the "
                    "prompt."
                )
            config.max_new_tokens = limit - prompt_tokens
        return config

    def prepare(
        self,
        messages: list[dict[str, Any]],
        *,
        thinking: bool | None = None,
        max_image_pixels: int | None = None,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> Prompt:
        """Render and tokenise a conversation with the checkpoint's own template and processor."""
        conversation = prompts.to_conversation(
            messages, allow_urls=self.allow_urls, video_options=self.video_options
        )
        text = prompts.render(
            self.processor,
            conversation.messages,
            thinking=thinking,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
        )
        features = prompts.encode(
            self.processor,
            [text],
            [conversation.images],
            max_image_pixels=max_image_pixels or self.max_image_pixels,
            videos=[conversation.videos],
        )
        return Prompt(text, conversation.images, features)

    # ---- generation ----------------------------------------------------------------------------

    def _generate(
        self,
        prompt: Prompt,
        settings: GenerationSettings,
        config: Any,
        adapter: Any,
        clock: Any,
        stop: threading.Event | None,
        prefix_cache: PrefixCache | None = None,
    ) -> Answer:
        """Generate under the lock. `stop` (when given) ends it early, also during the prefill."""
        inputs = self._to_device(prompt.features)
        criteria = [StopSignal(stop)] if stop is not None else []
        with (
            self.lock,
            self.using_adapter(adapter),
            torch.inference_mode(),
            interruptible(self.model, stop, clock),
        ):
            seed_everything(settings.seed)
            start = time.perf_counter()
            try:
                if prefix_cache is not None:
                    inputs = self._continue_from_prefix(inputs, prompt, prefix_cache)
                if settings.stop:
                    criteria.append(
                        StopStrings(
                            self.tokenizer, settings.stop, inputs["input_ids"].shape[1], self.hidden_token_ids
                        )
                    )
                processors = self._row_processors(settings, prompt, inputs["input_ids"].shape[1])
                output = self.model.generate(
                    **inputs,
                    generation_config=config,
                    streamer=clock,
                    stopping_criteria=criteria or None,
                    logits_processor=LogitsProcessorList(processors) if processors else None,
                )
                new_ids = output[0, inputs["input_ids"].shape[1] :].tolist()
            except Interrupted:  # stopped before the first token: nothing to keep
                clock.end()
                new_ids = []
            end = time.perf_counter()
        answer = self.decode_answer(new_ids, prompt, settings, start, clock.first_token_time, end, adapter)
        answer.thinking_truncated = any(getattr(processor, "cut", False) for processor in processors)
        return answer

    def _continue_from_prefix(
        self, inputs: dict[str, torch.Tensor], prompt: Prompt, prefix_cache: PrefixCache
    ):
        """Generate kwargs that start from the cached image prefix (computed now on a miss)."""
        length = self._prefix_length(prompt)
        if length == 0:
            return inputs
        entry = self._prefix_entry(inputs, prompt, length, self.active_adapter, prefix_cache)
        return generate_inputs_from_prefix(self.model, inputs, entry)

    def _prefix_length(self, prompt: Prompt) -> int:
        """Tokens of the prompt's image prefix; 0 without images (the cache keys images, not videos)."""
        if "video_grid_thw" in prompt.features:
            return 0
        return prefix_length(prompt.features["input_ids"], self.end_of_image_id)

    def _prefix_key(self, prompt: Prompt, length: int, adapter: str | None) -> tuple:
        """What a prefix's keys depend on: the weights (adapter, in-place changes, dtype), the images'
        pixels and grid, and the prefix's tokens."""
        return (
            adapter,
            self._weights_version(),
            str(self.dtype),
            prompt.image_digest,
            str(prompt.features["image_grid_thw"].tolist()),
            tuple(prompt.features["input_ids"][0, :length].tolist()),
        )

    def _prefix_entry(
        self,
        inputs: dict[str, torch.Tensor],
        prompt: Prompt,
        length: int,
        adapter: str | None,
        cache: PrefixCache,
    ) -> PrefixEntry:
        """The prompt's prefix from `cache`, computed now (from one prompt's `inputs`) on a miss."""
        key = self._prefix_key(prompt, length, adapter)
        entry = cache.get(key)
        if entry is None:
            entry = compute_prefix(self.model, inputs, length)
            cache.put(key, entry)
        return entry

    def _cache_for(self, cache: bool | PrefixCache) -> PrefixCache | None:
        if isinstance(cache, PrefixCache):
            return cache
        return self.prefix_cache if cache else None

    def _check_requested_adapter(self, adapter: Any) -> None:
        """A bad adapter name fails the call up front (not inside a batch's or a stream's fallback)."""
        if adapter is not DEFAULT_ADAPTER and adapter is not None:
            self._check_adapter(adapter)

    def _weights_version(self) -> int:
        """Changes whenever a weight is modified in place (an optimiser step, torch's tensor version
        counters) or an adapter is loaded or unloaded, so no prefix outlives the weights it came from
        (a session's own cache included)."""
        return sum(parameter._version for parameter in self.model.parameters()) + self._adapters.version

    def _prepare_item(
        self,
        index: int,
        item: Any,
        thinking: bool | None,
        max_image_pixels: int | None,
        settings: GenerationSettings | None = None,
    ) -> batching.BatchItem:
        """A prepared batch item, or its error (also a prompt over the context when `settings` is given)."""
        try:
            messages = batching.item_messages(item)
            tools = self._template_tools(settings) if settings is not None else None
            prompt = self.prepare(messages, thinking=thinking, max_image_pixels=max_image_pixels, tools=tools)
            if settings is not None:
                self.fit_context(prompt.prompt_tokens, settings)
        except GlmlabError as error:
            return batching.BatchItem(index, error=str(error))
        return batching.BatchItem(index, prompt)

    def _generate_batch(
        self, group: list[batching.BatchItem], settings: GenerationSettings, adapter: Any, cache: bool
    ) -> list[Answer]:
        """A group as rows of one batch (`generate_rows`, the server's path too): each row samples with
        its own generator seeded by `settings.seed`, so an item answers as it would alone; an item that
        fails gets an Answer with the error, the others keep theirs."""
        batch = [
            rows.Row.open(
                rows.Request(
                    item.prompt,
                    settings,
                    self.fit_context(item.prompt.prompt_tokens, settings),
                    adapter,
                    cache,
                ),
                self.text_clock(),
                settings.seed,
            )
            for item in group
        ]
        self.generate_rows(batch)
        answers = []
        for row in batch:
            try:
                answers.append(row.stream.answer)
            except (GlmlabError, RuntimeError, ValueError) as error:
                answers.append(
                    Answer(text="", finish_reason="error", error=f"{type(error).__name__}: {error}")
                )
        return answers

    # ---- rows: independent requests in one generate call (the server's batches; glmlab.rows) --------

    def can_share_batch(self, adapters: list[AdapterChoice]) -> bool:
        """Whether requests for these adapters may run as rows of one batch: always for one adapter,
        for several when peft can mix them (`AdapterSet.can_mix`)."""
        return len({self._resolved_adapter(adapter) for adapter in adapters}) <= 1 or self._adapters.can_mix()

    def generate_rows(self, batch: list[rows.Row]) -> None:
        """Generate independent requests together; each row's stream gets its own tokens and Answer.

        Rows stopped while they waited finish empty; a row whose adapter is gone fails alone; a lone
        row takes the one-request path (with the prefix cache); a batch that fails before its first
        token answers its rows one by one, so one bad row loses only itself. Runs under the lock, so
        the adapters checked and resolved here (and the shared prefix chosen) are the ones generating.
        """
        with self.lock:
            live = []
            for row in batch:
                if not row.started.is_set():
                    row.mark_started()
                try:
                    self._check_requested_adapter(row.request.adapter)
                except GlmlabError as error:
                    row.stream.fail(error)
                    continue
                if row.stopped:
                    now = time.perf_counter()
                    rows.finished_answer(row, self._row_answer(row, [], now, now))
                else:
                    live.append(row)
            if len(live) == 1:
                self._generate_row_alone(live[0])
            elif live:
                self._generate_row_batch(live)

    def _generate_row_alone(self, row: rows.Row) -> None:
        request = row.request
        settings = request.settings
        if row.seed != settings.seed:
            settings = dataclasses.replace(settings, seed=row.seed)
        try:
            answer = self._generate(
                request.prompt,
                settings,
                request.config,
                request.adapter,
                row.clock,
                row.stream.stop_event,
                self.prefix_cache if request.cache else None,
            )
        except BaseException as error:  # the row's reader re-raises it
            row.stream.fail(error)
            return
        row.stream.finish(answer)

    def _generate_row_batch(self, live: list[rows.Row]) -> None:
        features = [row.request.prompt.features for row in live]
        shared = self._shared_prefix_length(live)
        if shared:
            collated = batching.collate_after_prefix(features, shared, self.tokenizer.pad_token_id)
        else:
            collated = batching.collate_left_padded(features, self.tokenizer.pad_token_id)
        inputs = self._to_device(collated)
        width = inputs["input_ids"].shape[1]
        pads = [(shared, width - feature["input_ids"].shape[1]) for feature in features]
        start = time.perf_counter()

        constraints = [self._row_processors(row.request.settings, row.request.prompt, width) for row in live]

        def finish(index: int, new_ids: list[int]) -> None:
            answer = self._row_answer(live[index], new_ids, start, time.perf_counter())
            answer.thinking_truncated = any(
                getattr(processor, "cut", False) for processor in constraints[index]
            )
            rows.finished_answer(live[index], answer)

        stops = rows.RowStops(live, width, self.eos_token_ids, self._visible_text, finish)
        try:
            with (
                self.lock,
                self._row_adapters(live),
                torch.inference_mode(),
                interruptible(self.model, rows.AllStopped(live), live[0].clock),
            ):
                if shared:
                    inputs = self._continue_rows_from_prefix(live, inputs, shared)
                output = self.model.generate(
                    **inputs,
                    generation_config=self._batch_config(live),
                    logits_processor=LogitsProcessorList([rows.RowSampler(live, pads, constraints)]),
                    stopping_criteria=StoppingCriteriaList([stops]),
                )
        except Interrupted:  # every row was stopped during the prefill
            output = None
        except (RuntimeError, ValueError) as error:
            if any(row.clock.first_token_time is not None for row in live):
                for index, row in enumerate(live):
                    if not stops.done[index]:
                        row.stream.fail(error)
                return
            logger.warning("a batch of %d rows failed (%s); generating them one by one", len(live), error)
            for row in live:
                self._generate_row_alone(row)
            return
        for index in range(len(live)):
            if not stops.done[index]:
                finish(index, [] if output is None else output[index, width:].tolist())

    def _shared_prefix_length(self, live: list[rows.Row]) -> int:
        """The image prefix every row shares, to be computed once for the batch: rows share one when
        their prefix keys (`_prefix_key`: adapter, weights, images, prefix tokens) are equal; 0 when
        they do not (or a row asked for no cache)."""
        length = self._prefix_length(live[0].request.prompt)
        if length == 0:
            return 0
        keys = set()
        for row in live:
            prompt = row.request.prompt
            if not row.request.cache or self._prefix_length(prompt) != length:
                return 0
            keys.add(self._prefix_key(prompt, length, self._resolved_adapter(row.request.adapter)))
        return length if len(keys) == 1 else 0

    def _continue_rows_from_prefix(
        self, live: list[rows.Row], inputs: dict[str, torch.Tensor], length: int
    ) -> dict[str, Any]:
        """`generate` kwargs for rows after their shared prefix, taken from (or put into) the prefix cache."""
        first = live[0].request.prompt
        adapter = self._resolved_adapter(live[0].request.adapter)
        entry = self._prefix_entry(self._to_device(first.features), first, length, adapter, self.prefix_cache)
        return shared_prefix_inputs(self.model, inputs, entry, len(live))

    def _batch_config(self, live: list[rows.Row]) -> Any:
        """One GenerationConfig for the batch: greedy over RowSampler's choices, long enough for the
        longest row (each row's own limits are RowStops')."""
        config = copy.deepcopy(live[0].request.config)
        config.do_sample = False
        config.temperature, config.top_p, config.top_k, config.repetition_penalty = 1.0, 1.0, 50, 1.0
        config.max_new_tokens = max(row.request.config.max_new_tokens for row in live)
        return config

    def _row_adapters(self, live: list[rows.Row]):
        names = [self._resolved_adapter(row.request.adapter) for row in live]
        if len(set(names)) == 1:
            return self.using_adapter(names[0])
        return self._adapters.mixed(names)

    def _resolved_adapter(self, adapter: AdapterChoice) -> str | None:
        return self.active_adapter if adapter is DEFAULT_ADAPTER else adapter

    def _row_answer(self, row: rows.Row, new_ids: list[int], start: float, end: float) -> Answer:
        request = row.request
        return self.decode_answer(
            new_ids, request.prompt, request.settings, start, row.clock.first_token_time, end, request.adapter
        )

    def _template_tools(self, settings: GenerationSettings) -> list[dict[str, Any]] | None:
        return tools.template_tools(settings.tools, settings.tool_choice)

    def _row_processors(self, settings: GenerationSettings, prompt: Prompt, prompt_length: int) -> list[Any]:
        """One row's own logits processors: its thinking budget, then its schema (glmlab.structured)."""
        processors: list[Any] = []
        text = prompt.text.rstrip()
        thinking_done = text.endswith("</think>")  # thinking off: the template closed it
        if settings.max_thinking_tokens is not None and not thinking_done:
            start_id, end_id = self.tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
            opened = text.endswith("<think>")
            processors.append(
                ThinkingBudget(settings.max_thinking_tokens, prompt_length, start_id, end_id, opened)
            )
        if settings.schema is not None:
            processors.append(
                self.grammars.processor(Schema.of(settings.schema), prompt_length, thinking_done)
            )
        return processors

    @property
    def grammars(self) -> Grammars:
        """The model's compiled schemas (xgrammar), built at the first schema-constrained call."""
        if self._grammars is None:
            vocab_size = self.model.config.get_text_config().vocab_size
            self._grammars = Grammars(self.tokenizer, vocab_size, self.eos_token_ids)
        return self._grammars

    def _visible_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode([token for token in ids if token not in self.hidden_token_ids])

    def decode_answer(
        self,
        new_ids: list[int],
        prompt: Prompt,
        settings: GenerationSettings,
        start: float,
        first_token: float | None,
        end: float,
        adapter: Any,
    ) -> Answer:
        """Turn generated ids into an Answer: cut at the first eos, hide structural tokens, apply stops."""
        finish_reason, completion = "length", new_ids
        for index, token in enumerate(new_ids):
            if token in self.eos_token_ids:
                finish_reason, completion = "stop", new_ids[:index]
                break
        kept = [token for token in completion if token not in self.hidden_token_ids]
        raw = self.tokenizer.decode(kept, skip_special_tokens=False)
        for stop in settings.stop or []:
            if stop in raw:
                raw, finish_reason = raw.split(stop, 1)[0], "stop"
        counted = len(completion) + (finish_reason == "stop" and len(completion) < len(new_ids))
        types = prompt.features.get("mm_token_type_ids")
        video_tokens = 0 if types is None else int((types == 2).sum())  # frames' image tokens in a video
        usage = Usage(
            prompt_tokens=prompt.prompt_tokens,
            completion_tokens=counted,
            image_tokens=int((prompt.features["input_ids"] == self.image_token_id).sum()) - video_tokens,
            video_tokens=video_tokens,
        )
        timing = Timing.from_times(start, first_token, end, counted)
        name = self.active_adapter if adapter is DEFAULT_ADAPTER else adapter
        answer = Answer.from_raw(
            raw, usage=usage, timing=timing, finish_reason=finish_reason, model=name or self.name
        )
        if settings.schema is not None:
            answer.parsed, answer.error = Schema.of(settings.schema).parse(answer.text)
        if settings.forced_tool_call:
            call = answer.parsed if isinstance(answer.parsed, dict) else None
            answer.tool_calls = [tools.new_call(call["name"], call["arguments"])] if call else []
            answer.text = ""
        elif self._template_tools(settings):
            answer.text, answer.tool_calls = tools.parse_tool_calls(answer.text, settings.tools)
        if answer.tool_calls:
            answer.finish_reason = "tool_calls"
        return answer

    def _to_device(self, features: Any) -> dict[str, torch.Tensor]:
        inputs = {key: value.to(self.device) for key, value in features.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return inputs

    # ---- adapters (glmlab.adapters.AdapterSet; here the lock and the prefix cache) -----------------

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> the folder each was loaded from."""
        return self._adapters.paths

    @property
    def active_adapter(self) -> str | None:
        """The adapter every call uses unless it names another (None: the base model)."""
        return self._adapters.active

    def load_adapter(
        self, path: str | Path, name: str | None = None, *, activate: bool = True, replace: bool = False
    ) -> str:
        """Load a PEFT LoRA adapter (safetensors only) under `name` (default: the folder's name).

        A transaction: the folder is checked before the model is touched (`check_for_loading`: plain LoRA,
        no initialisation that rewrites base weights, no structural option, rank at most MAX_LORA_RANK,
        every tensor's name and shape against this model), loaded under a fresh internal name, and only
        then put under `name` (replacing the adapter of that name when `replace`). On any failure the
        model, its adapters and the active one are exactly as before, and the error is an AdapterError
        that says why. Several adapters stay loaded side by side; `self.model` stays the plain model class.
        """
        path = Path(path).expanduser()
        with self.lock:
            name = self._adapters.load(path, name or path.name, activate=activate, replace=replace)
            self.prefix_cache.clear()  # their keys can no longer match: free the memory
        logger.info("loaded adapter %r from %s", name, path)
        return name

    def set_adapter(self, name: str | None) -> None:
        """Make `name` the adapter every call uses by default; None for the base model."""
        with self.lock:
            self._adapters.activate(name)

    def unload_adapter(self, name: str) -> None:
        """Remove an adapter; with the last one gone the model is exactly the base model again."""
        with self.lock:
            self._adapters.unload(name)
            self.prefix_cache.clear()

    @contextlib.contextmanager
    def using_adapter(self, adapter: AdapterChoice = DEFAULT_ADAPTER):
        """Run a block with one adapter (or None: the base model), then restore the active one."""
        if adapter is DEFAULT_ADAPTER or adapter == self.active_adapter:
            yield
            return
        with self.lock:
            previous = self.active_adapter
            self.set_adapter(adapter)
            try:
                yield
            finally:
                self.set_adapter(previous)

    def _check_adapter(self, name: str) -> None:
        self._adapters.check(name)


class Session:
    """Many questions about the same images (`vlm.session(images)`), their prefix computed once.

    The session keeps its own prefix cache (never evicted by other calls) and its loaded images.
    """

    def __init__(self, vlm: VLM, images: Any, system: str | None, options: dict[str, Any]) -> None:
        from glmlab.images import to_pil_list

        self.vlm = vlm
        self.images = to_pil_list(images, allow_urls=vlm.allow_urls)
        self.system = system
        self.options = options
        self.prefix_cache = PrefixCache(max_bytes=2**62)

    def ask(self, question: str, **options: Any) -> Answer:
        """`vlm.chat` on the session's images and system prompt, with the session's own prefix cache."""
        messages = prompts.question_messages(self.images, question, self.system)
        return self.vlm.chat(messages, **{**self.options, **options, "cache": self.prefix_cache})


def _eos_ids(model: Any) -> set[int]:
    ids: set[int] = set()
    for source in (
        model.generation_config.eos_token_id,
        getattr(model.config.get_text_config(), "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    if not ids:
        raise ModelLoadError("the checkpoint defines no eos_token_id; set it in generation_config.json.")
    return ids
