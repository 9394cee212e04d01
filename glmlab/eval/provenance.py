"""What a run's config.json records: the suite, the model as evaluated, the run settings, library
versions and the git commit of glmlab, so any number in a report can be traced to what produced it."""

from __future__ import annotations

import datetime
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from glmlab.eval.latency import MemoryProbe
from glmlab.eval.suite import Suite
from glmlab.interface import DEFAULT_ADAPTER, AdapterChoice, Model


def describe_model(model: Model, local: bool, adapter: AdapterChoice) -> dict[str, Any]:
    """What config.json records about the model under evaluation."""
    if not local:
        return {
            "kind": "server",
            "name": str(getattr(model, "model", None) or "server"),  # a client's default model name
            "base_url": str(getattr(model, "base_url", "")) or None,
            "adapter": None if adapter is DEFAULT_ADAPTER else adapter,
        }
    active = model.active_adapter if adapter is DEFAULT_ADAPTER else adapter
    return {
        "kind": "local",
        "name": model.name,
        "source": model.source,
        "adapter": active,
        "adapter_path": model.adapters.get(active) if active else None,
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
        "quantized": getattr(model, "quantized", None),
        "max_image_pixels": model.max_image_pixels,
    }


def run_config(
    suite: Suite,
    model: Model,
    local: bool,
    adapter: AdapterChoice,
    name: str | None,
    limit: int | None,
    batch_size: int,
    concurrency: int,
) -> dict[str, Any]:
    """config.json: suite, model, run settings, library versions and the git commit of glmlab."""
    described = describe_model(model, local, adapter)
    label = name or described["name"] + (f"+{described['adapter']}" if described["adapter"] else "")
    pixels = suite.generation.get("max_image_pixels") or described.get("max_image_pixels")
    return {
        "name": label,
        "suite": suite.to_dict(),
        "model": described,
        "settings": {
            "limit": limit,
            "batch_size": batch_size if local else 1,
            "concurrency": 1 if local else concurrency,
            "max_image_pixels": pixels,
            "thinking": suite.prompt.thinking,
            "generation": suite.generation,
            "dtype": described.get("dtype"),
            "device": described.get("device", "server"),
            "memory": MemoryProbe._kind(local),
        },
        "versions": _versions(),
        "git": _git_state(),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("glmlab", "torch", "transformers", "peft", "datasets", "pandas", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _git_state() -> dict[str, Any]:
    """The commit of the glmlab checkout (None outside a git checkout) and whether it has edits."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}
