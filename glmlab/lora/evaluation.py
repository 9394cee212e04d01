"""Scoring the adapter while it trains: greedy answers on held-out records, one glmlab.eval metric.

The answers come from `VLM.batch`, the inference path itself (greedy batches answer exactly like
one-by-one calls), on the model being trained (peft injects the LoRA layers into that same network),
so the number in the training log is what a user will see from `glmlab.load(base, adapter=...)`.
Decoding is plain greedy (temperature 0, no repetition penalty) so the score measures what was
learned, not a sampling setting. Kept cheap: a small held-out split and short answers
(`evaluation.samples`, `evaluation.max_new_tokens`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from glmlab.errors import InputError
from glmlab.eval.extract import get_extractor
from glmlab.eval.metrics import aggregate_metric, get_metric, sample_score
from glmlab.eval.scoring import headline_statistic
from glmlab.lora.collator import LoraCollator
from glmlab.lora.recipe import LoraRecipe

GREEDY = {"temperature": 0, "repetition_penalty": 1.0}
EVAL_BATCH_SIZE = 8
if TYPE_CHECKING:  # annotations only: no import of the model at run time
    from glmlab.model import VLM


class AnswerEvaluator:
    """Generates an answer for each held-out record and scores it with the recipe's metric."""

    def __init__(self, vlm: VLM, collator: LoraCollator, records: Any, recipe: LoraRecipe) -> None:
        self.vlm = vlm
        self.collator = collator
        self.records = records
        self.recipe = recipe
        self.metric = get_metric(recipe.evaluation.metric)
        self.extract = get_extractor(recipe.evaluation.extractor)
        self.last_answers: pd.DataFrame | None = None

    def run(self, prefix: str = "eval") -> dict[str, float]:
        """`{prefix}_{metric}` (the metric's headline number, as `glmlab eval` reports it: the mean
        sample score, or field_f1's micro F1) and the metric's other aggregate numbers.

        The network is put in eval mode for generation and restored afterwards (training resumes
        in train mode with dropout on).
        """
        network = self.vlm.model
        was_training = network.training
        network.eval()
        start = time.perf_counter()
        try:
            rows = self._score_all()
        finally:
            network.train(was_training)
        summary = aggregate_metric(self.recipe.evaluation.metric, [row.pop("_result") for row in rows])
        self.last_answers = pd.DataFrame(rows)
        head = headline_statistic(list(summary))  # the number `glmlab eval` headlines for this metric
        name = f"{prefix}_{self.recipe.evaluation.metric}"
        metrics = {name: float(summary[head])}
        metrics.update({f"{name}_{key}": float(value) for key, value in summary.items() if key != head})
        metrics[f"{prefix}_runtime_s"] = round(time.perf_counter() - start, 3)
        return metrics

    def _score_all(self) -> list[dict[str, Any]]:
        prompts = [self.collator.prompt_messages(record) for record in self.records]
        answers = self.vlm.batch(
            [{"messages": messages} for messages, _ in prompts],
            batch_size=EVAL_BATCH_SIZE,
            thinking=self.recipe.prompt.thinking,
            max_image_pixels=self.recipe.prompt.max_image_pixels,
            max_new_tokens=self.recipe.evaluation.max_new_tokens,
            **GREEDY,
        )
        rows = []
        for record, (_, reference), answer in zip(self.records, prompts, answers, strict=True):
            if answer.error is not None:  # a held-out record the model cannot take is a data problem
                raise InputError(f"held-out record {record.get('id')!r}: {answer.error}")
            result = self.metric(self.extract(answer.text), [reference])
            rows.append(
                {
                    "id": record.get("id"),
                    "reference": reference,
                    "answer": answer.text,
                    "score": sample_score(result),
                    "_result": result,
                }
            )
        return rows
