"""Every notebook in notebooks/ runs top to bottom, offline, on the tiny model, and is committed clean.

The kernel is this interpreter (the project's .venv) through a kernelspec written for the test, so a
`python3` kernelspec installed elsewhere on the machine can never be picked up instead.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
KERNEL_NAME = "glmlab-test-venv"
CELL_TIMEOUT_S = 300


def venv_kernel(kernel_dir: Path, env: dict[str, str]) -> AsyncKernelManager:
    """A kernel manager that starts this interpreter's ipykernel with `env` added."""
    spec = kernel_dir / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "glmlab test (.venv)",
                "language": "python",
                "env": env,
            }
        )
    )
    return AsyncKernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    )


def test_there_are_notebooks():
    assert [path.name for path in NOTEBOOKS][:2] == ["01_quickstart.ipynb", "02_vqa_widget.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert dirty == [], f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_starts_with_a_parameters_cell_on_the_tiny_model(path):
    code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'MODEL = "tiny"' in code[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_defines_no_function_or_class(path):
    """Notebooks call the library; logic worth a function belongs in glmlab/."""
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        defined = [
            node.name
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        assert defined == [], f"{path.name} cell {index} defines {defined}: move it into glmlab/"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_top_to_bottom_offline(path, glmlab_home, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    env = {"GLMLAB_HOME": str(glmlab_home), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "agg"}
    client = NotebookClient(
        notebook,
        km=venv_kernel(tmp_path / "kernels", env),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )  # run in a scratch folder
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    code = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]
    silent = [index for index, cell in enumerate(code) if not cell.outputs and _shows_something(cell.source)]
    assert silent == [], f"{path.name}: code cells {silent} end in an expression but displayed nothing"
    stderr = "".join(
        output.get("text", "") for cell in code for output in cell.outputs if output.get("name") == "stderr"
    )
    assert "Traceback" not in stderr, f"{path.name}: a cell printed a traceback:\n{stderr[-2000:]}"


def _shows_something(source: str) -> bool:
    """Whether a cell ends in a value Jupyter displays: a name, attribute or item (a call may return None)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    body = ast.parse("\n".join(lines)).body
    if not body or not isinstance(body[-1], ast.Expr) or source.rstrip().endswith(";"):
        return False
    return isinstance(body[-1].value, ast.Name | ast.Attribute | ast.Subscript | ast.Tuple)
