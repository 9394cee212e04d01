"""`make engines` as a test: glmlab's hand-offs checked by vLLM's and llama.cpp's own code
(engines/check.py). The full run is not in the default run (pyproject's addopts deselect the `engines`
marker): it needs the side environments engines/setup.sh builds (~15 GB). Run it with `make engines` or
`pytest -m engines`. How check.py reports a missing environment is tested in the default run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_side_environment_is_a_named_failure(tmp_path, monkeypatch, capsys) -> None:
    spec = importlib.util.spec_from_file_location("engines_check", ROOT / "engines" / "check.py")
    check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "engines_check", check)  # its dataclasses look their module up
    spec.loader.exec_module(check)
    monkeypatch.setattr(check, "ENGINES", tmp_path / "none")
    # main() points GLMLAB_HOME at its work folder; restored afterwards for the tests that follow
    monkeypatch.setenv("GLMLAB_HOME", os.environ.get("GLMLAB_HOME", ""))

    assert check.main(["--only", "vllm_lora,gguf", "--work", str(tmp_path / "work")]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (
        "ENGINES vllm_lora=FAIL:no_side_environment_.engines/vllm:_run_engines/setup.sh "
        "gguf=FAIL:no_side_environment_.engines/llama:_run_engines/setup.sh"
    )


@pytest.mark.engines
@pytest.mark.slow
def test_every_engine_check_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "engines" / "check.py")], capture_output=True, text=True, timeout=3600
    )
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1] == "ENGINES vllm_args=ok vllm_lora=ok merged_transformers=ok gguf=ok", (
        done.stdout + done.stderr[-4000:]
    )
    assert done.returncode == 0
