"""Other engines `glmlab serve` can hand the same settings to (vLLM, for throughput on a GPU)."""
