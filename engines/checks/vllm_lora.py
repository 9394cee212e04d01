"""vLLM's own LoRA loader accepts every adapter `glmlab export --format vllm` writes, and refuses what
glmlab refuses.

Runs in vLLM's environment. Request: {"adapters": {name: {"path", "expect": "load" | "reject",
"glmlab": glmlab's refusal}}}. Each adapter goes through the steps vLLM's worker takes when it loads
an adapter (vllm.lora.worker_manager.WorkerLoRAManager._load_adapter): PEFTHelper.from_local_dir,
validate_legal against the LoRAConfig glmlab's serve line asks for, and LoRAModel.from_local_checkpoint
with Glm4v's weight-name mapping (hf_to_vllm_mapper.get_rename_mapper()). The modules vLLM expects are
those of the Glm4v language model (packed_modules_mapping expanded, as the worker does); the worker
reads them from the instantiated model, which needs a GPU, so they are listed here.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import CheckFailed, main

# Glm4v's decoder linears as vLLM names them (Glm4Attention: qkv_proj, o_proj; Glm4MLP: gate_up_proj,
# down_proj), expanded through Glm4vForConditionalGeneration.packed_modules_mapping below.
LANGUAGE_MODEL_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
MAPPED_PREFIX = "language_model.model.layers."


def load(path: Path):
    """Load the adapter at `path` as vLLM's worker does; returns (LoRAModel, rank vLLM was given)."""
    from safetensors import safe_open
    from vllm.config import LoRAConfig
    from vllm.lora.lora_model import LoRAModel
    from vllm.lora.peft_helper import PEFTHelper
    from vllm.model_executor.models.glm4_1v import Glm4vForConditionalGeneration as Glm4v

    packed = Glm4v.packed_modules_mapping
    expected = {name for module in LANGUAGE_MODEL_MODULES for name in packed.get(module, [module])}
    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    text_config = json.loads((Path(base) / "config.json").read_text())["text_config"]
    manifest = path / "glmlab_export.json"
    max_rank = json.loads(manifest.read_text())["max_lora_rank"] if manifest.exists() else 512
    peft_helper = PEFTHelper.from_local_dir(str(path), text_config["max_position_embeddings"])
    peft_helper.validate_legal(LoRAConfig(max_lora_rank=max_rank, max_loras=1))
    lora = LoRAModel.from_local_checkpoint(
        str(path),
        expected,
        peft_helper=peft_helper,
        lora_model_id=1,
        device="cpu",
        model_vocab_size=text_config["vocab_size"],
        weights_mapper=Glm4v.hf_to_vllm_mapper.get_rename_mapper(),
    )
    with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as weights:
        written = sum(1 for key in weights.keys() if key.endswith("lora_A.weight"))  # noqa: SIM118
    if len(lora.loras) != written:
        raise CheckFailed(f"{path.name}: vLLM loaded {len(lora.loras)} of its {written} modules")
    unmapped = [name for name in lora.loras if not name.startswith(MAPPED_PREFIX)]
    if unmapped:
        raise CheckFailed(f"{path.name}: modules outside vLLM's language model after mapping: {unmapped[:3]}")
    ranks = {weights.rank for weights in lora.loras.values()}
    if ranks != {peft_helper.r}:
        raise CheckFailed(f"{path.name}: ranks {sorted(ranks)} loaded, {peft_helper.r} written")
    return lora


def check(request: dict) -> str:
    import vllm
    from vllm.model_executor.models.glm4_1v import Glm4vForConditionalGeneration as Glm4v

    loaded, refused = [], []
    for name, adapter in request["adapters"].items():
        path = Path(adapter["path"])
        if adapter["expect"] == "load":
            lora = load(path)
            loaded.append(f"{name} ({len(lora.loras)} modules)")
            print(f"{name}: loaded {sorted(lora.loras)}", flush=True)
            continue
        try:
            load(path)
        except (ValueError, CheckFailed) as error:
            refused.append(name)
            print(f"{name}: vLLM refuses it: {error}\n  glmlab: {adapter['glmlab']}", flush=True)
        else:
            raise CheckFailed(f"vLLM loads the {name} adapter that glmlab refuses ({adapter['glmlab']})")
    # glmlab's export drops vision-tower and merger modules; vLLM's Glm4v can serve them where this is true
    tower = getattr(Glm4v, "supports_tower_connector_lora", False)
    return (
        f"vLLM {vllm.__version__} loads {', '.join(loaded)}; refuses {', '.join(refused)} as glmlab does; "
        f"Glm4v supports_tower_connector_lora={tower}"
    )


if __name__ == "__main__":
    main(check)
