"""Schema-constrained answers: a JSON schema (or a pydantic model) limits decoding so the answer parses.

The grammar engine is xgrammar, vLLM's default structured-output backend, so a schema means the same
on a local model and on vLLM (which gets it as OpenAI's `response_format`). xgrammar compiles the
schema against the tokenizer once (cached per schema) and gives, per step, the mask of the tokens the
schema allows; `SchemaProcessor` applies it to one row's logits. Thinking stays outside the
constraint: with thinking on, the mask starts after the model's `</think>`. JSON is compact (no
whitespace between tokens), as vLLM's xgrammar backend writes it with `disable-any-whitespace`.

`Schema` is plain data (no torch): the settings, the OpenAI mapping and the server use it too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from glmlab.errors import InputError

ANY_JSON = "json"  # schema="json": any JSON object (OpenAI's response_format json_object)


@dataclass(frozen=True)
class Schema:
    """A checked schema: its JSON schema (None: any JSON object) and the pydantic model it came from."""

    json_schema: dict[str, Any] | None
    model: Any = None
    name: str = "answer"

    @classmethod
    def of(cls, schema: Any) -> Schema:
        """A Schema from a JSON-schema dict, a pydantic BaseModel subclass, "json", or a Schema."""
        if isinstance(schema, Schema):
            return schema
        if schema == ANY_JSON:
            return cls(None)
        if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
            return cls(schema.model_json_schema(), schema, schema.__name__)
        if isinstance(schema, dict):
            try:
                json.dumps(schema)
            except (TypeError, ValueError) as error:
                raise InputError(f"schema: not JSON ({error}).") from None
            if schema.get("type", "object") not in ("object", "array") and "anyOf" not in schema:
                raise InputError(f"schema: a JSON schema of an object or array, not {schema.get('type')!r}.")
            return cls(schema, None, str(schema.get("title") or "answer"))
        raise InputError(
            f"schema={schema!r:.80}: give a JSON-schema dict, a pydantic model class or 'json' (any object)."
        )

    @property
    def key(self) -> str:
        """What identifies the compiled grammar (the same schema compiles once)."""
        return ANY_JSON if self.json_schema is None else json.dumps(self.json_schema, sort_keys=True)

    def response_format(self) -> dict[str, Any]:
        """OpenAI's `response_format` for this schema (what vLLM and glmlab serve take)."""
        if self.json_schema is None:
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": _name(self.name), "schema": self.json_schema}}

    @classmethod
    def from_response_format(cls, response_format: dict[str, Any] | None) -> Schema | None:
        """The Schema an OpenAI `response_format` asks for (None for text)."""
        if not response_format or response_format.get("type") == "text":
            return None
        if response_format.get("type") == "json_object":
            return cls(None)
        spec = response_format.get("json_schema") or {}
        return cls(Schema.of(spec.get("schema") or {}).json_schema, None, spec.get("name") or "answer")

    def parse(self, text: str) -> tuple[Any, str | None]:
        """(the parsed value, None) or (None, why it is not a valid answer)."""
        try:  # strict=False: a schema's maxLength strings may hold raw control characters (tabs, newlines)
            value = json.loads(text, strict=False)
        except json.JSONDecodeError as error:
            return None, f"the answer is not JSON ({error.msg} at character {error.pos})"
        if self.model is not None:
            try:
                return self.model.model_validate(value), None
            except ValueError as error:
                return None, f"the answer does not fit {self.name}: {error}"
        if self.json_schema is not None:
            import jsonschema

            try:
                jsonschema.validate(value, self.json_schema)
            except jsonschema.ValidationError as error:
                return None, f"the answer does not fit the schema: {error.message}"
        elif not isinstance(value, dict):
            return None, "the answer is JSON but not an object"
        return value, None


def _name(name: str) -> str:
    """OpenAI's json_schema name: letters, digits, _ and -, at most 64."""
    cleaned = "".join(char if char.isalnum() or char in "_-" else "_" for char in name)
    return cleaned[:64] or "answer"


class Grammars:
    """One model's compiled grammars: xgrammar's tokenizer info built once, each schema compiled once."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: set[int]) -> None:
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_token_ids)
        )
        self.vocab_size = vocab_size
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=2)
        self.think_end_id = tokenizer.convert_tokens_to_ids("</think>")
        self._compiled: dict[str, Any] = {}

    def compiled(self, schema: Schema) -> Any:
        if schema.key not in self._compiled:
            # compact JSON (no free whitespace): with whitespace allowed, a weak model can fill its whole
            # token budget with spaces and never close the object
            text = json.dumps(schema.json_schema if schema.json_schema is not None else {"type": "object"})
            try:
                grammar = self.compiler.compile_json_schema(text, any_whitespace=False)
            except (RuntimeError, ValueError) as error:
                reason = re.sub(
                    r"^\[[\d:]+\] \S+:\d+: ", "", str(error).strip()
                )  # drop the C++ source prefix
                raise InputError(f"schema: the grammar engine cannot compile it ({reason}).") from None
            self._compiled[schema.key] = grammar
        return self._compiled[schema.key]

    def processor(self, schema: Schema, prompt_length: int, thinking_done: bool) -> SchemaProcessor:
        import xgrammar

        return SchemaProcessor(
            xgrammar.GrammarMatcher(self.compiled(schema)),
            self.vocab_size,
            prompt_length,
            None if thinking_done else self.think_end_id,
        )


class SchemaProcessor:
    """A logits processor for one row ([1, vocab] scores): only the tokens the schema allows next.

    Feeds the matcher the row's tokens generated since the last call; until `think_end_id` has been
    generated (thinking on) it leaves the scores alone. Once the schema is complete, only stop tokens
    are allowed, so the row ends there.
    """

    def __init__(self, matcher: Any, vocab_size: int, prompt_length: int, think_end_id: int | None) -> None:
        import xgrammar

        self.matcher = matcher
        self.prompt_length = prompt_length
        self.waiting_for = think_end_id
        self.seen = 0
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import xgrammar

        generated = input_ids[0, self.prompt_length :].tolist()
        for token in generated[self.seen :]:
            if self.waiting_for is not None:
                if token == self.waiting_for:
                    self.waiting_for = None
            elif not self.matcher.is_terminated():
                self.matcher.accept_token(token)
        self.seen = len(generated)
        if self.waiting_for is not None or self.matcher.is_terminated():  # thinking, or a finished row
            return scores
        self.matcher.fill_next_token_bitmask(self.bitmask)
        scores = scores.clone()
        xgrammar.apply_token_bitmask_inplace(
            scores, self.bitmask.to(scores.device), vocab_size=self.vocab_size
        )
        return scores
