"""Hub layouts: how a public benchmark's hub rows become glmlab records when a column rename is not enough.

Most hub sets map onto records by renaming columns (`DataSource.columns`). A few need the benchmark's
own row handling, written here as the reference harness does it so scores compare with published ones:

- `textvqa`: lmms-eval's `textvqa_doc_to_text` capitalises the question (`str.capitalize`, which
  also lowercases the rest).
- `mmmu`: lmms-eval's `construct_prompt` (question, then "A. option" lines for a multiple-choice
  question) and `mmmu_doc_to_visual` (the `image_k` columns the question or options mention as
  `<image k>`, sorted, each once). The prompt suffixes are lmms-eval's `mmmu_val` defaults.
- `refcoco`: lmms-eval's `refcoco_bbox_rec_preprocess_dataset`: one row per referring expression,
  the COCO box [x, y, w, h] in pixels turned into corners normalised by the image size; here on
  GLM's 0-1000 scale instead of 0-1 (IoU does not change with the scale).

A layout takes the hub `datasets.Dataset` and returns one with record fields (`question`, `image(s)`,
`answer`, `id`) plus metadata columns. Written by hand: no library ships these per-benchmark rules.
"""

from __future__ import annotations

import ast
import io
import json
import re
from collections.abc import Callable
from typing import Any

from PIL import Image

__all__ = ["HUB_LAYOUTS", "MMMU_CHOICE_PROMPT", "MMMU_OPEN_PROMPT", "mmmu_question"]

MMMU_CHOICE_PROMPT = "Answer with the option's letter from the given choices directly."
MMMU_OPEN_PROMPT = "Answer the question using a single word or phrase."
MMMU_IMAGE_COLUMNS = [f"image_{k}" for k in range(1, 8)]
_MMMU_IMAGE_TOKEN = re.compile(r"<image \d+>")


def textvqa(dataset: Any) -> Any:
    """Questions capitalised as lmms-eval asks them."""
    return dataset.map(lambda question: {"question": question.capitalize()}, input_columns=["question"])


def mmmu_question(question: str, question_type: str, options: str) -> str:
    """lmms-eval's `construct_prompt` with its default suffixes; `options` is the hub's string of a list."""
    if question_type == "multiple-choice":
        lines = "\n".join(
            f"{chr(ord('A') + k)}. {option}" for k, option in enumerate(ast.literal_eval(options))
        )
        return f"{question}\n{lines}\n\n{MMMU_CHOICE_PROMPT}"
    return f"{question}\n\n{MMMU_OPEN_PROMPT}"


def mmmu(dataset: Any) -> Any:
    """The prompt as the question, and the mentioned `image_k` columns (sorted) as the images."""
    import datasets

    present = [name for name in MMMU_IMAGE_COLUMNS if name in dataset.column_names]
    for name in present:
        dataset = dataset.cast_column(name, datasets.Image(decode=False))

    def row(example: dict[str, Any]) -> dict[str, Any]:
        question = mmmu_question(example["question"], example["question_type"], example["options"])
        mentioned = sorted(
            {token.strip("<>").replace(" ", "_") for token in _MMMU_IMAGE_TOKEN.findall(question)}
        )
        images = [example[name] for name in mentioned if example.get(name) is not None]
        return {"question": question, "images": images}

    features = dataset.features.copy()
    for name in present:
        del features[name]
    features["images"] = datasets.List(datasets.Image(decode=False))
    return dataset.map(row, remove_columns=present, features=features)


def refcoco(dataset: Any) -> Any:
    """One row per referring expression; the answer is the box [x1, y1, x2, y2] on the 0-1000 scale."""
    import datasets

    dataset = dataset.cast_column("image", datasets.Image(decode=False))

    def rows(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in [*batch, "id", "expression"]}
        for index in range(len(batch["answer"])):
            width, height = _image_size(batch["image"][index])
            x, y, w, h = batch["bbox"][index]
            box = [1000 * x / width, 1000 * y / height, 1000 * (x + w) / width, 1000 * (y + h) / height]
            for k, expression in enumerate(batch["answer"][index]):
                for key in batch:
                    out[key].append(batch[key][index])
                out["id"].append(f"{batch['question_id'][index]}-{k}")
                out["expression"].append(expression)
                out["question"][-1] = expression
                out["answer"][-1] = json.dumps(box)
        return out

    features = dataset.features.copy()
    features.update(
        {
            "answer": datasets.Value("string"),
            "question": datasets.Value("string"),
            "id": datasets.Value("string"),
            "expression": datasets.Value("string"),
        }
    )
    return dataset.map(rows, batched=True, features=features)


def _image_size(cell: dict[str, Any]) -> tuple[int, int]:
    """Width and height from the stored bytes (PIL reads the header only)."""
    source = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]
    with Image.open(source) as image:
        return image.size


HUB_LAYOUTS: dict[str, Callable[[Any], Any]] = {"textvqa": textvqa, "mmmu": mmmu, "refcoco": refcoco}
