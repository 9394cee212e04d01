"""glmlab's data side of fine-tuning and evaluation: one record format, loaders, synthetic generators.

- `load_records(source, ...)` / `load_records_with_report(...)` turn a data folder, a .jsonl file, a
  DataFrame, a list of dicts or a hub dataset into a `datasets.Dataset` with columns `id`, `images`,
  `messages`, `metadata`; `save_records` writes the folder they read back; `to_messages(record)` is the
  conversation of one record, the single place training and eval take prompts and answers from.
  `format="sharegpt" | "llama_factory" | "csv"` (`FORMATS`) reads other tools' layouts into records.
- Generators (`generate_shapes`, `generate_invoices`, `generate_phantoms`, `generate_moderation`, and
  `generate_moving_shapes`, whose records hold a video) make records with exact ground truth, deterministic given a seed; `GENERATORS` names them for recipes and suites, and
  `generate(name, n, ...)` calls one by name.

Loading and generating know nothing of models, tokens or chat templates: images stay images and the
text stays plain, so every model path builds its prompt the same way from the same record.
"""

from __future__ import annotations

from glmlab.data.amounts import amount_in_words_zh
from glmlab.data.fonts import find_cjk_font
from glmlab.data.formats import FORMATS
from glmlab.data.generators import GENERATORS, generate, generator_options
from glmlab.data.invoices import generate_invoices
from glmlab.data.loaders import (
    LoadReport,
    SkippedRow,
    features,
    load_records,
    load_records_with_report,
    save_records,
)
from glmlab.data.moderation import generate_moderation
from glmlab.data.moving_shapes import generate_moving_shapes
from glmlab.data.phantoms import generate_phantoms
from glmlab.data.records import REASONS, Dialogue, RecordError, keep_markers, to_dialogue, to_messages
from glmlab.data.shapes import generate_shapes
from glmlab.data.source import DEFAULT_GENERATED_SAMPLES, DataSource, load_source

__all__ = [
    "DEFAULT_GENERATED_SAMPLES",
    "GENERATORS",
    "DataSource",
    "FORMATS",
    "REASONS",
    "LoadReport",
    "Dialogue",
    "RecordError",
    "SkippedRow",
    "amount_in_words_zh",
    "features",
    "find_cjk_font",
    "generate",
    "generator_options",
    "generate_invoices",
    "generate_moderation",
    "generate_moving_shapes",
    "generate_phantoms",
    "generate_shapes",
    "keep_markers",
    "load_records",
    "load_records_with_report",
    "load_source",
    "save_records",
    "to_dialogue",
    "to_messages",
]
