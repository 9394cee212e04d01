"""Per-call generation settings: plain data, importable without torch (suites validate with it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from glmlab.errors import InputError


@dataclass
class GenerationSettings:
    """Per-call generation options; None means "the default" (see module docstring).

    temperature=0 means greedy decoding. `seed` makes sampling reproducible. `stop` strings end the
    answer (they are not included in it).
    """

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    do_sample: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (
                "max_new_tokens",
                self.max_new_tokens,
                lambda v: isinstance(v, int) and v >= 1,
                "an integer >= 1",
            ),
            ("temperature", self.temperature, lambda v: v >= 0, ">= 0 (0 = greedy)"),
            ("top_p", self.top_p, lambda v: 0 < v <= 1, "in (0, 1]"),
            ("top_k", self.top_k, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
            ("repetition_penalty", self.repetition_penalty, lambda v: v > 0, "> 0"),
        ]
        for name, value, valid, expected in checks:
            if value is not None and not valid(value):
                raise InputError(f"{name}={value!r}: must be {expected}.")

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}
