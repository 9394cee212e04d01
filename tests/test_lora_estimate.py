"""Memory and time estimates: exact counts from GLM-4.6V-Flash's shipped config, and lora/README.md shows
the computed numbers."""

from __future__ import annotations

import json
import re
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
    assert (
        estimate_memory(recipe.replace(**{"hardware.quantize_4bit": True}), sample=SAMPLE).total_gib
        < base.total_gib / 2
    )


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
