"""Per-call generation settings: plain data, importable without torch (suites validate with it).

This is the one place generation options are checked, for the library and the server alike (the
server's request schema takes its bounds from the constants here): every value that passes is one
the model can take, so no option a caller sends can make sampling divide by ~0 and produce inf/nan.
The checks are the fields' own metadata (`glmlab.config`), so a suite's generation section is checked
by the same rules. Also the one image-size floor every config checks against (`MIN_IMAGE_PIXELS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from glmlab.config import Check, checked_field, is_int, is_number, problems, raise_if_problems
from glmlab.errors import InputError
from glmlab.structured import Schema

# One image token covers 28x28 px (14 px patches merged 2x2): the smallest image budget a model can see.
MIN_IMAGE_PIXELS = 28 * 28
# 0 < temperature < MIN_TEMPERATURE is raised to it, as vLLM does: dividing the logits by 1e-300
# overflows them to inf (then nan), while 0.01 is already as good as greedy.
MIN_TEMPERATURE = 0.01
# The logits are divided (or multiplied) by the repetition penalty: near 0 they overflow to inf.
REPETITION_PENALTY_RANGE = (0.01, 10.0)
MAX_SEED = 2**63 - 1
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 256  # stop strings are matched on the decoded tail, whose length follows this


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    """`stop` as a list: glmlab and OpenAI both take one string or several (used by the library and by
    both halves of glmlab.openai_format)."""
    return [stop] if isinstance(stop, str) else stop


def _is_stop_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(stop, str) and 1 <= len(stop) <= MAX_STOP_CHARS for stop in value
    )


def _typed(
    right_type: Callable[[Any], bool], kind: str, valid: Callable[[Any], bool], expected: str
) -> Check:
    """A type test and a range test: a value of the wrong type is told both ("a finite number >= 0")."""
    return Check(
        lambda value: right_type(value) and valid(value),
        lambda value: expected if right_type(value) else f"{kind} {expected}".rstrip(),
    )


_LOW, _HIGH = REPETITION_PENALTY_RANGE
_NUMBER = "a finite number"


@dataclass
class GenerationSettings:
    """Per-call generation options; None means "the default" (see module docstring).

    temperature=0 means greedy decoding; 0 < temperature < 0.01 counts as 0.01. `seed` makes sampling
    reproducible. `stop` strings (up to 8 of 1-256 characters) end the answer (they are not included
    in it).
    """

    max_new_tokens: int | None = checked_field(
        None, help="Longest answer, in tokens.", check=_typed(is_int, "an integer", lambda v: v >= 1, ">= 1")
    )
    temperature: float | None = checked_field(
        None,
        help="Sampling temperature; 0 = greedy.",
        check=_typed(is_number, _NUMBER, lambda v: v >= 0, ">= 0 (0 = greedy)"),
    )
    top_p: float | None = checked_field(
        None,
        help="Nucleus sampling mass.",
        check=_typed(is_number, _NUMBER, lambda v: 0 < v <= 1, "in (0, 1]"),
    )
    top_k: int | None = checked_field(
        None,
        help="Sample from the k likeliest tokens (0: all).",
        check=_typed(is_int, "an integer", lambda v: v >= 0, ">= 0 (0 = no top-k)"),
    )
    repetition_penalty: float | None = checked_field(
        None,
        help="Penalty on repeated tokens (1: none).",
        check=_typed(is_number, _NUMBER, lambda v: _LOW <= v <= _HIGH, f"in [{_LOW}, {_HIGH:g}]"),
    )
    seed: int | None = checked_field(
        None,
        help="Seed that makes sampling reproducible.",
        check=_typed(is_int, "an integer", lambda v: 0 <= v <= MAX_SEED, f"in [0, {MAX_SEED}]"),
    )
    stop: list[str] | None = checked_field(
        None,
        help="Strings that end the answer (not included in it).",
        check=_typed(
            _is_stop_list,
            f"a list of strings of 1 to {MAX_STOP_CHARS} characters,",
            lambda v: len(v) <= MAX_STOP_STRINGS,
            f"at most {MAX_STOP_STRINGS} strings",
        ),
    )
    max_thinking_tokens: int | None = checked_field(
        None,
        help="Most tokens the model may think; then its thinking is ended (</think>) and the answer follows.",
        check=_typed(is_int, "an integer", lambda v: v >= 0, ">= 0"),
    )
    schema: Any = checked_field(
        None,
        help="A JSON schema (dict), a pydantic model class or 'json': the answer is constrained to it "
        "and parsed into Answer.parsed (glmlab.structured).",
        check=_typed(
            lambda v: isinstance(v, (dict, Schema))
            or v == "json"
            or (isinstance(v, type) and hasattr(v, "model_json_schema")),
            "a JSON-schema dict, a pydantic model class or 'json'",
            lambda v: True,
            "",
        ),
    )
    do_sample: bool | None = checked_field(
        None,
        help="Sample (true) or decode greedily (false); default: from temperature.",
        check=_typed(lambda v: isinstance(v, bool), "true or false", lambda v: True, ""),
    )

    def __post_init__(self) -> None:
        self.stop = stop_list(self.stop)
        raise_if_problems(problems(self), error=InputError)
        for name in ("temperature", "top_p", "repetition_penalty"):  # transformers wants floats, not ints
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))
        if self.temperature is not None and 0 < self.temperature < MIN_TEMPERATURE:
            self.temperature = MIN_TEMPERATURE
        if self.stop is not None:
            self.stop = list(self.stop)

    def to_dict(self) -> dict[str, Any]:
        """The set options (the schema as given, not copied)."""
        found = {key: getattr(self, key) for key in (field.name for field in fields(self))}
        return {key: value for key, value in found.items() if value is not None}
