"""`make engines` as a test: glmlab's hand-offs checked by vLLM's and llama.cpp's own code
(engines/check.py). Not in the default run (pyproject's addopts deselect the `engines` marker): it needs
the side environments engines/setup.sh builds (~10 GB). Run it with `make engines` or `pytest -m engines`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.engines, pytest.mark.slow]


def test_every_engine_check_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "engines" / "check.py")], capture_output=True, text=True, timeout=3600
    )
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1] == "ENGINES vllm_args=ok vllm_lora=ok merged_transformers=ok gguf=ok", (
        done.stdout + done.stderr[-4000:]
    )
    assert done.returncode == 0
