"""Memory and time estimates: exact counts from GLM-4.6V-Flash's shipped config, and lora/README.md shows
the computed numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glmlab.lora import LoraRecipe, estimate_memory, estimate_time
from glmlab.lora.estimate import (
    SampleShape,
    anchor_estimate,
    estimate_rows,
    lora_parameter_count,
    markdown_table,
    model_shapes,
)
from glmlab.reference import glm46v_flash_config

README = Path(__file__).resolve().parents[1] / "lora" / "README.md"
SAMPLE = SampleShape(image_tokens=1000, prompt_tokens=100, answer_tokens=100)


def test_parameter_counts_come_from_the_real_config():
    shapes = model_shapes()
    assert shapes.total_params == 10_292_777_472
    assert (shapes.hidden, shapes.kv_dim, shapes.intermediate, shapes.layers) == (4096, 256, 13696, 40)
    recipe = LoraRecipe(data={"generator": "shapes"}, adapter={"rank": 16})
    # per layer: q (4096+4096), k and v (4096+256 each), o (4096+4096), gate_up (4096+27392),
    # down (13696+4096)
    assert lora_parameter_count(recipe, shapes) == 40 * 16 * 74368


def test_a_config_given_as_a_path_or_a_dict_replaces_the_shipped_one(tmp_path):
    config = glm46v_flash_config()
    config["text_config"]["num_hidden_layers"] = 20
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    by_path, by_dict, shipped = model_shapes(path), model_shapes(config), model_shapes()
    assert by_path == by_dict
    assert (by_path.layers, shipped.layers) == (20, 40)
    assert 2 * by_path.text_linear_params == shipped.text_linear_params


def test_memory_grows_with_rank_and_shrinks_with_checkpointing_and_4bit():
    recipe = LoraRecipe(
        data={"generator": "shapes"}, adapter={"rank": 16}, hardware={"gradient_checkpointing": True}
    )
    base = estimate_memory(recipe, sample=SAMPLE)
    assert base.weights_gib == pytest.approx(10_292_777_472 * 2 / 1024**3)
    assert estimate_memory(
        recipe.replace(**{"adapter.rank": 64}), sample=SAMPLE
    ).adapter_gib == pytest.approx(4 * base.adapter_gib)
    assert (
        estimate_memory(
            recipe.replace(**{"hardware.gradient_checkpointing": False}), sample=SAMPLE
        ).activations_gib
        > 10 * base.activations_gib
    )
    qlora = estimate_memory(recipe.replace(**{"hardware.quantize_4bit": True}), sample=SAMPLE)
    assert qlora.total_gib < base.total_gib


def test_qlora_counts_the_fp32_upcast_of_every_weight_left_unquantised():
    """peft's prepare_model_for_kbit_training (called by glmlab.lora.training) turns every non-4-bit
    weight to fp32: embeddings, norms, lm_head and vision, 2.13 B params; activations follow them."""
    shapes = model_shapes()
    recipe = LoraRecipe(  # no dropout: its one-byte masks do not grow with the element size
        data={"generator": "shapes"}, adapter={"dropout": 0.0}, hardware={"quantize_4bit": True}
    )
    qlora = estimate_memory(recipe, sample=SAMPLE)
    bf16 = estimate_memory(recipe.replace(**{"hardware.quantize_4bit": False}), sample=SAMPLE)
    unquantised = shapes.total_params - shapes.text_linear_params
    assert 2.1e9 < unquantised < 2.2e9
    assert qlora.weights_gib * 1024**3 == pytest.approx(shapes.text_linear_params * 0.52 + unquantised * 4)
    assert 11.8 < qlora.weights_gib < 12.0
    assert qlora.activations_gib == pytest.approx(2 * bf16.activations_gib)
    assert qlora.vision_gib == pytest.approx(2 * bf16.vision_gib)


def test_time_is_flops_over_achievable_throughput():
    recipe = LoraRecipe(
        data={"generator": "shapes"},
        optimizer={"batch_size": 1, "gradient_accumulation_steps": 1, "max_steps": 10},
    )
    h100, a10 = (
        estimate_time(recipe, gpu="80GB", sample=SAMPLE),
        estimate_time(recipe, gpu="24GB", sample=SAMPLE),
    )
    assert h100.tokens_per_step == 1200
    assert 6 * 8.16e9 * 1200 / 1e12 < h100.tflops_per_step < 1.2 * 6 * 8.16e9 * 1200 / 1e12
    assert a10.seconds_per_step == pytest.approx(h100.seconds_per_step * 989 / 125)
    assert h100.hours == pytest.approx(10 * h100.seconds_per_step / 3600)


def test_the_formula_is_near_the_published_anchor():
    """GLM-4.1V-9B LoRA, frozen vision, batch 1: 21 GB measured on an A100."""
    assert 20.0 <= anchor_estimate().total_gib <= 23.5


def test_readme_table_is_the_computed_one():
    text = README.read_text(encoding="utf-8")
    shown = re.search(r"<!-- estimates:start -->\n(.*?)\n<!-- estimates:end -->", text, re.DOTALL).group(1)
    assert shown == markdown_table(estimate_rows())


@pytest.mark.parametrize(
    ("width", "height", "budget"), [(224, 140, 112 * 112), (300, 90, 1024 * 1024), (2000, 1500, 512 * 512)]
)
def test_image_tokens_are_what_the_processor_gives(vlm, width, height, budget):
    from PIL import Image

    from glmlab.lora.estimate import image_tokens

    answer = vlm.ask(Image.new("RGB", (width, height)), "?", max_new_tokens=1, max_image_pixels=budget)
    assert image_tokens(width, height, budget) == answer.usage.image_tokens


# ---- the estimate against a measured peak ----------------------------------------------------------

needs_peak_reset = pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's peak-RSS reset"
)

# One LoRA training step (glmlab's own adapter, optimiser and answer-only logits) in a fresh Python:
# prints the peak RSS growth over the process before the model loaded, in bytes. The weights are paged
# in before the peak is reset (they are memory-mapped, and a GPU holds all of them), and glibc's mmap
# threshold is fixed (MALLOC_MMAP_THRESHOLD_) so freed tensors leave RSS as they leave a GPU's memory.
_TRAINING_STEP = """
import json, re, sys, warnings
import torch
import glmlab
from glmlab.lora import LoraRecipe
from glmlab.lora.training import _optimizer, _with_adapter


def status_kb(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))


path, recipe, tokens, answer = sys.argv[1], LoraRecipe.from_dict(json.loads(sys.argv[2])), *map(int, sys.argv[3:])
torch.manual_seed(0)
input_ids = torch.randint(300, 60000, (recipe.optimizer.batch_size, tokens))
before = status_kb("VmRSS")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    vlm = glmlab.load(path, device="cpu", dtype="float32")
    model = _with_adapter(vlm, recipe)
if recipe.hardware.gradient_checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
model.train()
optimizer = _optimizer(model, recipe)
with torch.no_grad():
    for parameter in model.parameters():
        parameter.sum()
open("/proc/self/clear_refs", "w").write("5")
keep = torch.zeros_like(input_ids, dtype=torch.bool)
keep[:, -answer - 1 : -1] = True
outputs = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), logits_to_keep=keep)
loss = torch.nn.functional.cross_entropy(outputs.logits.float(), input_ids[:, 1:][keep[:, :-1]])
loss.backward()
optimizer.step()
print((status_kb("VmHWM") - before) * 1024)
"""


@pytest.mark.slow
@needs_peak_reset
@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no-checkpointing"])
def test_the_lora_estimate_is_the_measured_cpu_peak_within_10_percent(bench_path, checkpointing):
    """fp32 on the CPU, the recipe defaults (rank 16, dropout 0.05), 2 samples of 1,024 text tokens."""
    settings = {
        "data": {"generator": "shapes"},
        "base_model": str(bench_path),
        "optimizer": {"batch_size": 2},
        "hardware": {"precision": "fp32", "gradient_checkpointing": checkpointing},
    }
    tokens, answer = 1024, 32
    estimate = estimate_memory(
        LoraRecipe.from_dict(settings),
        bench_path / "config.json",
        sample=SampleShape(image_tokens=0, prompt_tokens=tokens - answer, answer_tokens=answer),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _TRAINING_STEP,
            str(bench_path),
            json.dumps(settings),
            str(tokens),
            str(answer),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured_gib = int(result.stdout.strip().splitlines()[-1]) / 1024**3
    expected_gib = estimate.total_gib - estimate.overhead_gib  # no CUDA context on a CPU
    assert expected_gib == pytest.approx(measured_gib, rel=0.10), (expected_gib, measured_gib)
