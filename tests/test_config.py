"""glmlab.config: one validation for every config (recipes, suites, generation settings), driven by the
fields' metadata: all problems at once, each named by its dotted path, and one image-size floor."""

from __future__ import annotations

import re

import pytest

from glmlab.config import apply_overrides, problems
from glmlab.errors import ConfigError, InputError
from glmlab.eval.suite import Suite
from glmlab.lora import LoraRecipe
from glmlab.prompts import pixel_budget_size
from glmlab.settings import MIN_IMAGE_PIXELS, GenerationSettings

SUITE = {"name": "mini", "data": {"generator": "shapes", "n": 2}, "metrics": ["exact_match"]}
RECIPE = {"data": {"generator": "shapes"}}


def test_min_image_pixels_is_one_28_by_28_image_token():
    assert MIN_IMAGE_PIXELS == 784


def test_every_config_refuses_one_pixel_below_the_floor_and_accepts_the_floor():
    below, floor = MIN_IMAGE_PIXELS - 1, MIN_IMAGE_PIXELS
    expected = re.escape(f"must be an integer >= {MIN_IMAGE_PIXELS} (one 28x28 image token)")
    with pytest.raises(ConfigError, match=rf"prompt\.max_image_pixels={below}: {expected}"):
        LoraRecipe.from_dict({**RECIPE, "prompt": {"max_image_pixels": below}})
    with pytest.raises(ConfigError, match=rf"generation\.max_image_pixels={below}: {expected}"):
        Suite.from_dict({**SUITE, "generation": {"max_image_pixels": below}})
    with pytest.raises(InputError, match=f"max_image_pixels={below}: must be at least {MIN_IMAGE_PIXELS}"):
        pixel_budget_size(below)
    assert (
        LoraRecipe.from_dict({**RECIPE, "prompt": {"max_image_pixels": floor}}).prompt.max_image_pixels
        == floor
    )
    assert Suite.from_dict({**SUITE, "generation": {"max_image_pixels": floor}}).generation == {
        "max_image_pixels": floor
    }
    assert pixel_budget_size(floor)["longest_edge"] == 2 * floor


def test_generation_settings_report_every_bad_field_at_once():
    with pytest.raises(InputError) as caught:
        GenerationSettings(temperature=-1, top_p=2, max_new_tokens=0, stop=[3])
    message = str(caught.value)
    assert message.startswith("4 invalid field(s):")
    for line in (
        "temperature=-1: must be >= 0 (0 = greedy)",
        "top_p=2: must be in (0, 1]",
        "max_new_tokens=0: must be >= 1",
        "stop=[3]: must be a list of strings of 1 to 256 characters, at most 8 strings",
    ):
        assert line in message
    with pytest.raises(InputError, match=r"^top_k='3': must be an integer >= 0 \(0 = no top-k\)\.$"):
        GenerationSettings(top_k="3")  # a wrong type is told the type and the range
    assert GenerationSettings(stop="END", seed=None).stop == ["END"]  # None means unset: always valid


def test_a_suite_s_generation_section_is_checked_by_generation_settings_own_fields():
    with pytest.raises(ConfigError) as caught:
        Suite.from_dict({**SUITE, "generation": {"top_k": -1, "do_sample": "yes", "beams": 2}})
    message = str(caught.value)
    assert "generation.top_k=-1: must be >= 0 (0 = no top-k)" in message
    assert "generation.do_sample='yes': must be true or false" in message
    assert "generation.beams: unknown setting" in message


def test_problems_walk_nested_sections_and_name_dotted_paths():
    recipe = LoraRecipe.from_dict(RECIPE)
    recipe.adapter.rank, recipe.optimizer.batch_size, recipe.data.n = 0, 2.5, -1  # mutated after validation
    assert problems(recipe) == [
        "data.n=-1: must be an integer >= 1",
        "adapter.rank=0: must be an integer >= 1",
        "optimizer.batch_size=2.5: must be an integer >= 1",
    ]
    assert problems(LoraRecipe.from_dict(RECIPE)) == []


def test_suite_and_recipe_report_all_their_problems_at_once_in_one_error():
    with pytest.raises(ConfigError) as suite_error:
        Suite.from_dict({**SUITE, "name": "", "extract": "jsn", "keep_fields": "id"}, source="s.yaml")
    with pytest.raises(ConfigError) as recipe_error:
        LoraRecipe.from_dict({**RECIPE, "seed": -1, "evaluation": {"every_steps": -5}}, source="r.yaml")
    suite_message, recipe_message = str(suite_error.value), str(recipe_error.value)
    assert suite_message.startswith("s.yaml: 3 invalid field(s):")
    assert "name='': must be a non-empty string" in suite_message
    assert "extract='jsn': must be one of text, json, number, yes_no, choice, box (did you mean 'json'?)" in (
        suite_message
    )
    assert "keep_fields='id': must be a list of metadata field names" in suite_message
    assert recipe_message.startswith("r.yaml: 2 invalid field(s):")
    assert "seed=-1: must be an integer >= 0" in recipe_message
    assert "evaluation.every_steps=-5: must be an integer >= 0" in recipe_message


def test_a_section_that_is_not_a_mapping_is_named():
    with pytest.raises(ConfigError, match="adapter: expected a mapping of AdapterSettings fields, got int"):
        LoraRecipe.from_dict({**RECIPE, "adapter": 8})


def test_dotted_overrides_reach_nested_fields_and_list_items_and_leave_the_input_alone():
    data = {"adapter": {"rank": 16}, "metrics": [{"name": "anls"}]}
    changed = apply_overrides(data, {"adapter.rank": 8, "metrics.0.name": "exact_match", "data.n": 3})
    assert changed == {"adapter": {"rank": 8}, "metrics": [{"name": "exact_match"}], "data": {"n": 3}}
    assert data == {"adapter": {"rank": 16}, "metrics": [{"name": "anls"}]}
    with pytest.raises(ConfigError, match="override 'adapter.rank.x': cannot set 'x' there"):
        apply_overrides(data, {"adapter.rank.x": 1})


def test_server_settings_report_every_bad_setting_at_once_against_the_same_floor():
    from glmlab.serve.settings import ServerSettings

    with pytest.raises(ConfigError) as caught:
        ServerSettings(model="tiny", max_concurrency=0, max_image_pixels=MIN_IMAGE_PIXELS - 1)
    message = str(caught.value)
    assert message.startswith("2 invalid field(s):")
    assert "ServerSettings.max_concurrency=0: must be at least 1" in message
    assert f"ServerSettings.max_image_pixels=783: must be at least {MIN_IMAGE_PIXELS} (or unset)" in message
    assert ServerSettings(model="tiny", max_image_pixels=MIN_IMAGE_PIXELS).max_image_pixels == 784
