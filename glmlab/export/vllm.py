"""`export_vllm`: a LoRA adapter rewritten so vLLM serves it on Glm4vForConditionalGeneration.

vLLM serves LoRA on the language model, and on the vision blocks and merger when it runs with
`--enable-tower-connector-lora` (`glmlab.adapters.vllm_modules` gives vLLM's rules). The export keeps
the adapter's language-model weights and the vision weights vLLM applies (PEFT names, which vLLM maps
itself), fuses each vision gate_proj / up_proj pair into the one gate_up_proj LoRA vLLM takes there
(`fuse_gate_up`), drops the vision modules vLLM has no LoRA layer for with a warning naming them (or
refuses them with strict=True), checks the rank against vLLM's allowed ranks and the module names
against the base model's layers, and writes a manifest with the `vllm serve` line that serves it (with
`--enable-tower-connector-lora` when it holds vision modules: `tower_connector_lora` says so).

Every export (this one and `export_merged`) is written to a folder beside `out` and renamed into place
when complete (`glmlab.files.staged_folder`), so a crash or a failed merge leaves `out` as it was;
`overwrite` replaces only an empty folder or an earlier export (one holding `glmlab_export.json`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmlab.adapters import (
    FUSED_INTO,
    TOWER_FLAG,
    check_adapter_name,
    check_for_vllm,
    inspect_adapter,
    max_lora_rank,
    module_name,
    vllm_rank,
    vllm_target_regex,
)
from glmlab.errors import ConfigError, GlmlabError
from glmlab.files import staged_folder
from glmlab.loading import base_config

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
MANIFEST = "glmlab_export.json"


@dataclass
class VllmExport:
    """What `export_vllm` wrote: the folder, and the facts vLLM needs to serve it."""

    path: Path
    name: str
    base_model: str
    rank: int
    max_lora_rank: int  # holds the largest LoRA written (a fused gate_up_proj holds two ranks)
    modules: list[str]  # as written (vision gate_proj / up_proj pairs as their gate_up_proj)
    dropped_modules: list[str]  # vision modules vLLM has no LoRA layer for
    fused_modules: dict[str, list[str]]  # each gate_up_proj written: the modules it was made of
    tower_connector_lora: bool  # holds vision modules: vLLM applies them with TOWER_FLAG only
    vllm_serve: str

    def to_dict(self) -> dict:
        return {**asdict(self), "format": "vllm", "path": str(self.path)}


def export_vllm(
    adapter: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    name: str | None = None,
    strict: bool = False,
    overwrite: bool = False,
) -> VllmExport:
    """Write a vLLM-ready copy of `adapter` to `out` and return what was written.

    model: the base model (default: the adapter's own, from glmlab.json or adapter_config.json).
    name: the adapter's name in `--lora-modules` (default: the folder name of `out`).
    strict: refuse vision modules vLLM has no LoRA layer for (the blocks' attn.qkv) instead of dropping them.
    """
    from safetensors.torch import load_file, save_file

    info = inspect_adapter(adapter)
    base = info.require_base(model)
    modules = check_for_vllm(info, *_layer_counts(base))
    if modules.dropped:
        _drop(info.path, modules.dropped, strict)
    name = name or Path(out).expanduser().name
    check_adapter_name(name)  # before anything is written: the name goes into the serve line
    out = Path(out).expanduser()
    with prepare_output(out, overwrite, info.path) as staging:
        source = load_file(str(info.path / "adapter_model.safetensors"))
        kept = set(modules.text + modules.tower)
        tensors = {key: value for key, value in source.items() if module_name(key) in kept}
        fused = fuse_gate_up(source, modules.fuse, info.config)
        for target, (lora_a, lora_b) in fused.items():
            tensors[f"base_model.model.{target}.lora_A.weight"] = lora_a
            tensors[f"base_model.model.{target}.lora_B.weight"] = lora_b
        save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        written = sorted(kept | set(fused))
        config = {
            **info.config,
            "base_model_name_or_path": base,
            "target_modules": vllm_target_regex(written),
        }
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2))
        (staging / "glmlab.json").write_text(json.dumps({"base_model": base}, indent=2))
        export = VllmExport(
            out,
            name,
            base,
            info.rank,
            max_lora_rank(vllm_rank(info)),
            written,
            modules.dropped,
            {target: _halves(target, modules.fuse) for target in sorted(fused)},
            modules.needs_tower_lora,
            _serve_line(base, name, staging, out),
        )
        (staging / MANIFEST).write_text(json.dumps(export.to_dict(), indent=2))
    logger.info(
        "exported %s for vLLM to %s (rank %d, %d modules%s)",
        info.path,
        out,
        info.rank,
        len(written),
        f"; vision modules: serve with {TOWER_FLAG}" if export.tower_connector_lora else "",
    )
    return export


def _drop(path: Path, dropped: list[str], strict: bool) -> None:
    """Warn that `dropped` are left out (or refuse them with strict)."""
    listed = ", ".join(dropped[:4]) + (f" ... ({len(dropped)} in all)" if len(dropped) > 4 else "")
    if strict:
        raise ConfigError(
            f"{path}: adapts vision-tower modules that vLLM would ignore (it has no LoRA layer for them "
            f"in Glm4v): {listed}. Retrain without them (vLLM applies LoRA to the vision blocks' "
            "attn.proj and MLP and to the merger, not to attn.qkv), or export without --strict to drop them."
        )
    message = f"{path}: dropping vision-tower modules vLLM would ignore (no LoRA layer for them): {listed}."
    warnings.warn(message, UserWarning, stacklevel=3)
    logger.warning(message)


def fuse_gate_up(
    tensors: dict[str, torch.Tensor], halves: list[str], config: dict
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One LoRA (lora_A, lora_B) for each gate_up_proj whose gate_proj / up_proj halves are in `halves`.

    vLLM's gate_up_proj computes [gate(x); up(x)]; the halves' LoRAs add [s_g B_g A_g x; s_u B_u A_u x].
    One LoRA with A = [A_g; A_u] and B = [[B_g, 0], [0, B_u]] adds exactly that (rank r_g + r_u); a half
    the adapter does not train adds zero rows. vLLM scales the fused LoRA by the scale PEFT's rule gives
    the name gate_up_proj (alpha / r, or alpha / sqrt(r) with rsLoRA, after rank_pattern and
    alpha_pattern), so each half's B carries its own scale over that one. Written by hand: neither peft
    nor vLLM converts an adapter between separate and fused projections.
    """
    import torch

    lora = {(module_name(key), key.rsplit(".", 2)[-2]): value for key, value in tensors.items()}
    fused = {}
    for target in sorted({_target(module) for module in halves}):
        parts = [f"{target.rpartition('.')[0]}.{half}" for half in ("gate_proj", "up_proj")]
        out_features = next(lora[(part, "lora_B")].shape[0] for part in parts if part in halves)
        factors_a, factors_b = [], []
        for part in parts:
            if part not in halves:
                factors_b.append(torch.zeros(out_features, 0))
                continue
            ratio = _lora_scale(config, part) / _lora_scale(config, target)
            lora_b = lora[(part, "lora_B")]
            factors_a.append(lora[(part, "lora_A")])
            factors_b.append(lora_b if ratio == 1 else lora_b * ratio)
        dtype = factors_a[0].dtype
        fused[target] = (
            torch.cat(factors_a).to(dtype).contiguous(),
            torch.block_diag(*(factor.to(dtype) for factor in factors_b)).contiguous(),
        )
    return fused


def _target(half: str) -> str:
    parent, _, name = half.rpartition(".")
    return f"{parent}.{FUSED_INTO[name]}"


def _halves(target: str, halves: list[str]) -> list[str]:
    return [half for half in halves if _target(half) == target]


def _lora_scale(config: dict, module: str) -> float:
    """The scale PEFT gives `module`'s LoRA (vLLM's PEFTHelper.get_rank_and_scaling follows the same rule)."""
    from peft.utils.other import get_pattern_key

    def pattern_value(field: str, default: float) -> float:
        pattern = config.get(field) or {}
        return pattern.get(get_pattern_key(list(pattern), module), default) if pattern else default

    rank = pattern_value("rank_pattern", config.get("r", 8))
    alpha = pattern_value("alpha_pattern", config.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _layer_counts(base: str) -> tuple[int | None, int | None]:
    """The base model's text layers and vision blocks, or None for both (checked by pattern only) when
    its config is out of reach."""
    try:
        config = base_config(base)
        vision = getattr(config, "vision_config", None)
        return config.get_text_config().num_hidden_layers, getattr(vision, "depth", None)
    except GlmlabError as error:  # offline with no cached config: still export, with a note
        logger.warning(
            "could not read %s's config (%s); module names are checked by pattern only", base, error
        )
        return None, None


def _serve_line(base: str, name: str, staging: Path, out: Path) -> str:
    """The `vllm serve` line of the export, built (and so checked) on the staged folder, naming `out`."""
    from glmlab.serve.engines.vllm import vllm_command
    from glmlab.serve.settings import ServerSettings

    command = vllm_command(ServerSettings(model=base, adapters={name: str(staging)}, port=8000))
    staged = f"{name}={staging.resolve()}"
    command.argv = [f"{name}={out.resolve()}" if arg == staged else arg for arg in command.argv]
    return command.shell()


def merged_serve_line(checkpoint: Path) -> str:
    """The `vllm serve` line for a merged checkpoint folder (no LoRA flags)."""
    from glmlab.serve.engines.vllm import vllm_command
    from glmlab.serve.settings import ServerSettings

    return vllm_command(ServerSettings(model=str(Path(checkpoint).resolve()), port=8000)).shell()


@contextlib.contextmanager
def prepare_output(out: str | Path, overwrite: bool, source: Path) -> Iterator[Path]:
    """A staging folder to write the export in, which replaces `out` when the block succeeds.

    Refused before anything is written: an `out` that is (or holds) the adapter being exported or the
    current folder, a file, and a non-empty folder unless overwrite=True and it holds an earlier
    export (its MANIFEST): --overwrite never deletes a folder of other files.
    """
    out = Path(out).expanduser()
    resolved = out.resolve()
    if source.resolve().is_relative_to(resolved):
        raise ConfigError(f"{out}: holds the adapter being exported ({source}); choose another --out.")
    if Path.cwd().resolve().is_relative_to(resolved):
        raise ConfigError(
            f"{out}: is the current folder (or holds it); write the export to a folder of its own, "
            "e.g. --out exports/NAME."
        )
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"{out}: is a file; --out takes a folder.")
    if resolved.is_dir() and any(resolved.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{out}: already exists and is not empty; choose another --out or pass --overwrite."
            )
        if not (resolved / MANIFEST).is_file():
            raise ConfigError(
                f"{out}: is not empty and holds no glmlab export ({MANIFEST}); --overwrite replaces only "
                "an earlier export. Choose another --out, or remove that folder yourself."
            )
    with staged_folder(resolved) as staging:
        yield staging
