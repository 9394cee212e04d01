"""`glmlab.load`: from a name (hub id, local folder or "tiny") to a ready `VLM`.

Every source goes through the same transformers path (AutoProcessor + AutoModelForImageTextToText),
so GLM-4.1V, 4.5V, 4.6V and 4.6V-Flash load alike and the tiny test checkpoint exercises the code a
hub checkpoint takes. Each automatic choice (device, dtype) is logged with its reason.

Models larger than one GPU (GLM-4.5V/4.6V, `glm4v_moe`, 108 B parameters, about 215 GB in bf16) are
spread by accelerate's device map: `device="auto"` fills the GPUs in turn, then CPU memory, then an
`offload_folder` on disk, never splitting a decoder layer or vision block (the model's
`_no_split_modules`). `max_memory` caps what each device takes. glmlab adds no placement logic of its
own: it chooses between one device and accelerate's map and hands the choice to `from_pretrained`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glmlab import tiny
from glmlab.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "zai-org/GLM-4.6V-Flash"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
QUANTIZE = ("8bit", "4bit")


def glmlab_home() -> Path:
    """Where glmlab caches what it builds (the tiny checkpoint): $GLMLAB_HOME or ~/.cache/glmlab."""
    return Path(os.environ.get("GLMLAB_HOME", Path.home() / ".cache" / "glmlab"))


def load(
    model: str | Path = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    quantize: str | None = None,
    adapter: str | Path | None = None,
    max_image_pixels: int | None = None,
    revision: str | None = None,
    allow_urls: bool = False,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
):
    """Load a GLM-V model and its processor; returns a `VLM`.

    model: a hub id (default GLM-4.6V-Flash), a local checkpoint folder, or "tiny" / "tiny-moe"
    (random weights; dense glm4v / mixture-of-experts glm4v_moe).
    dtype: "auto" | "bfloat16" | "float16" | "float32". device: "auto" | "cpu" | "cuda" | "cuda:N";
    "auto" spreads the model over all GPUs (then CPU, then disk) with accelerate's device map, or
    stays on the CPU where there is no GPU. max_memory: per-device caps for that map, e.g.
    {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}; given with device "cpu" or "auto" it places the model
    by the map even without a GPU (CPU, then disk). offload_folder: where weights that fit nowhere
    else go (needed only when the map reaches the disk).
    quantize: None | "8bit" | "4bit" (bitsandbytes, CUDA only). adapter: a PEFT LoRA folder.
    max_image_pixels: largest image area kept after resizing, the main latency lever (see prompts).
    allow_urls: let messages reference http(s) images.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from glmlab.model import VLM

    source = resolve_source(model)
    placement = resolve_placement(device, max_memory, offload_folder)
    torch_dtype = resolve_dtype(dtype, placement.device)
    options: dict[str, Any] = {"dtype": torch_dtype, "revision": revision, **placement.options()}
    quantization = quantization_config(quantize, placement.device, torch_dtype)
    if quantization is not None:
        options["quantization_config"] = quantization
    try:
        processor = AutoProcessor.from_pretrained(source, revision=revision)
        network = AutoModelForImageTextToText.from_pretrained(source, **options)
    except (OSError, ValueError) as error:
        raise _load_error(model, source, error) from None
    if not hasattr(processor, "image_processor"):
        raise ModelLoadError(
            f"{model}: AutoProcessor returned a bare {type(processor).__name__}, not a "
            "vision processor; install transformers>=5.24 (models/glm46v)."
        )
    network.eval()
    _check_device_map(network, max_memory)
    vlm = VLM(
        network,
        processor,
        name=str(model),
        source=str(source),
        max_image_pixels=max_image_pixels,
        allow_urls=allow_urls,
        quantized=quantize,
    )
    logger.info(
        "max_image_pixels=%s (%s); lower it for latency",
        f"{vlm.max_image_pixels:,}",
        "given" if max_image_pixels else "the processor's default",
    )
    if adapter is not None:
        vlm.load_adapter(adapter)
    return vlm


def resolve_source(model: str | Path) -> str:
    """A local folder, a tiny checkpoint's cache folder ("tiny", "tiny-moe"), or the hub id unchanged."""
    if str(model) in tiny.KINDS:
        path = tiny.ensure(glmlab_home(), kind=str(model))
        warnings.warn(
            f"glmlab {str(model)!r} checkpoint: RANDOM WEIGHTS, its answers are noise. It exists to test "
            "the pipeline offline; load a real model for real answers.",
            UserWarning,
            stacklevel=3,
        )
        return str(path)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"{model}: is not a checkpoint folder (no config.json). Pass a folder saved "
                "by save_pretrained or downloaded from the hub, or a hub id."
            )
        return str(path)
    if str(model).startswith((".", "/", "~")) or str(model).count("/") > 1:
        raise ModelLoadError(
            f"{model}: no such folder. Pass an existing checkpoint folder, a hub id such "
            f"as {DEFAULT_MODEL!r}, or 'tiny'."
        )
    return str(model)


@dataclass(frozen=True)
class Placement:
    """Where the weights go: one device, or accelerate's device map ("auto") under optional caps."""

    device: str  # the device that decides dtype and quantisation: "cpu", "cuda" or "cuda:N"
    device_map: str | dict[str, str] | None = None
    max_memory: dict[int | str, int | str] | None = None
    offload_folder: str | None = None

    def options(self) -> dict[str, Any]:
        """The `from_pretrained` keywords of this placement (none for a plain CPU load)."""
        names = ("device_map", "max_memory", "offload_folder")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def resolve_placement(
    device: str,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
) -> Placement:
    """One device, or accelerate's map: "auto" with a GPU spreads over all GPUs (then CPU, disk);
    max_memory with "auto" or "cpu" asks for the map even without a GPU (CPU, then disk)."""
    chosen = resolve_device(device)
    folder = None if offload_folder is None else str(offload_folder)
    spread = (device == "auto" and chosen == "cuda") or (max_memory is not None and device in ("auto", "cpu"))
    if max_memory is not None and not spread:
        raise ModelLoadError(
            f"max_memory is given with device={device!r}: caps apply to accelerate's device map, which "
            "device='auto' (or 'cpu') uses; a single GPU takes the whole model. Pass device='auto'."
        )
    if not spread:
        return Placement(chosen, {"": chosen} if chosen.startswith("cuda") else None)
    if device == "cpu" and any(key not in ("cpu", "disk") for key in max_memory or {}):
        raise ModelLoadError(
            f"device='cpu' with max_memory={max_memory!r}: only 'cpu' (and 'disk') may be capped on the "
            "CPU; pass device='auto' to use the GPUs."
        )
    memory = dict(max_memory) if max_memory is not None else None
    if device == "cpu" and memory is not None:  # accelerate would otherwise also fill any GPU it sees
        memory.update({index: 0 for index in range(torch.cuda.device_count())})
    return Placement(chosen, "auto", memory, folder)


# A module whose parent's forward reads its weight directly, past accelerate's hooks: on the disk its
# weight stays on "meta" and the first image fails deep in the vision tower.
READ_DIRECTLY = "model.visual.embeddings"


def _check_device_map(network: Any, max_memory: dict | None) -> None:
    """Log where modules went (a spread model only); refuse a map that put the vision embeddings on disk."""
    device_map = getattr(network, "hf_device_map", None) or {}
    on_disk = [name for name, place in device_map.items() if place == "disk"]
    if any(name == "" or f"{READ_DIRECTLY}.".startswith(f"{name}.") for name in on_disk):
        raise ModelLoadError(
            f"max_memory={max_memory!r} leaves no room for the vision tower's embeddings, which accelerate "
            "cannot run from disk; raise the 'cpu' (or a GPU's) cap so the vision tower fits in memory."
        )
    counts = Counter(str(place) for place in device_map.values())
    if set(device_map) <= {""}:  # one device for all: nothing to report
        return
    logger.info(
        "device map: %s",
        ", ".join(f"{place}: {count} module(s)" for place, count in sorted(counts.items())),
    )


def resolve_device(device: str) -> str:
    if device == "auto":
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
        logger.info(
            "device='auto' -> %s (%s)", chosen, "a CUDA GPU is present" if chosen == "cuda" else "no GPU"
        )
        return chosen
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device={device!r}: no CUDA GPU is available on this machine; use device='cpu'."
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype in DTYPES:
        return DTYPES[dtype]
    if dtype != "auto":
        raise ModelLoadError(f"dtype={dtype!r}: expected 'auto', 'bfloat16', 'float16' or 'float32'.")
    if device == "cpu":
        logger.info("dtype='auto' -> float32 (CPU: bfloat16 matmul is slow there)")
        return torch.float32
    chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    logger.info("dtype='auto' -> %s (the checkpoint is bf16; float16 where the GPU lacks bf16)", chosen)
    return chosen


def quantization_config(quantize: str | None, device: str, dtype: torch.dtype):
    """bitsandbytes settings; the vision tower and lm_head stay unquantised (they are small and sensitive)."""
    if quantize is None:
        return None
    if quantize not in QUANTIZE:
        raise ModelLoadError(f"quantize={quantize!r}: expected None, '8bit' or '4bit'.")
    if not device.startswith("cuda"):
        raise ModelLoadError(
            f"quantize={quantize!r} needs a CUDA GPU (bitsandbytes); the device is {device}. "
            "Load without quantize on a CPU."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError(
            f"quantize={quantize!r} needs bitsandbytes: pip install 'glmlab[quant]'."
        ) from None
    from transformers import BitsAndBytesConfig

    skip = ["visual", "lm_head"]
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=skip,
    )


def _load_error(model: str | Path, source: str, error: Exception) -> ModelLoadError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if Path(source).exists():
        return ModelLoadError(f"{model}: the checkpoint folder could not be loaded ({reason}).")
    return ModelLoadError(
        f"{model}: could not be loaded. It is not a local folder, and it could not be downloaded from the "
        f"Hugging Face hub ({reason}). Offline? Use glmlab.load('tiny') for the built-in test checkpoint "
        f"(random weights), or download the model on a connected machine (huggingface-cli download {model} "
        "--local-dir DIR) and pass that folder: glmlab.load('DIR')."
    )


def meta_model(config: dict[str, Any]):
    """The network of a config.json dict on PyTorch's meta device: exact shapes and parameter counts, no memory."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    values = dict(config)
    built = AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(built)


def base_config(model: str):
    """The base model's transformers config (local folder, 'tiny', or hub id from the cache/hub)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_source(model))
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{model}: the base model's config could not be read ({error}); pass --model with "
            "a local checkpoint folder or a hub id reachable from here."
        ) from None
