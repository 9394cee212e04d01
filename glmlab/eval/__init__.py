"""Evaluation: scoring model answers against references.

`glmlab.eval.extract` turns a raw answer into the part a metric scores (a JSON object, a number,
yes/no, a choice letter); `glmlab.eval.metrics` holds the metric registry and the sample-level
metrics; `glmlab.eval.fields` the field-level P/R/F1 for structured extraction; `glmlab.eval.stats`
bootstrap confidence intervals and paired tests. All of them are pure functions of text and numbers:
these modules import no model code, so scoring a saved run never needs a GPU or a checkpoint.
"""
