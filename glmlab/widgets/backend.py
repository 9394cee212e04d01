"""What the widgets need from a model, for a local `VLM` and a server `Client` alike.

The widgets only do four things with a model: stream an answer to a conversation, answer many
(picture, question) pairs in order, list the adapters it can switch between, and name itself. `LocalModel` and `ServerModel` translate those into each model's
calls, so the widget never asks which kind of model it holds. `describe_error` turns what can go wrong
(bad input, a server that is down, a GPU out of memory) into one plain sentence for the widget's error line.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

from PIL import Image

from glmlab import interface
from glmlab.answer import Answer
from glmlab.errors import GlmlabError, InputError

BASE = ""  # the adapter dropdown's value for "the base model, no adapter" (a Dropdown cannot hold None)
Pair = tuple[Image.Image, str]  # one picture and the question asked about it


class LocalModel:
    """A `glmlab.VLM` in this kernel: adapters are the ones loaded on it, switched per call (no reload)."""

    def __init__(self, vlm: interface.LocalModel) -> None:
        self.vlm = vlm
        self.name = vlm.name
        self.allow_urls = getattr(vlm, "allow_urls", False)

    def adapter_options(self) -> list[tuple[str, str]]:
        return [("base model", BASE)] + [(name, name) for name in self.vlm.adapters]

    def default_adapter(self) -> str:
        return self.vlm.active_adapter or BASE

    def stream(self, messages: list[dict[str, Any]], adapter: str, **options: Any) -> Any:
        """A `Stream` of the answer; `adapter` is a loaded adapter's name or BASE."""
        return self.vlm.chat_stream(messages, adapter=adapter or None, **options)

    def answer_each(
        self, pairs: list[Pair], stop: threading.Event, *, at_once: int, **options: Any
    ) -> Iterator[Answer]:
        """Answers to `pairs` in their order, `at_once` pairs per `VLM.batch` call; stops between batches
        once `stop` is set. A pair that fails gets an Answer with `error` set (as `VLM.batch` gives)."""
        for start in range(0, len(pairs), at_once):
            if stop.is_set():
                return
            yield from self.vlm.batch(pairs[start : start + at_once], batch_size=at_once, **options)


class ServerModel:
    """A `glmlab.Client` of a server: the adapters are the server's models (`/v1/models`) after its base."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.name = client.base_url
        self.allow_urls = False

    def adapter_options(self) -> list[tuple[str, str]]:
        names = self.client.models()  # also tells the client which one is the base model
        base = self.client.base_model
        return [(f"{base} (base model)", BASE)] + [(name, name) for name in names if name != base]

    def default_adapter(self) -> str:
        return self.client.model if self.client.model not in (None, self.client.base_model) else BASE

    def stream(self, messages: list[dict[str, Any]], adapter: str, **options: Any) -> Any:
        """A `RemoteStream` of the answer (same interface as `Stream`); `adapter` is a model name or BASE."""
        return self.client.chat_stream(messages, adapter=adapter or None, **options)

    def answer_each(
        self, pairs: list[Pair], stop: threading.Event, *, at_once: int, **options: Any
    ) -> Iterator[Answer]:
        """Answers to `pairs` in their order, with `at_once` requests in flight; once `stop` is set the
        requests not yet sent are dropped (those in flight finish). A failed request gets an Answer with
        `error` set, like a failed `VLM.batch` item, so one bad picture does not end the run."""
        pool = concurrent.futures.ThreadPoolExecutor(at_once, thread_name_prefix="glmlab-widget")
        try:
            futures = [pool.submit(self._answer, image, question, options) for image, question in pairs]
            for future in futures:
                if stop.is_set():
                    return
                yield future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _answer(self, image: Image.Image, question: str, options: dict[str, Any]) -> Answer:
        try:
            return self.client.ask(image, question, **options)
        except Exception as error:  # recorded on its row; the other pictures still get answers
            return Answer(text="", finish_reason="error", error=describe_error(error))


def backend_for(model: interface.Model) -> LocalModel | ServerModel:
    """The widget's view of `model`: a loaded VLM or a server Client (recognised by what they offer)."""
    if isinstance(model, interface.LocalModel):
        return LocalModel(model)
    if isinstance(model, interface.RemoteModel):
        return ServerModel(model)
    raise InputError(
        f"{type(model).__name__} object: the widget needs a model from glmlab.load(...) or a "
        "glmlab.Client(...) for a server."
    )


def describe_error(error: BaseException) -> str:
    """One sentence a user can act on, for the widget's error line (the full error stays in `last_error`).

    glmlab's own errors already say what to do (a server that is down is a `ServerError` from the Client);
    a GPU out of memory is the one foreign error common enough to deserve its own advice.
    """
    if isinstance(error, GlmlabError):
        return str(error)
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return (
            "Out of GPU memory while answering. Lower Max tokens, ask about fewer or smaller images, or load "
            "the model with quantize='4bit'; the widget is ready for another question."
        )
    return f"{type(error).__name__}: {error}"
