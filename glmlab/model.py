"""`VLM`: a loaded GLM-V model that answers questions about images.

It owns the network, the processor and one lock: generation, adapter switching and the Glm4v rope
offset (`model.model.rope_deltas`, state on the model object) are not safe to share across threads,
so every call that touches them runs under the lock. Prompts are built by `glmlab.prompts`, settings
by `glmlab.generation`, and answers parsed by `glmlab.answer`; this module only wires them together.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glmlab import batching, prompts
from glmlab.answer import Answer, Timing, Usage
from glmlab.errors import AdapterError, GlmlabError, InputError, ModelLoadError
from glmlab.generation import (
    STRUCTURAL_TOKENS,
    GenerationSettings,
    StopSignal,
    Stream,
    TextClock,
    TokenClock,
    generation_config,
    seed_everything,
)
from glmlab.prefix_cache import (
    DEFAULT_CACHE_BYTES,
    PrefixCache,
    compute_prefix,
    generate_inputs_from_prefix,
    image_digest,
    prefix_length,
)

logger = logging.getLogger(__name__)
_ACTIVE = object()  # "use the adapter set with set_adapter"


@dataclass
class Prompt:
    """One prepared request: the rendered text, its images, and the processor's tensors."""

    text: str
    images: list
    features: Any

    @property
    def prompt_tokens(self) -> int:
        return int(self.features["attention_mask"].sum())


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
        self.adapters: dict[str, str] = {}
        self.active_adapter: str | None = None
        self._peft: Any = None  # the PeftModel that manages injected adapters, once one is loaded
        # adapter name -> the name peft knows it by: each load gets its own, so a replacement is loaded
        # beside the adapter it replaces and swapped in only once it loaded in full
        self._slots: dict[str, str] = {}
        self._slot_ids = itertools.count()
        self._adapter_loads = 0  # bumped by every adapter load/unload: part of each prefix-cache key
        self.lock = threading.RLock()
        self.image_token_id = model.config.image_token_id
        self.end_of_image_id = model.config.image_end_token_id
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
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
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.model.parameters() if p.is_floating_point()).dtype

    # ---- asking --------------------------------------------------------------------------------

    def ask(
        self,
        images: Any,
        question: str,
        *,
        system: str | None = None,
        thinking: bool | None = None,
        adapter: Any = _ACTIVE,
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
        adapter: Any = _ACTIVE,
        max_image_pixels: int | None = None,
        cache: bool | PrefixCache = True,
        **gen: Any,
    ) -> Answer:
        """Answer the last turn of a conversation (OpenAI or transformers message format).

        cache: True uses the model's prefix cache, False none, a PrefixCache that one (a session's).
        """
        settings = GenerationSettings(**gen)
        prompt = self.prepare(messages, thinking=thinking, max_image_pixels=max_image_pixels)
        return self._generate(prompt, settings, adapter, TokenClock(), None, self._cache_for(cache))

    def batch(
        self,
        items: list[Any],
        *,
        batch_size: int = 8,
        thinking: bool | None = None,
        adapter: Any = _ACTIVE,
        max_image_pixels: int | None = None,
        progress: bool = False,
        **gen: Any,
    ) -> list[Answer]:
        """Answer many items in batches; answers come back in input order.

        items: (images, question) tuples, {"images", "question", "system"} or {"messages"} dicts.
        A bad item gets an Answer with finish_reason "error" and `error` set; the others still run.
        All answers of one batch share its timing (TTFT is the batch's first token).
        """
        from tqdm.auto import tqdm

        settings = GenerationSettings(**gen)
        self._check_requested_adapter(adapter)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r}: must be an integer >= 1.")
        prepared = [
            self._prepare_item(index, item, thinking, max_image_pixels) for index, item in enumerate(items)
        ]
        answers: list[Answer | None] = [None] * len(items)
        for item in prepared:
            if item.error is not None:
                answers[item.index] = Answer(text="", finish_reason="error", error=item.error)
        groups = batching.group_for_padding([item for item in prepared if item.error is None], batch_size)
        for group in tqdm(groups, desc="batches", disable=not progress):
            for item, answer in zip(group, self._generate_batch(group, settings, adapter), strict=True):
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
        adapter: Any = _ACTIVE,
        max_image_pixels: int | None = None,
        cache: bool = True,
        **gen: Any,
    ) -> Stream:
        """Like `chat`, streamed. Bad input raises here, before any thread starts."""
        settings = GenerationSettings(**gen)
        self._check_requested_adapter(adapter)
        prompt = self.prepare(messages, thinking=thinking, max_image_pixels=max_image_pixels)
        streamer = TextClock(self.tokenizer, self.hidden_token_ids)
        cache = self._cache_for(cache)
        return Stream(
            lambda clock, stop: self._generate(prompt, settings, adapter, clock, stop, cache),
            streamer,
            settings.stop,
        )

    def prepare(
        self,
        messages: list[dict[str, Any]],
        *,
        thinking: bool | None = None,
        max_image_pixels: int | None = None,
        add_generation_prompt: bool = True,
    ) -> Prompt:
        """Render and tokenise a conversation with the checkpoint's own template and processor."""
        conversation = prompts.to_conversation(messages, allow_urls=self.allow_urls)
        text = prompts.render(
            self.processor,
            conversation.messages,
            thinking=thinking,
            add_generation_prompt=add_generation_prompt,
        )
        features = prompts.encode(
            self.processor,
            [text],
            [conversation.images],
            max_image_pixels=max_image_pixels or self.max_image_pixels,
        )
        return Prompt(text, conversation.images, features)

    # ---- generation ----------------------------------------------------------------------------

    def _generate(
        self,
        prompt: Prompt,
        settings: GenerationSettings,
        adapter: Any,
        clock: Any,
        stop: threading.Event | None,
        prefix_cache: PrefixCache | None = None,
    ) -> Answer:
        config = generation_config(self.model.generation_config, settings)
        inputs = self._to_device(prompt.features)
        criteria = [StopSignal(stop)] if stop is not None else []
        with self.lock, self.using_adapter(adapter), torch.inference_mode():
            seed_everything(settings.seed)
            start = time.perf_counter()
            if prefix_cache is not None:
                inputs = self._continue_from_prefix(inputs, prompt, prefix_cache)
            output = self.model.generate(
                **inputs,
                generation_config=config,
                streamer=clock,
                stopping_criteria=criteria or None,
                tokenizer=self.tokenizer,
            )
            end = time.perf_counter()
        new_ids = output[0, inputs["input_ids"].shape[1] :].tolist()
        return self.decode_answer(new_ids, prompt, settings, start, clock.first_token_time, end, adapter)

    def _continue_from_prefix(
        self, inputs: dict[str, torch.Tensor], prompt: Prompt, prefix_cache: PrefixCache
    ):
        """Generate kwargs that start from the cached image prefix (computed now on a miss)."""
        length = prefix_length(inputs["input_ids"], self.end_of_image_id)
        if length == 0:
            return inputs
        grid = inputs["image_grid_thw"].tolist()
        key = (
            self.active_adapter,
            self._weights_version(),
            str(self.dtype),
            image_digest(prompt.images),
            str(grid),
            tuple(inputs["input_ids"][0, :length].tolist()),
        )
        entry = prefix_cache.get(key)
        if entry is None:
            entry = compute_prefix(self.model, inputs, length)
            prefix_cache.put(key, entry)
        return generate_inputs_from_prefix(self.model, inputs, entry)

    def _cache_for(self, cache: bool | PrefixCache) -> PrefixCache | None:
        if isinstance(cache, PrefixCache):
            return cache
        return self.prefix_cache if cache else None

    def _check_requested_adapter(self, adapter: Any) -> None:
        """A bad adapter name fails the call up front (not inside a batch's or a stream's fallback)."""
        if adapter is not _ACTIVE and adapter is not None:
            self._check_adapter(adapter)

    def _weights_version(self) -> int:
        """Changes whenever a weight is modified in place (an optimiser step, torch's tensor version
        counters) or an adapter is loaded or unloaded, so no prefix outlives the weights it came from
        (a session's own cache included)."""
        return sum(parameter._version for parameter in self.model.parameters()) + self._adapter_loads

    def _prepare_item(
        self, index: int, item: Any, thinking: bool | None, max_image_pixels: int | None
    ) -> batching.BatchItem:
        try:
            messages = batching.item_messages(item)
            prompt = self.prepare(messages, thinking=thinking, max_image_pixels=max_image_pixels)
        except GlmlabError as error:
            return batching.BatchItem(index, error=str(error))
        return batching.BatchItem(index, prompt)

    def _generate_batch(
        self, group: list[batching.BatchItem], settings: GenerationSettings, adapter: Any
    ) -> list[Answer]:
        """One generate call for a group; if it fails, each item alone so one bad item loses only itself."""
        if len(group) == 1:
            return [self._generate_one_safely(group[0], settings, adapter)]
        collated = batching.collate_left_padded(
            [item.prompt.features for item in group], self.tokenizer.pad_token_id
        )
        inputs = self._to_device(collated)
        config = generation_config(self.model.generation_config, settings)
        clock = TokenClock()
        try:
            with self.lock, self.using_adapter(adapter), torch.inference_mode():
                seed_everything(settings.seed)
                start = time.perf_counter()
                output = self.model.generate(
                    **inputs, generation_config=config, streamer=clock, tokenizer=self.tokenizer
                )
                end = time.perf_counter()
        except GlmlabError:
            raise
        except (RuntimeError, ValueError) as error:
            logger.warning("a batch of %d failed (%s); answering its items one by one", len(group), error)
            return [self._generate_one_safely(item, settings, adapter) for item in group]
        width = inputs["input_ids"].shape[1]
        return [
            self.decode_answer(
                output[row, width:].tolist(),
                item.prompt,
                settings,
                start,
                clock.first_token_time,
                end,
                adapter,
            )
            for row, item in enumerate(group)
        ]

    def _generate_one_safely(
        self, item: batching.BatchItem, settings: GenerationSettings, adapter: Any
    ) -> Answer:
        try:
            return self._generate(item.prompt, settings, adapter, TokenClock(), None)
        except (GlmlabError, RuntimeError, ValueError) as error:
            return Answer(text="", finish_reason="error", error=f"{type(error).__name__}: {error}")

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
        usage = Usage(
            prompt_tokens=prompt.prompt_tokens,
            completion_tokens=counted,
            image_tokens=int((prompt.features["input_ids"] == self.image_token_id).sum()),
        )
        timing = Timing.from_times(start, first_token, end, counted)
        name = self.active_adapter if adapter is _ACTIVE else adapter
        return Answer.from_raw(
            raw, usage=usage, timing=timing, finish_reason=finish_reason, model=name or self.name
        )

    def _to_device(self, features: Any) -> dict[str, torch.Tensor]:
        inputs = {key: value.to(self.device) for key, value in features.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    # ---- adapters ------------------------------------------------------------------------------

    def load_adapter(
        self, path: str | Path, name: str | None = None, *, activate: bool = True, replace: bool = False
    ) -> str:
        """Load a PEFT LoRA adapter (safetensors only) under `name` (default: the folder's name).

        A transaction: the folder is checked before the model is touched (`check_for_loading`: plain LoRA,
        no initialisation that rewrites base weights, no structural option, rank at most MAX_LORA_RANK,
        every tensor's name and shape against this model), loaded under a fresh internal name, and only
        then put under `name` (replacing the adapter of that name when `replace`). On any failure the
        model, its adapters and the active one are exactly as before, and the error is an AdapterError
        that says why. Adapters are injected with peft itself (not transformers' wrappers, which demand a
        newer peft), so `self.model` stays the plain model class; several adapters stay loaded side by side.
        """
        from glmlab.adapters import check_for_loading, inspect_adapter

        path = Path(path).expanduser()
        name = name or path.name
        with self.lock:
            if name in self.adapters and not replace:
                raise AdapterError(
                    f"adapter name {name!r} is already loaded (from {self.adapters[name]}); "
                    "unload it first, choose another name, or pass replace=True."
                )
            info = inspect_adapter(path)
            check_for_loading(info, self._base_modules())
            slot = f"glmlab_{next(self._slot_ids)}"
            self._inject(info, slot)
            old = self._slots.get(name)
            self._slots[name], self.adapters[name] = slot, str(path)
            self._adapter_loads += 1
            self.prefix_cache.clear()  # their keys can no longer match: free the memory
            if old is not None:
                self._peft.delete_adapter(old)
            self.set_adapter(name if activate else self.active_adapter)
        logger.info("loaded adapter %r from %s", name, path)
        return name

    def _base_modules(self) -> dict[str, Any]:
        """The base model's modules by name, peft's wrappers seen through to the layers they wrap."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        modules: dict[str, Any] = {}
        inside: list[str] = []  # names of wrappers: what lies under them is peft's, not the model's
        for name, module in self.model.named_modules():
            if any(name.startswith(prefix) for prefix in inside):
                continue
            if isinstance(module, BaseTunerLayer):
                module, _ = module.get_base_layer(), inside.append(name + ".")
            elif isinstance(module, AuxiliaryTrainingWrapper):
                module, _ = module.original_module, inside.append(name + ".")
            modules[name] = module
        return modules

    def _inject(self, info: Any, slot: str) -> None:
        """Add the checked adapter to the model as peft adapter `slot`, or leave everything as it was."""
        from peft import LoraConfig, PeftModel

        try:
            config = LoraConfig.from_peft_type(**info.config)
        except (TypeError, ValueError, KeyError, ImportError) as error:
            raise AdapterError(
                f"{info.path}: adapter_config.json is not a valid LoRA config ({error})."
            ) from None
        config.inference_mode = True
        before = _PeftState.of(self.model, self._peft)
        peft = self._peft
        try:
            if peft is None:
                peft = PeftModel(self.model, config, adapter_name=slot)
            else:
                peft.add_adapter(slot, config)
            result = peft.load_adapter(str(info.path), slot, is_trainable=False)
            _check_loaded(info, peft, slot, result)
        except BaseException as error:
            before.restore(self.model, self._peft, slot)
            self.set_adapter(self.active_adapter)
            if not isinstance(error, Exception):
                raise
            if isinstance(error, AdapterError):
                raise
            raise AdapterError(
                f"{info.path}: could not be loaded as a LoRA adapter for {self.name} "
                f"({type(error).__name__}: {error}); nothing was changed."
            ) from error
        self._peft = peft

    def set_adapter(self, name: str | None) -> None:
        """Make `name` the adapter every call uses by default; None for the base model."""
        with self.lock:
            if name is not None:
                self._check_adapter(name)
                self._peft.set_adapter(self._slots[name])
                self._peft.base_model.enable_adapter_layers()
            elif self._peft is not None:
                self._peft.base_model.disable_adapter_layers()
            self.active_adapter = name

    def unload_adapter(self, name: str) -> None:
        """Remove an adapter; with the last one gone the model is exactly the base model again."""
        with self.lock:
            self._check_adapter(name)
            self._peft.delete_adapter(self._slots.pop(name))
            del self.adapters[name]
            self._adapter_loads += 1
            self.prefix_cache.clear()
            if not self.adapters:
                self._peft.unload()
                self._peft, self.active_adapter = None, None
                return
            self.set_adapter(None if self.active_adapter == name else self.active_adapter)

    @contextlib.contextmanager
    def using_adapter(self, adapter: Any = _ACTIVE):
        """Run a block with one adapter (or None: the base model), then restore the active one."""
        if adapter is _ACTIVE or adapter == self.active_adapter:
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
        if name not in self.adapters:
            known = ", ".join(self.adapters) or "none loaded"
            raise AdapterError(
                f"adapter {name!r} is not loaded (loaded: {known}); use load_adapter(path, name)."
            )


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


@dataclass
class _PeftState:
    """What an adapter load may change in the model, taken before it, so a failed load can be undone."""

    wrappers: set[str]  # names of the peft wrapper modules already in the model
    requires_grad: list[tuple[Any, bool]]
    training: bool
    had_peft_config: bool
    peft_active: Any  # the PeftModel's active adapter (None: no PeftModel yet)

    @classmethod
    def of(cls, model: Any, peft: Any) -> _PeftState:
        return cls(
            wrappers={name for name, module in model.named_modules() if _is_peft_wrapper(module)},
            requires_grad=[(parameter, parameter.requires_grad) for parameter in model.parameters()],
            training=model.training,
            had_peft_config=hasattr(model, "peft_config"),
            peft_active=None if peft is None else peft.active_adapter,
        )

    def restore(self, model: Any, peft: Any, slot: str) -> None:
        """Remove every trace of peft adapter `slot`, including what a half-done injection left: wrappers
        made for it are replaced by the layers they wrap, older wrappers lose only `slot`."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(model.named_modules()):
            if not _is_peft_wrapper(module):
                continue
            if name not in self.wrappers:
                unwrapped = (
                    module.get_base_layer() if isinstance(module, BaseTunerLayer) else module.original_module
                )
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, unwrapped)
            elif isinstance(module, BaseTunerLayer):
                module.delete_adapter(slot)
            else:
                others = [adapter for adapter in module.active_adapters if adapter != slot]
                module.delete_adapter(slot, new_active_adapters=others or None)
        if peft is not None:
            peft.peft_config.pop(slot, None)
            peft.set_adapter(self.peft_active)
        elif not self.had_peft_config and hasattr(model, "peft_config"):
            del model.peft_config
        for parameter, requires_grad in self.requires_grad:
            parameter.requires_grad_(requires_grad)
        model.train(self.training)


def _is_peft_wrapper(module: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper)


def _check_loaded(info: Any, peft: Any, slot: str, result: Any) -> None:
    """peft loaded every weight the adapter's config asks for, used every tensor of the file, and the
    weights are finite numbers (NaN or infinite LoRA weights would poison every answer)."""
    from glmlab.adapters import module_name

    tag = re.compile(rf"\.{re.escape(slot)}(?=\.|$)")

    def module_of(key: str) -> str:
        return module_name(tag.sub("", key))

    if result.missing_keys:
        missing = sorted({module_of(key) for key in result.missing_keys})
        raise AdapterError(
            f"{info.path}: target_modules selects {len(missing)} module(s) the file has no weights for "
            f"(first: {missing[0]}); the adapter does not match its own config."
        )
    if result.unexpected_keys:
        unused = sorted({module_of(key) for key in result.unexpected_keys})
        raise AdapterError(
            f"{info.path}: the file has weights for {len(unused)} module(s) target_modules does not select "
            f"(first: {unused[0]}); the adapter does not match its own config."
        )
    for key, parameter in peft.named_parameters():
        if tag.search(key) and not torch.isfinite(parameter).all():
            raise AdapterError(f"{info.path}: the weights of {module_of(key)} hold NaN or infinite values.")


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
