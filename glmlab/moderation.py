"""Content moderation of text in images: a policy of labels, and a two-step pipeline over files.

    policy = load_policy()                         # the shipped policy, or load_policy("mine.yaml")
    table = moderate(vlm, ["ad.png", "sign.jpg"], policy)
    table[table.flagged]

A policy is YAML (glmlab/policies/moderation.yaml is the default): labels, each with a definition and
examples, one of them the label for text that breaks no rule (`allowed_label`). It is checked field by
field like every glmlab config (`glmlab.config`), all problems at once.

`moderate` asks two questions per image: (1) read the text in it, a plain question; (2) judge that text,
with the image, against the policy, answered as one JSON object {label, reason, evidence}
(`Policy.schema()`: the label an enum of the policy's labels, the strings bounded so a constrained answer
always completes within `JUDGE_TOKENS`). Reading first keeps the judgement about the words on the image
and leaves the read text in the table for a human to check; the judge step alone is what `lora/moderation.yaml` trains and
`eval/moderation.yaml` scores (on the synthetic set, given the true text). The judgement is
`Answer.parsed` of the constrained answer, else the JSON object found in the text
(`glmlab.answer.parse_json_object`); a row whose judgement is missing or names no label of the
policy says why in `error`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from glmlab.answer import Answer, parse_json_object
from glmlab.config import (
    Check,
    InvalidConfig,
    build_section,
    checked_field,
    problems,
    raise_if_problems,
    text,
    text_list,
    unknown_keys,
)
from glmlab.errors import ConfigError, GlmlabError
from glmlab.images import describe, to_pil
from glmlab.interface import DEFAULT_ADAPTER, AdapterChoice, LocalModel, Model

__all__ = [
    "COLUMNS",
    "JUDGE_TOKENS",
    "READ_QUESTION",
    "Label",
    "Policy",
    "judge_prompt",
    "judgement",
    "load_policy",
    "moderate",
]

DEFAULT_POLICY = "policies/moderation.yaml"  # inside the glmlab package
READ_QUESTION = (
    "Read all the text in this image, line by line, exactly as written and in its own language. "
    "Answer with the text only."
)
REASON_MAX_CHARS = 100  # the schema's bounds on the two free strings of a judgement
EVIDENCE_MAX_CHARS = 100
# Enough tokens for the longest judgement the schema allows, so a constrained answer always completes:
# a character can cost up to 6 tokens (a \uXXXX escape), plus the keys, the longest label and braces.
JUDGE_TOKENS = 6 * (REASON_MAX_CHARS + EVIDENCE_MAX_CHARS) + 64
COLUMNS = ["source", "page", "text", "label", "flagged", "reason", "evidence", "error"]
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")

label_name = Check(
    lambda value: isinstance(value, str) and _NAME_RE.fullmatch(value),
    "a lower-case name of letters, digits and _ (e.g. contact_details)",
)


@dataclass
class Label:
    """One verdict the judge may give: its name, what it means, and texts that carry it."""

    name: str = checked_field(help="What the judge answers (a lower-case identifier).", check=label_name)
    definition: str = checked_field(help="What the label means, in one or two sentences.", check=text())
    examples: list[str] = checked_field(
        default_factory=list, help="Short texts that carry the label.", check=text_list("example texts")
    )


@dataclass
class Policy:
    """The rules a text is judged against: labels with definitions and examples."""

    name: str = checked_field(help="The policy's name.", check=text())
    labels: list[Label] = checked_field(
        help="The labels; one is `allowed_label`.",
        check=Check(
            lambda value: isinstance(value, list) and len(value) >= 2, "a list of two or more labels"
        ),
    )
    allowed_label: str = checked_field("allowed", help="The label of text that breaks no rule.", check=text())
    description: str = checked_field("", help="What the policy is for.", check=text(False))

    def extra_problems(self) -> list[tuple[str, str]]:
        found = []
        names = [label.name for label in self.labels if isinstance(label, Label)]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            found.append(
                ("labels", f"{', '.join(map(repr, repeated))} named twice; each label needs its own name")
            )
        if names and self.allowed_label not in names:
            found.append(
                (
                    "allowed_label",
                    f"{self.allowed_label!r} is not a label of the policy ({', '.join(names)}); "
                    "name the label of text that breaks no rule",
                )
            )
        return found

    @property
    def names(self) -> list[str]:
        """The label names, in policy order."""
        return [label.name for label in self.labels]

    def schema(self) -> dict[str, Any]:
        """The JSON schema of a judgement: what the judge step's constrained answer must be."""
        return {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": self.names},
                "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
                "evidence": {"type": "string", "maxLength": EVIDENCE_MAX_CHARS},
            },
            "required": ["label", "reason", "evidence"],
            "additionalProperties": False,
        }


def load_policy(source: Policy | Mapping[str, Any] | str | Path | None = None) -> Policy:
    """A checked Policy from a YAML file, a mapping, or the shipped default (None).

    Raises `InvalidConfig` listing every bad field by its path (`labels[1].name='Spam!': must be ...`).
    """
    if isinstance(source, Policy):
        raise_if_problems(problems(source), "policy")
        return source
    if source is None:
        path_name = "glmlab/" + DEFAULT_POLICY
        data = yaml.safe_load(resources.files("glmlab").joinpath(DEFAULT_POLICY).read_text(encoding="utf-8"))
    elif isinstance(source, Mapping):
        path_name, data = "policy", source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"policy file {str(path)!r}: not found; pass the path of a policy YAML file.")
        path_name = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path_name}: not valid YAML ({error}).") from None
    return _policy_from(data, path_name)


def _policy_from(data: Any, source: str) -> Policy:
    if not isinstance(data, Mapping):
        raise InvalidConfig(
            f"{source}: expected a mapping with name and labels, got {type(data).__name__}.", [source]
        )
    found = unknown_keys(Policy, data)
    values = {
        key: value for key, value in data.items() if key in {item.name for item in dataclasses.fields(Policy)}
    }
    found += [f"{name}: missing" for name in ("name", "labels") if name not in values]
    labels = values.get("labels", [])
    if isinstance(labels, list):
        built = [build_section(Label, item, f"labels[{index}]", found) for index, item in enumerate(labels)]
        values["labels"] = [label for label in built if label is not None]
    if found:
        raise_if_problems(found, source)
    policy = Policy(**values)
    raise_if_problems(problems(policy), source)
    return policy


def judge_prompt(policy: Policy, read_text: str) -> str:
    """The judge step's question: the policy, the text read from the image, and the answer's shape."""
    lines = ["You moderate text found in images. Judge the text below against this policy."]
    if policy.description:
        lines.append(f"Policy: {policy.description}")
    lines += ["", "Labels:"]
    for label in policy.labels:
        lines.append(f"- {label.name}: {label.definition}")
        if label.examples:
            lines.append(
                "  Examples: "
                + " | ".join(json.dumps(example, ensure_ascii=False) for example in label.examples)
            )
    lines += [
        "",
        "Text read from the image:",
        "<<<",
        read_text.strip(),
        ">>>",
        "",
        'Answer with one JSON object and nothing else: {"label": one of '
        + ", ".join(policy.names)
        + '; "reason": one short sentence in English; "evidence": the words of the text that decide '
        + f'the label, copied exactly, or "" for {policy.allowed_label}}}.',
    ]
    return "\n".join(lines)


def judgement(answer: Answer, policy: Policy) -> tuple[dict[str, str] | None, str | None]:
    """(label, reason, evidence) of a judge answer, or (None, why not).

    `Answer.parsed` (a constrained answer) is used when the model filled it; otherwise the first JSON
    object of the text (an answer asked without the schema, or from a server that ignores it). The label
    must be one of the policy's; reason and evidence are strings ("" when absent).
    """
    cut = " (cut by max_new_tokens: raise judge_tokens)" if answer.finish_reason == "length" else ""
    if answer.error is not None:
        return None, answer.error + cut
    parsed = answer.parsed if answer.parsed is not None else parse_json_object(answer.text)
    if not isinstance(parsed, Mapping):
        return None, f"no JSON object in the judge's answer{cut}: {_short(answer.text)}"
    label = parsed.get("label")
    if label not in policy.names:
        return None, f"label {label!r} is not in the policy ({', '.join(policy.names)})"
    result = {"label": label}
    for key in ("reason", "evidence"):
        value = parsed.get(key, "")
        if not isinstance(value, str):
            return None, f"{key} is {type(value).__name__}, not a string: {_short(repr(value))}"
        result[key] = value
    return result, None


def moderate(
    model: Model,
    files: Sequence[Any],
    policy: Policy | Mapping[str, Any] | str | Path | None = None,
    *,
    batch_size: int = 8,
    read_tokens: int = 256,
    judge_tokens: int = JUDGE_TOKENS,
    read_adapter: AdapterChoice = DEFAULT_ADAPTER,
    judge_adapter: AdapterChoice = DEFAULT_ADAPTER,
    max_image_pixels: int | None = None,
) -> pd.DataFrame:
    """One row per image of `files` (per page of a PDF): the text read, the policy's label and why.

    files: a list of paths or of any image input `glmlab.images.to_pil` takes (or one of them). A local
    model answers in batches of `batch_size`; a `Client` one request at a time. Greedy, without
    thinking; the judge step constrained to `policy.schema()` (`schema=`, glmlab.structured; a server
    gets it as `response_format`), with judge_tokens enough for the longest judgement it allows. read_adapter and
    judge_adapter choose the LoRA adapter of each step (a judge trained with lora/moderation.yaml).
    Columns: source, page (1-based), text, label, flagged (label is not the allowed one), reason,
    evidence, error (None when the row was judged; a file that cannot be read, or a judgement that
    does not parse, says why and leaves label None).
    """
    policy = load_policy(policy)
    rows, images = _pages(files)
    todo = [index for index, row in enumerate(rows) if row["error"] is None]
    options = {"thinking": False, "temperature": 0, "max_image_pixels": max_image_pixels}
    read = _ask_all(
        model,
        [(images[i], READ_QUESTION) for i in todo],
        batch_size,
        {**options, "max_new_tokens": read_tokens, "adapter": read_adapter},
    )
    judged = []
    for index, answer in zip(todo, read, strict=True):
        if answer.error is not None:
            rows[index]["error"] = f"read step: {answer.error}"
        else:
            rows[index]["text"] = answer.text
            judged.append(index)
    verdicts = _ask_all(
        model,
        [(images[i], judge_prompt(policy, rows[i]["text"])) for i in judged],
        batch_size,
        {**options, "max_new_tokens": judge_tokens, "adapter": judge_adapter, "schema": policy.schema()},
    )
    for index, answer in zip(judged, verdicts, strict=True):
        result, error = judgement(answer, policy)
        if error is not None:
            rows[index]["error"] = f"judge step: {error}"
        else:
            rows[index].update(result, flagged=result["label"] != policy.allowed_label)
    return _table(rows)


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame whose missing cells are None (object columns), pages as integers and
    `flagged` as pandas' nullable boolean (NA for a row not judged; `table[table.flagged]` skips it)."""
    columns = {name: pd.Series([row[name] for row in rows], dtype=object) for name in COLUMNS}
    columns["page"] = pd.Series([row["page"] for row in rows], dtype="int64")
    columns["flagged"] = pd.Series([row["flagged"] for row in rows], dtype="boolean")
    return pd.DataFrame(columns, columns=COLUMNS)


def _pages(files: Sequence[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """A row and an image per page of each file; a file that cannot be read gets one row with its error."""
    if not isinstance(files, list | tuple):
        files = [files]  # one file or image
    rows, images = [], []
    for file in files:
        source = str(file) if isinstance(file, str | Path) else describe(file)
        try:
            pages = to_pil(file)
        except GlmlabError as error:
            pages, failure = [None], str(error)
        else:
            failure = None
        for number, page in enumerate(pages, start=1):
            rows.append(dict.fromkeys(COLUMNS) | {"source": source, "page": number, "error": failure})
            images.append(page)
    return rows, images


def _ask_all(
    model: Model, items: list[tuple[Any, str]], batch_size: int, options: dict[str, Any]
) -> list[Answer]:
    """Answers in item order: `batch` on a local model, one call at a time on a client (errors kept per item)."""
    if not items:
        return []
    if isinstance(model, LocalModel):
        return model.batch(items, batch_size=batch_size, **options)
    answers = []
    for image, question in items:
        try:
            answers.append(model.ask(image, question, **options))
        except GlmlabError as error:
            answers.append(Answer(text="", finish_reason="error", error=str(error)))
    return answers


def _short(value: str, limit: int = 80) -> str:
    value = " ".join(value.split())
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")
