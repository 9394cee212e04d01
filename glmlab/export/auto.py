"""`export_for_serving`: export an adapter as what vLLM can serve, and say why that form was chosen.

vLLM serves LoRA adapters on the language model's linear layers, and on the vision blocks' and
merger's with its tower/connector LoRA. An adapter that also trains whole modules (`modules_to_save`,
e.g. lm_head), uses DoRA, or adapts modules vLLM has no LoRA slot for cannot be served as an adapter;
folded into its base weights it can. Vision modules vLLM has no LoRA layer for (the blocks' attn.qkv)
are dropped from the adapter export with a warning, and the reason says how many. `export_for_serving` asks
`check_for_vllm` (the one place that knows vLLM's rules) and writes the vLLM adapter folder when it
passes, the merged checkpoint otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glmlab.adapters import check_for_vllm, inspect_adapter
from glmlab.errors import ConfigError
from glmlab.export.merged import export_merged
from glmlab.export.vllm import VllmExport, export_vllm, merged_serve_line

FORMATS = ("vllm", "merged")


@dataclass
class ServingExport:
    """What `export_for_serving` wrote and how to serve it."""

    format: str  # "vllm" (an adapter folder next to the base model) or "merged" (a full checkpoint)
    path: Path
    reason: str  # why this format: what vLLM accepts or refuses about the adapter
    vllm_serve: str  # the `vllm serve` line that serves it
    vllm: VllmExport | None = None  # the adapter export's details when format == "vllm"


def servable_format(adapter: str | Path) -> tuple[str, str]:
    """("vllm", why) when vLLM can serve `adapter` as a LoRA adapter, else ("merged", vLLM's objection)."""
    info = inspect_adapter(adapter)
    try:
        modules = check_for_vllm(info)
    except ConfigError as error:
        return "merged", str(error)
    served = [f"LoRA on {len(modules.text)} language-model modules"]
    if modules.needs_tower_lora:
        served.append(
            f"{len(modules.tower) + len(modules.fuse)} vision-block and merger modules "
            "(served with --enable-tower-connector-lora)"
        )
    if modules.dropped:
        served.append(f"{len(modules.dropped)} vision modules vLLM ignores dropped")
    return "vllm", f"{info.path}: {', '.join(served)}, rank {info.rank}"


def export_for_serving(
    adapter: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> ServingExport:
    """Export `adapter` to `out` in the form vLLM can serve: the adapter itself when vLLM accepts it, the
    merged checkpoint when it does not (the reason is in the result)."""
    chosen, reason = servable_format(adapter)
    if chosen == "vllm":
        exported = export_vllm(adapter, out, model=model, name=name, overwrite=overwrite)
        return ServingExport("vllm", exported.path, reason, exported.vllm_serve, exported)
    path = export_merged(adapter, out, model=model, overwrite=overwrite)
    return ServingExport("merged", path, reason, merged_serve_line(path))
