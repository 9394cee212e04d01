"""LoraRecipe: the shipped recipes are valid, and bad fields are named, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmlab.errors import ConfigError
from glmlab.lora import LANGUAGE_TARGETS, LoraRecipe
from glmlab.lora.recipe import field_help, field_names

LORA_DIR = Path(__file__).resolve().parents[1] / "lora"
SHIPPED = sorted(LORA_DIR.glob("*.yaml"))


def test_every_shipped_recipe_is_valid():
    failures = {}
    for path in SHIPPED:
        try:
            LoraRecipe.from_yaml(path)
        except ConfigError as error:
            failures[path.name] = str(error)
    assert not failures, "invalid recipes:\n" + "\n".join(
        f"{name}: {error}" for name, error in failures.items()
    )
    assert {path.stem for path in SHIPPED} >= {"invoices-zh", "invoices-en", "medical-phantoms", "shapes"}


def test_shipped_recipes_open_with_a_comment_block_and_comment_every_knob():
    for path in SHIPPED:
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# "), f"{path.name}: no comment block at the top"
        header = "\n".join(line for line in lines if line.startswith("#"))
        assert "glmlab train lora/" in header and "--set" in header, (
            f"{path.name}: no command or override example"
        )
        knobs = [line for line in lines if line and not line.startswith(("#", " ", "-")) and ":" in line]
        uncommented = [
            line for line in knobs if "#" not in line and not line.startswith(("name:", "description:"))
        ]
        assert not uncommented, f"{path.name}: knobs without a trade-off comment: {uncommented}"


def test_invalid_fields_are_all_reported_by_name():
    with pytest.raises(ConfigError) as caught:
        LoraRecipe(
            generator="shapes",
            rank=0,
            dropout=1.5,
            precision="int3",
            adapt_vision="eyes",
            learning_rate=-1.0,
            target_modules="(unclosed",
        )
    message = str(caught.value)
    for name in (
        "rank=0",
        "dropout=1.5",
        "precision='int3'",
        "adapt_vision='eyes'",
        "learning_rate=-1.0",
        "target_modules=",
    ):
        assert name in message
    assert "6 invalid field(s)" in message


def test_a_recipe_needs_exactly_one_data_source():
    with pytest.raises(ConfigError, match="exactly one data source, got none"):
        LoraRecipe()
    with pytest.raises(ConfigError, match="got generator, data_path"):
        LoraRecipe(generator="shapes", data_path="data/")


def test_unknown_generator_option_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['colour'\] for 'shapes'"):
        LoraRecipe(generator="shapes", generator_options={"colour": "red"})


def test_unknown_yaml_key_suggests_the_field(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("generator: shapes\nlearning_rat: 0.001\n")
    with pytest.raises(
        ConfigError,
        match=r"typo.yaml: unknown recipe field\(s\) 'learning_rat' \(did you mean "
        r"'learning_rate'\?\)",
    ):
        LoraRecipe.from_yaml(path)


def test_yaml_round_trip_gives_the_same_recipe(tmp_path):
    recipe = LoraRecipe(
        name="rt",
        generator="shapes",
        generator_options={"size": 56},
        rank=4,
        modules_to_save=["lm_head"],
        loraplus_lr_ratio=4.0,
        thinking=True,
    )
    recipe.to_yaml(tmp_path / "rt.yaml")
    assert LoraRecipe.from_yaml(tmp_path / "rt.yaml") == recipe


def test_replace_returns_a_validated_copy_and_leaves_the_recipe_alone():
    recipe = LoraRecipe(generator="shapes")
    changed = recipe.replace(rank=4, base_model="tiny")
    assert (recipe.rank, recipe.base_model) == (16, "zai-org/GLM-4.6V-Flash")
    assert (changed.rank, changed.base_model) == (4, "tiny")
    with pytest.raises(ConfigError, match="rank=-2"):
        recipe.replace(rank=-2)
    with pytest.raises(ConfigError, match="'rnak' \\(did you mean 'rank'\\?\\)"):
        recipe.replace(rnak=4)


def test_default_targets_are_the_language_model_only_and_vision_is_opt_in():
    recipe = LoraRecipe(generator="shapes")
    assert recipe.target_regex == LANGUAGE_TARGETS
    assert "visual" not in recipe.target_regex
    assert "visual\\.merger" in recipe.replace(adapt_vision="merger").target_regex


def test_every_field_has_help():
    assert all(field_help(name) for name in field_names())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the error is for machines without CUDA")
def test_quantize_4bit_on_cpu_is_a_clear_error(tmp_path):
    from glmlab.lora import train

    with pytest.raises(ConfigError, match="quantize_4bit=True: QLoRA needs a CUDA GPU"):
        train(LoraRecipe(generator="shapes", base_model="tiny", quantize_4bit=True), tmp_path / "run")


def test_a_data_folder_is_shuffled_and_split_into_disjoint_train_and_held_out_records(tmp_path):
    from conftest import scene

    from glmlab.data import save_records
    from glmlab.lora.data import load_training_data

    rows = [
        {"id": f"r{i}", "image": scene(56, 56), "question": "Colour?", "answer": "red"} for i in range(10)
    ]
    save_records(rows, tmp_path / "data")
    recipe = LoraRecipe(data_path=str(tmp_path / "data"), eval_samples=3, train_samples=5)
    data = load_training_data(recipe)
    train_ids, held_out_ids = set(data.train["id"]), set(data.eval["id"])
    assert (len(train_ids), len(held_out_ids)) == (5, 3) and not train_ids & held_out_ids
    assert load_training_data(recipe).fingerprint == data.fingerprint
    assert load_training_data(recipe.replace(seed=1)).fingerprint != data.fingerprint
    with pytest.raises(ConfigError, match="eval_samples=10: .* holds only 10 records"):
        load_training_data(recipe.replace(eval_samples=10))
