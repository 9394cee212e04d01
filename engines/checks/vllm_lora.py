"""vLLM's own LoRA machinery, run on the tiny Glm4v on a CPU, loads every adapter `glmlab export
--format vllm` writes, applies every module of it (its vision-block and merger modules through vLLM's
tower/connector LoRA), and refuses (or would ignore part of) what glmlab refuses.

Runs in vLLM's environment. Request: {"checkpoint": the base model's folder, "max_lora_rank": int,
"adapters": {name: {"path", "expect": "load" | "reject", "glmlab": glmlab's refusal}}, "images":
{name: a safetensors file of pixel_values, image_grid_thw and glmlab's image embeddings "base" and
"adapted"}}.

vLLM builds its Glm4vForConditionalGeneration for the checkpoint on the CPU (its own model loader,
float32, eager) with LoRA and tower/connector LoRA on (`--enable-tower-connector-lora`), and puts the
LoRA manager its GPU model runner uses over it (LRUCacheWorkerLoRAManager.create_lora_manager): the
layers it wraps and the module names it expects come from the model itself. Each adapter then goes the
way the worker takes a request's adapter (add_adapter: PEFTHelper.from_local_dir, validate_legal
against the engine's LoRAConfig, LoRAModel.from_local_checkpoint with Glm4v's hf_to_vllm_mapper,
packing into vLLM's layers, activation), after validate_legal against the --max-lora-rank its
manifest asks for. Every module it holds must land in a LoRA layer vLLM built (vLLM ignores, with a
log line, the weights of a module it has no LoRA layer for). For the adapters in "images", vLLM's
vision tower and merger, with the tower and connector LoRA mappings its GPU model runner sets, embed
an image glmlab processed; the result must equal glmlab's (transformers + the adapter as trained),
and without the adapter the base model's. vLLM normalizes images on the device by default and its own
processor then leaves them unnormalized; glmlab hands over normalized pixels, so the engine is built
with mm_device_do_normalize=False.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from common import CheckFailed, main

# vLLM float32 against transformers float32, measured on the tiny model: 3e-9 without LoRA, 1e-6 of
# the largest value with it (the LoRA products summed in another order)
RELATIVE_TOLERANCE = 1e-4


def engine_config(checkpoint: str, max_lora_rank: int):
    """vLLM's configuration for `checkpoint` on the CPU, LoRA and tower/connector LoRA on."""
    from vllm import EngineArgs

    return EngineArgs(
        model=checkpoint,
        dtype="float32",
        enforce_eager=True,
        max_model_len=512,
        max_num_seqs=2,
        max_num_batched_tokens=512,
        limit_mm_per_prompt={"image": 1, "video": 0},
        mm_device_do_normalize=False,
        enable_lora=True,
        enable_tower_connector_lora=True,
        max_lora_rank=max_lora_rank,
        max_loras=1,
    ).create_engine_config()


def build(config):
    """vLLM's model on the CPU and the LoRA manager its GPU model runner would put on it (called within
    set_current_vllm_config, as vLLM's worker builds them)."""
    import torch
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.lora.worker_manager import LRUCacheWorkerLoRAManager
    from vllm.model_executor.model_loader import get_model

    with socket.socket() as probe:  # a free port for the one-process gloo group vLLM's layers ask for
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    init_distributed_environment(
        world_size=1, rank=0, local_rank=0, distributed_init_method=f"tcp://127.0.0.1:{port}", backend="gloo"
    )
    initialize_model_parallel(1, 1)
    model = get_model(vllm_config=config)
    workers = LRUCacheWorkerLoRAManager(config, torch.device("cpu"), model.embedding_modules)
    workers.create_lora_manager(model, config)
    return model, workers


def load(workers, name: str, path: Path, lora_id: int):
    """Load, pack and activate the adapter as vLLM's worker does; returns its request and modules."""
    from vllm.config import LoRAConfig
    from vllm.lora.peft_helper import PEFTHelper
    from vllm.lora.request import LoRARequest
    from vllm.lora.utils import parse_fine_tuned_lora_name

    manifest = path / "glmlab_export.json"
    if manifest.exists():  # the rank glmlab's serve line gives vLLM must hold the adapter
        rank = json.loads(manifest.read_text())["max_lora_rank"]
        PEFTHelper.from_local_dir(str(path), None).validate_legal(LoRAConfig(max_lora_rank=rank))
    request = LoRARequest(name, lora_id, str(path))
    workers.add_adapter(request)
    manager = workers._adapter_manager
    mapper = manager.model.hf_to_vllm_mapper.get_rename_mapper()
    written = {parse_fine_tuned_lora_name(key, mapper)[0] for key in _lora_a_keys(path)}
    served = set(manager.modules) | {part for parts in manager.packed_modules.values() for part in parts}
    ignored = sorted(written - served)
    if ignored:
        raise CheckFailed(f"{name}: vLLM has no LoRA layer for {len(ignored)} of its modules: {ignored[:3]}")
    return request, sorted(written)


def _lora_a_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as weights:
        return [key for key in weights.keys() if key.endswith("lora_A.weight")]  # noqa: SIM118


def embed(model, workers, request, tensors: dict):
    """vLLM's image embeddings with `request`'s LoRA (None: none) on the tower and the connector,
    mapped as vLLM's GPU model runner maps an encoder batch (_execute_mm_encoder)."""
    import torch
    from vllm.lora.layers import LoRAMapping, LoRAMappingType

    grid = tensors["image_grid_thw"]
    embeds = int(grid.prod(-1).sum()) // model.visual.spatial_merge_size**2
    tower, connector = model.get_mm_lora_token_counts(modality="image", mm_kwargs=None, num_mm_embeds=embeds)
    lora_id = request.lora_int_id if request else 0
    requests = {request} if request else set()
    for kind, tokens in ((LoRAMappingType.TOWER, tower), (LoRAMappingType.CONNECTOR, connector)):
        mapping = LoRAMapping((lora_id,) * tokens, (lora_id,), is_prefill=True, type=kind)
        workers.set_active_adapters(requests, mapping)
    with torch.inference_mode():
        return torch.cat(model.embed_multimodal(pixel_values=tensors["pixel_values"], image_grid_thw=grid))


def compare(name: str, what: str, got, expected) -> float:
    scale = float(expected.abs().max())
    error = float((got - expected).abs().max())
    if got.shape != expected.shape or error > RELATIVE_TOLERANCE * scale:
        raise CheckFailed(
            f"{name}: vLLM's image embeddings {what} differ from glmlab's by {error:.3g} (largest value "
            f"{scale:.3g}, shapes {tuple(got.shape)} and {tuple(expected.shape)})"
        )
    return error / scale


def check(request: dict) -> str:
    import vllm
    from vllm.config import set_current_vllm_config

    config = engine_config(request["checkpoint"], request["max_lora_rank"])
    with set_current_vllm_config(config):
        model, workers = build(config)
        if not workers.supports_tower_connector_lora():
            raise CheckFailed(f"vLLM {vllm.__version__}: no tower/connector LoRA for {type(model).__name__}")
        loaded, matched, refused = run_adapters(model, workers, request)
    return (
        f"vLLM {vllm.__version__} loads and applies {', '.join(loaded)} on Glm4v with tower/connector "
        f"LoRA; image embeddings as glmlab's for {', '.join(matched)}; refuses or ignores "
        f"{', '.join(refused)}, which glmlab refuses"
    )


def run_adapters(model, workers, request: dict) -> tuple[list[str], list[str], list[str]]:
    """Each adapter loaded (or refused) and, where glmlab sent an image, its embeddings compared."""
    from safetensors.torch import load_file

    loaded, matched, refused = [], [], []
    for lora_id, (name, adapter) in enumerate(request["adapters"].items(), 1):
        path = Path(adapter["path"])
        if adapter["expect"] == "reject":
            try:
                load(workers, name, path, lora_id)
            except (ValueError, CheckFailed) as error:
                refused.append(name)
                print(
                    f"{name}: vLLM cannot serve it as it is: {error}\n  glmlab: {adapter['glmlab']}",
                    flush=True,
                )
                continue
            raise CheckFailed(f"vLLM serves the {name} adapter that glmlab refuses ({adapter['glmlab']})")
        lora, modules = load(workers, name, path, lora_id)
        vision = [module for module in modules if module.startswith("visual.")]
        loaded.append(f"{name} ({len(modules)} modules, {len(vision)} vision)")
        print(f"{name}: loaded and applied {modules}", flush=True)
        if name in request["images"]:
            tensors = load_file(request["images"][name])
            base = compare(name, "without LoRA", embed(model, workers, None, tensors), tensors["base"])
            adapted = compare(name, "with its LoRA", embed(model, workers, lora, tensors), tensors["adapted"])
            matched.append(f"{name} (relative error {adapted:.1g}, base {base:.1g})")
        workers.remove_adapter(lora_id)
    return loaded, matched, refused


if __name__ == "__main__":
    main(check)
