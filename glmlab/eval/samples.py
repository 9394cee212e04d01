"""From a suite's data source to the samples an evaluation asks about.

Records come from `glmlab.data.load_source` (a generator, a data folder, or a hub dataset renamed into
the record format), the loader training recipes use too, so evaluation reads records as training does. Each record becomes an `EvalSample`:
its id, the templated question, the system prompt, earlier turns, the reference answers, the
per-sample metric options and the metadata fields the suite keeps. Every sample is built (and every
template placeholder, reference field and per-sample option checked) before any model call, and
images are decoded only when a sample is asked, so a large hub set does not sit in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from glmlab.data import keep_markers, load_source, to_dialogue
from glmlab.data.source import as_list
from glmlab.errors import ConfigError, InputError
from glmlab.eval.suite import Suite
from glmlab.prompts import IMAGE_MARKER, conversation_messages

logger = logging.getLogger(__name__)

__all__ = ["EvalSample", "SampleSet", "load_samples"]


@dataclass
class EvalSample:
    """One question of a suite, without its images (see `SampleSet.images`)."""

    id: str
    index: int
    question: str
    references: list[Any]
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)  # turns before the asked one
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> per-sample options
    kept: dict[str, Any] = field(default_factory=dict)  # kept metadata fields


@dataclass
class SampleSet:
    """The samples of one suite and the dataset their images come from."""

    suite: Suite
    dataset: Any  # datasets.Dataset in the record format of glmlab.data
    samples: list[EvalSample]

    def images(self, sample: EvalSample) -> list[Any]:
        """The sample's images as PIL images (decoded now)."""
        return list(self.dataset[sample.index]["images"])

    def media(self, sample: EvalSample) -> list[Any]:
        """What the sample asks about: its images (PIL), or its videos (the files' bytes, sampled when
        the prompt is built, as `vlm.ask` samples a clip)."""
        row = self.dataset[sample.index]
        return list(row["images"]) + list(row.get("videos") or [])

    def item(self, sample: EvalSample) -> dict[str, Any]:
        """A `vlm.batch` item: {"images", "question", "system"}, or {"messages"} for a multi-turn record
        or one whose `<image>` markers place its images in the text; a video record's clips go where images go
        (`glmlab.prompts` tells them apart)."""
        images = self.media(sample)
        if not sample.history and IMAGE_MARKER not in sample.question:
            return {"images": images, "question": sample.question, "system": sample.system}
        turns = [*sample.history, {"role": "user", "content": sample.question}]
        return {"messages": conversation_messages(images, turns, sample.system, markers=True)}


def load_samples(suite: Suite, limit: int | None = None) -> SampleSet:
    """Load the suite's records (at most `limit`) and build its samples; ConfigError on a bad field."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit}: expected a positive number of samples, or None for all.")
    suite.check_data()
    dataset = load_source(suite.data, limit=limit)
    columns = dataset.select_columns(["id", "messages", "metadata"])
    samples = [_sample(suite, index, row) for index, row in enumerate(columns)]
    _check_unique_ids(samples)
    _check_kept_fields(suite, samples)
    return SampleSet(suite, dataset, samples)


# ---- samples ------------------------------------------------------------------------------------


def _sample(suite: Suite, index: int, row: Mapping[str, Any]) -> EvalSample:
    metadata = json.loads(row["metadata"]) if row["metadata"] else {}
    sample_id = row["id"] if row["id"] is not None else f"{index:06d}"
    dialogue = to_dialogue(row)
    turns = dialogue.turns
    return EvalSample(
        id=str(sample_id),
        index=index,
        question=_templated(suite, sample_id, turns[dialogue.asked]["content"], metadata),
        references=_references(suite, sample_id, dialogue.answer, metadata),
        system=suite.prompt.system if suite.prompt.system is not None else dialogue.system,
        history=[{"role": turn["role"], "content": turn["content"]} for turn in turns[: dialogue.asked]],
        options=_per_sample_options(suite, sample_id, metadata),
        kept={name: metadata.get(name) for name in _kept_names(suite)},
    )


def _templated(suite: Suite, sample_id: str, question: str, metadata: dict[str, Any]) -> str:
    try:
        text = suite.prompt.template.format_map({**metadata, "question": question})
    except (KeyError, IndexError) as error:
        raise ConfigError(
            f"prompt.template: placeholder {error} is not a field of sample {sample_id!r}; "
            f"it has question and {sorted(metadata)}."
        ) from None
    if text.count(IMAGE_MARKER) == question.count(IMAGE_MARKER):
        return text
    # A template without {question} (or with it twice) would lose or repeat the images' markers.
    return keep_markers(question, text.replace(IMAGE_MARKER, ""))


def _references(suite: Suite, sample_id: str, answer: str, metadata: dict[str, Any]) -> list[Any]:
    field_name = suite.data.references
    if field_name is None:
        return [answer]
    if field_name not in metadata:
        raise ConfigError(
            f"data.references: sample {sample_id!r} has no field {field_name!r}; "
            f"its fields are {sorted(metadata)}."
        )
    references = as_list(metadata[field_name])
    if not references:
        raise InputError(f"sample {sample_id!r}: field {field_name!r} holds no reference answer.")
    return references


def _per_sample_options(suite: Suite, sample_id: str, metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for position, metric in enumerate(suite.metrics):
        for option, source in metric.per_sample.items():
            if source not in metadata:
                raise ConfigError(
                    f"metrics[{position}].per_sample.{option}: sample {sample_id!r} has no field "
                    f"{source!r}; its fields are {sorted(metadata)}."
                )
            options.setdefault(metric.name, {})[option] = metadata[source]
    return options


def _kept_names(suite: Suite) -> list[str]:
    return list(dict.fromkeys(suite.keep_fields))


def _check_unique_ids(samples: list[EvalSample]) -> None:
    seen: dict[str, int] = {}
    for sample in samples:
        if sample.id in seen:
            raise InputError(
                f"sample id {sample.id!r} appears at rows {seen[sample.id]} and {sample.index}: ids must "
                "be unique, since runs resume and compare by id. Give each record its own id."
            )
        seen[sample.id] = sample.index


def _check_kept_fields(suite: Suite, samples: list[EvalSample]) -> None:
    absent = [name for name in _kept_names(suite) if all(sample.kept[name] is None for sample in samples)]
    if absent:
        raise ConfigError(f"keep_fields: {absent} found in no sample's metadata; check the names.")
