"""Evaluation: suites, the harness that runs them, and scoring model answers against references.

- `Suite` (`glmlab.eval.suite`): what an evaluation measures, read from `eval/*.yaml`.
- `evaluate(suite, model, ...) -> EvalRun` (`glmlab.eval.harness`): ask, score, time, keep every row
  in a run folder that resumes after an interruption; `EvalRun.load(run_dir)` reads one back.
- `compare(runs)` and `report(runs, path)`: runs side by side with paired tests, and an HTML report.

`glmlab.eval.extract` turns a raw answer into the part a metric scores (a JSON object, a number,
yes/no, a choice letter); `glmlab.eval.metrics` holds the metric registry and the sample-level
metrics; `glmlab.eval.fields` the field-level P/R/F1 for structured extraction; `glmlab.eval.stats`
bootstrap confidence intervals and paired tests. All of them are pure functions of text and numbers:
these modules import no model code, so scoring a saved run never needs a GPU or a checkpoint. The
names above load on first use, so `import glmlab.eval` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Suite": "glmlab.eval.suite",
    "evaluate": "glmlab.eval.harness",
    "EvalRun": "glmlab.eval.run",
    "compare": "glmlab.eval.comparison",
    "plot_comparison": "glmlab.eval.comparison",
    "report": "glmlab.eval.reporting",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glmlab.eval' has no attribute {name!r}")
