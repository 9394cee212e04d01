"""What a model offers its callers: the protocols `VLM` and `Client` satisfy, and the one sentinel.

The eval harness, the widget and the notebooks take "a model": a loaded `VLM` or a `Client` of a
server. `Model` is what both offer (questions, conversations, streams, a per-call adapter);
`LocalModel` adds what only a model in this process has (its processor, prompt preparation, batches,
loaded adapters); `RemoteModel` what only a client has (the server's model names). Callers ask
`isinstance(model, LocalModel)` instead of guessing with `hasattr`. Torch-free, so a caller that only
talks to servers never imports it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from glmlab.answer import Answer


class _Default(enum.Enum):
    ADAPTER = "the model's default adapter"

    def __repr__(self) -> str:
        return "DEFAULT_ADAPTER"


# `adapter=DEFAULT_ADAPTER` (every call's default): a VLM's active adapter (`set_adapter`), a Client's
# model. `adapter=None` is the base model; a name is that adapter (or, on a server, that model).
DEFAULT_ADAPTER = _Default.ADAPTER
AdapterChoice = str | None | _Default  # the type of every `adapter=` parameter


class AnswerStream(Protocol):
    """Text pieces as they are generated, then the whole `answer`."""

    def __iter__(self) -> Iterator[str]: ...

    def stop(self) -> None: ...

    @property
    def answer(self) -> Answer: ...


@runtime_checkable
class Model(Protocol):
    """What a `VLM` and a `Client` both offer."""

    def ask(self, images: Any, question: str, *, system: str | None = None, **options: Any) -> Answer: ...

    def chat(self, messages: list[dict[str, Any]], **options: Any) -> Answer: ...

    def stream(
        self, images: Any, question: str, *, system: str | None = None, **options: Any
    ) -> AnswerStream: ...

    def chat_stream(self, messages: list[dict[str, Any]], **options: Any) -> AnswerStream: ...


@runtime_checkable
class LocalModel(Model, Protocol):
    """A model in this process (`VLM`): prompts prepared here, batches, named adapters."""

    name: str
    processor: Any

    @property
    def adapters(self) -> dict[str, str]: ...

    @property
    def active_adapter(self) -> str | None: ...

    def prepare(self, messages: list[dict[str, Any]], **options: Any) -> Any: ...

    def batch(self, items: list[Any], *, batch_size: int = 8, **options: Any) -> list[Answer]: ...


@runtime_checkable
class RemoteModel(Model, Protocol):
    """A model behind an OpenAI-compatible server (`Client`)."""

    base_url: str

    def models(self) -> list[str]: ...
