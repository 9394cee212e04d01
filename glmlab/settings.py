"""Per-call generation settings: plain data, importable without torch (suites validate with it).

This is the one place generation options are checked, for the library and the server alike (the
server's request schema takes its bounds from the constants here): every value that passes is one
the model can take, so no option a caller sends can make sampling divide by ~0 and produce inf/nan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from glmlab.errors import InputError

# 0 < temperature < MIN_TEMPERATURE is raised to it, as vLLM does: dividing the logits by 1e-300
# overflows them to inf (then nan), while 0.01 is already as good as greedy.
MIN_TEMPERATURE = 0.01
# The logits are divided (or multiplied) by the repetition penalty: near 0 they overflow to inf.
REPETITION_PENALTY_RANGE = (0.01, 10.0)
MAX_SEED = 2**63 - 1
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 256  # stop strings are matched on the decoded tail, whose length follows this


@dataclass
class GenerationSettings:
    """Per-call generation options; None means "the default" (see module docstring).

    temperature=0 means greedy decoding; 0 < temperature < 0.01 counts as 0.01. `seed` makes sampling
    reproducible. `stop` strings (up to 8 of 1-256 characters) end the answer (they are not included
    in it).
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
        low, high = REPETITION_PENALTY_RANGE
        checks = [  # (field, (type test, its words), range test, the range in words)
            ("max_new_tokens", _INTEGER, lambda v: v >= 1, ">= 1"),
            ("temperature", _NUMBER, lambda v: v >= 0, ">= 0 (0 = greedy)"),
            ("top_p", _NUMBER, lambda v: 0 < v <= 1, "in (0, 1]"),
            ("top_k", _INTEGER, lambda v: v >= 0, ">= 0 (0 = no top-k)"),
            ("repetition_penalty", _NUMBER, lambda v: low <= v <= high, f"in [{low}, {high:g}]"),
            ("seed", _INTEGER, lambda v: 0 <= v <= MAX_SEED, f"in [0, {MAX_SEED}]"),
            ("do_sample", (lambda v: isinstance(v, bool), "true or false"), lambda v: True, ""),
            ("stop", _STOP_LIST, lambda v: len(v) <= MAX_STOP_STRINGS, f"at most {MAX_STOP_STRINGS} strings"),
        ]
        for name, (right_type, kind), valid, expected in checks:
            value = getattr(self, name)
            if value is None:
                continue
            if not right_type(value):
                raise InputError(f"{name}={_short(value)}: must be {kind} {expected}".rstrip() + ".")
            if not valid(value):
                raise InputError(f"{name}={_short(value)}: must be {expected}.")
        for name in ("temperature", "top_p", "repetition_penalty"):  # transformers wants floats, not ints
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))
        if self.temperature is not None and 0 < self.temperature < MIN_TEMPERATURE:
            self.temperature = MIN_TEMPERATURE
        if self.stop is not None:
            self.stop = list(self.stop)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_stop_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(stop, str) and 1 <= len(stop) <= MAX_STOP_CHARS for stop in value
    )


_INTEGER = (_is_int, "an integer")
_NUMBER = (_is_number, "a finite number")
_STOP_LIST = (_is_stop_list, f"a list of strings of 1 to {MAX_STOP_CHARS} characters,")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
