"""`export_vllm`: a LoRA adapter rewritten so vLLM serves it on Glm4vForConditionalGeneration.

vLLM puts LoRA on the language model only. The export keeps the adapter's language-model weights
(PEFT names, which vLLM maps itself), drops vision-tower modules with a warning naming them (or
refuses them with strict=True), checks the rank against vLLM's allowed ranks and the module names
against the base model's layers, and writes a manifest with the `vllm serve` line that serves it.

Every export (this one and `export_merged`) is written to a folder beside `out` and renamed into place
when complete (`glmlab.files.staged_folder`), so a crash or a failed merge leaves `out` as it was;
`overwrite` replaces only an empty folder or an earlier export (one holding `glmlab_export.json`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from glmlab.adapters import (
    check_adapter_name,
    check_for_vllm,
    inspect_adapter,
    max_lora_rank,
    module_name,
    text_target_regex,
)
from glmlab.errors import ConfigError, GlmlabError
from glmlab.files import staged_folder
from glmlab.loading import base_config

logger = logging.getLogger(__name__)
MANIFEST = "glmlab_export.json"


@dataclass
class VllmExport:
    """What `export_vllm` wrote: the folder, and the facts vLLM needs to serve it."""

    path: Path
    name: str
    base_model: str
    rank: int
    max_lora_rank: int
    modules: list[str]
    dropped_modules: list[str]
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
    strict: refuse vision-tower modules instead of dropping them.
    """
    from safetensors.torch import load_file, save_file

    info = inspect_adapter(adapter)
    base = info.require_base(model)
    modules = check_for_vllm(info, num_layers=_text_layers(base))
    if modules.vision:
        listed = ", ".join(modules.vision[:4]) + (
            f" ... ({len(modules.vision)} in all)" if len(modules.vision) > 4 else ""
        )
        if strict:
            raise ConfigError(
                f"{info.path}: adapts vision-tower modules that vLLM would ignore: {listed}. Retrain with "
                "target modules anchored to language_model.layers, or export without --strict to drop them."
            )
        message = f"{info.path}: dropping vision-tower modules vLLM would ignore: {listed}."
        warnings.warn(message, UserWarning, stacklevel=2)
        logger.warning(message)
    name = name or Path(out).expanduser().name
    check_adapter_name(name)  # before anything is written: the name goes into the serve line
    out = Path(out).expanduser()
    kept = set(modules.text)
    with prepare_output(out, overwrite, info.path) as staging:
        tensors = load_file(str(info.path / "adapter_model.safetensors"))
        save_file(
            {key: value for key, value in tensors.items() if module_name(key) in kept},
            str(staging / "adapter_model.safetensors"),
            metadata={"format": "pt"},
        )
        config = {
            **info.config,
            "base_model_name_or_path": base,
            "target_modules": text_target_regex(modules.text),
        }
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2))
        (staging / "glmlab.json").write_text(json.dumps({"base_model": base}, indent=2))
        export = VllmExport(
            out,
            name,
            base,
            info.rank,
            max_lora_rank(info.rank),
            modules.text,
            modules.vision,
            _serve_line(base, name, staging, out),
        )
        (staging / MANIFEST).write_text(json.dumps(export.to_dict(), indent=2))
    logger.info("exported %s for vLLM to %s (rank %d, %d modules)", info.path, out, info.rank, len(kept))
    return export


def _text_layers(base: str) -> int | None:
    """The base model's text layer count, or None (checked by pattern only) when its config is out of reach."""
    try:
        return base_config(base).get_text_config().num_hidden_layers
    except GlmlabError as error:  # offline with no cached config: still export, with a note
        logger.warning(
            "could not read %s's config (%s); module names are checked by pattern only", base, error
        )
        return None


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
