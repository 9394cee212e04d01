"""`TrainingProgress`: one progress bar and one compact line per evaluation, instead of log dicts.

The Trainer's own ProgressCallback prints every log entry as a raw dict, and with transformers'
logging quietened (as the CLI does) it falls back to PrinterCallback, which prints the dicts alone.
This callback replaces both: a tqdm bar over the optimiser steps (a widget in notebooks) whose postfix
carries the latest loss, and at each evaluation a line `step 50/150  loss 2.050  exact_match 0.833`.
The numbers themselves stay in `TrainResult.history`.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer import DEFAULT_PROGRESS_CALLBACK
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class TrainingProgress(TrainerCallback):
    """A tqdm bar over the optimiser steps, and a compact line at each held-out evaluation."""

    replaces = (PrinterCallback, ProgressCallback, DEFAULT_PROGRESS_CALLBACK)  # the last: notebooks'

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.enabled and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.loss = float(logs["loss"])
            self.bar.set_postfix(loss=f"{self.loss:.3f}", refresh=False)
        scores = {key.removeprefix("eval_"): value for key, value in logs.items() if _is_score(key)}
        if scores:
            self.bar.write(evaluation_line(state.global_step, state.max_steps, self.loss, scores))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_score(key: str) -> bool:
    return key.startswith("eval_") and not key.endswith(("_runtime_s", "_runtime"))


def evaluation_line(step: int, max_steps: int, loss: float | None, scores: dict[str, float]) -> str:
    """`step 50/150  loss 2.050  exact_match 0.833`: one row of the training's loss/metric table."""
    width = len(str(max_steps))
    parts = [f"step {step:>{width}}/{max_steps}", "loss " + ("  -  " if loss is None else f"{loss:.3f}")]
    parts += [f"{name} {value:.3f}" for name, value in scores.items()]
    return "  ".join(parts)
