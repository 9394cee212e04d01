"""The mixture-of-experts family (glm4v_moe: GLM-4.5V/4.6V) on the tiny MoE checkpoint, and placement by
accelerate's device map: load, answer, train a LoRA adapter, spread over CPU and disk."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from support import scene

import glmlab
from glmlab.errors import ConfigError, ModelLoadError
from glmlab.loading import resolve_placement
from glmlab.lora import train
from glmlab.lora.recipe import LANGUAGE_TARGETS, MOE_LANGUAGE_TARGETS, AdapterSettings
from glmlab.reference import glm45v_config

LORA_DIR = Path(__file__).resolve().parents[1] / "lora"
GREEDY = dict(thinking=False, temperature=0, max_new_tokens=6, repetition_penalty=1.0)
SHORT = {
    "base_model": "tiny-moe",
    "adapter.adapt_vision": "none",
    "optimizer.max_steps": 3,
    "data.n": 6,
    "optimizer.batch_size": 2,
    "evaluation.samples": 2,
    "evaluation.every_steps": 3,
    "checkpoints.every_steps": 3,
    "logging_steps": 1,
    "optimizer.warmup_ratio": 0.0,
}


def load_quietly(model: str, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return glmlab.load(model, **options)


@pytest.fixture(scope="module")
def moe():
    return load_quietly("tiny-moe")


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory, moe):
    return train(LORA_DIR / "shapes.yaml", tmp_path_factory.mktemp("moe") / "run", **SHORT)


def test_the_reference_config_is_glm45v_at_its_published_size():
    from glmlab.loading import meta_model

    network = meta_model(glm45v_config())
    parameters = sum(p.numel() for p in network.parameters())
    routers = sum(
        b.numel() for name, b in network.named_buffers() if name.endswith("e_score_correction_bias")
    )
    assert type(network).__name__ == "Glm4vMoeForConditionalGeneration"
    assert parameters + routers == 107_710_933_120  # the hub checkpoint's tensors, router biases included


def test_tiny_moe_keeps_the_real_layout_dense_first_layer_fused_experts_shared_expert(moe):
    text = moe.model.config.text_config
    assert moe.model.config.model_type == "glm4v_moe" and type(moe.model).__name__.startswith("Glm4vMoe")
    assert (text.n_routed_experts, text.num_experts_per_tok, text.first_k_dense_replace) == (4, 2, 1)
    assert text.rope_parameters["mrope_section"] == [2, 3, 3]  # head_dim 32: 8 rotary pairs
    shapes = {name: tuple(p.shape) for name, p in moe.model.named_parameters()}
    layers = "model.language_model.layers"
    assert shapes[f"{layers}.0.mlp.gate_proj.weight"] == (128, 64)  # dense first layer
    assert shapes[f"{layers}.1.mlp.experts.gate_up_proj"] == (4, 64, 64)  # fused: [experts, 2 x 32, hidden]
    assert shapes[f"{layers}.1.mlp.experts.down_proj"] == (4, 64, 32)
    assert shapes[f"{layers}.1.mlp.shared_experts.up_proj.weight"] == (32, 64)
    assert shapes[f"{layers}.1.self_attn.q_proj.weight"] == (128, 64)  # 4 heads x 32 over hidden 64


def test_tiny_moe_checkpoint_stores_experts_per_expert_as_the_hub_does(moe):
    with safe_open(str(Path(moe.source) / "model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
    expert = "model.language_model.layers.1.mlp.experts"
    assert {f"{expert}.{e}.{p}_proj.weight" for e in range(4) for p in ("gate", "up", "down")} <= keys
    assert f"{expert}.gate_up_proj" not in keys


def test_tiny_moe_answers_an_image_question(moe):
    answer = moe.ask(scene(), "What colour is the shape?", **GREEDY)
    assert answer.error is None and answer.usage.completion_tokens == 6 and answer.usage.image_tokens > 0
    assert answer.text == moe.ask(scene(), "What colour is the shape?", **GREEDY).text


def test_a_device_map_over_cpu_and_disk_answers_as_the_plain_load(moe, tmp_path):
    spread = load_quietly(
        "tiny-moe", device="cpu", max_memory={"cpu": "60MB"}, offload_folder=tmp_path / "offload"
    )
    places = set(spread.model.hf_device_map.values())
    assert places == {"cpu", "disk"}, spread.model.hf_device_map
    assert spread.device == torch.device("cpu")
    assert (
        spread.ask(scene(), "What colour?", **GREEDY).text == moe.ask(scene(), "What colour?", **GREEDY).text
    )


def test_a_map_that_puts_the_vision_embeddings_on_disk_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"max_memory=\{'cpu': '1MB'\} leaves no room for the vision"):
        load_quietly("tiny-moe", device="cpu", max_memory={"cpu": "1MB"}, offload_folder=tmp_path)


def test_placement_options():
    assert resolve_placement("cpu").options() == {}
    assert resolve_placement("cpu", {"cpu": "1GB"}, "off").options() == {
        "device_map": "auto",
        "max_memory": {"cpu": "1GB", **{i: 0 for i in range(torch.cuda.device_count())}},
        "offload_folder": "off",
    }
    if not torch.cuda.is_available():
        assert resolve_placement("auto").options() == {}  # no GPU: stays on the CPU, no map
    with pytest.raises(ModelLoadError, match=r"device='cpu' with max_memory=\{0: '10GiB'\}: only 'cpu'"):
        resolve_placement("cpu", {0: "10GiB"})


def test_moe_default_targets_are_the_attention_projections():
    adapter = AdapterSettings()
    assert adapter.target_regex_for("glm4v") == LANGUAGE_TARGETS
    assert adapter.target_regex_for("glm4v_moe") == MOE_LANGUAGE_TARGETS
    own = AdapterSettings(targets=r".*q_proj")
    assert own.target_regex_for("glm4v_moe") == r".*q_proj"


def test_a_lora_run_on_tiny_moe_adapts_attention_only_and_loads_back(moe_run, moe):
    config = json.loads((moe_run.output_dir / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert not config.get("target_parameters")
    with safe_open(str(moe_run.output_dir / "adapter_model.safetensors"), "pt") as weights:
        lora = sorted({key.split(".lora_")[0] for key in weights.keys() if ".lora_" in key})
    assert len(lora) == 8 and all(".self_attn." in key for key in lora)  # 2 layers x q, k, v, o
    assert moe_run.global_step == 3 and moe_run.history["loss"].notna().sum() == 3
    tuned = load_quietly("tiny-moe", adapter=moe_run.output_dir)
    assert (
        tuned.ask(scene(), "What colour?", **GREEDY).text != moe.ask(scene(), "What colour?", **GREEDY).text
    )


def test_mlp_targets_on_a_moe_base_are_refused_with_the_reason(tmp_path, moe):
    with pytest.raises(
        ConfigError, match=r"peft adapted \d+ module\(s\) the regex does not name .*routed experts"
    ):
        train(
            LORA_DIR / "shapes.yaml",
            tmp_path / "run",
            **{**SHORT, "adapter.targets": r".*language_model\.layers\.\d+\.mlp\.shared_experts\.down_proj"},
        )
