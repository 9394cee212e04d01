"""LoraRecipe: the shipped recipes are valid, bad fields are named by their dotted path, all at once,
and keys of the earlier flat layout say where they moved."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmlab.errors import ConfigError
from glmlab.lora import LANGUAGE_TARGETS, MOVED, AdapterSettings, LoraRecipe
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
    assert {path.stem for path in SHIPPED} >= {
        "invoices-zh",
        "invoices-en",
        "medical-phantoms",
        "moderation",
        "shapes",
    }


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


def test_invalid_fields_are_all_reported_by_their_dotted_path():
    with pytest.raises(ConfigError) as caught:
        LoraRecipe(
            data={"generator": "shapes"},
            adapter={"rank": 0, "dropout": 1.5, "adapt_vision": "eyes", "targets": "(unclosed"},
            optimizer={"learning_rate": -1.0},
            hardware={"precision": "int3"},
        )
    message = str(caught.value)
    for name in (
        "adapter.rank=0: must be an integer >= 1",
        "adapter.dropout=1.5: must be a number in [0, 1)",
        "hardware.precision='int3': must be one of auto, bf16, fp16, fp32",
        "adapter.adapt_vision='eyes': must be one of none, merger, all",
        "optimizer.learning_rate=-1.0: must be a number in (0, 1)",
        "adapter.targets='(unclosed': must be a valid regular expression",
    ):
        assert name in message
    assert "6 invalid field(s)" in message


def test_a_recipe_needs_exactly_one_data_source():
    with pytest.raises(ConfigError, match=r"data: give exactly one of generator, folder, hub \(got none\)"):
        LoraRecipe()
    with pytest.raises(ConfigError, match=r"got \['generator', 'folder'\]"):
        LoraRecipe(data={"generator": "shapes", "folder": "data/"})


def test_unknown_generator_option_is_named_with_the_known_ones():
    with pytest.raises(
        ConfigError, match=r"data\.options\.colour: generator 'shapes' takes no option 'colour'"
    ):
        LoraRecipe(data={"generator": "shapes", "options": {"colour": "red"}})


def test_unknown_yaml_key_suggests_the_field_by_its_dotted_path(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("data:\n  generator: shapes\noptimizer:\n  learning_rat: 0.001\nrnak: 4\n")
    with pytest.raises(ConfigError) as caught:
        LoraRecipe.from_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 2 invalid field(s)")
    assert "optimizer.learning_rat: unknown field (did you mean 'learning_rate'?)" in message
    assert "rnak: unknown field (did you mean 'adapter.rank'?)" in message


def test_old_flat_keys_say_where_they_moved(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text(
        "name: flat\ngenerator: shapes\ntrain_samples: 100\nrank: 8\nprompt: Read the shape.\n"
        "target_modules: .*q_proj\neval_metric: exact_match\nsave_every_steps: 10\n"
    )
    with pytest.raises(ConfigError) as caught:
        LoraRecipe.from_yaml(path)
    message = str(caught.value)
    for line in (
        "generator: moved to data.generator",
        "train_samples: moved to data.n",
        "rank: moved to adapter.rank",
        "prompt: moved to prompt.instruction",
        "target_modules: moved to adapter.targets",
        "eval_metric: moved to evaluation.metric",
        "save_every_steps: moved to checkpoints.every_steps",
    ):
        assert line in message
    assert "8 invalid field(s)" in message  # the moved keys, and the data source they left empty
    with pytest.raises(ConfigError, match="rank: moved to adapter.rank"):
        LoraRecipe(data={"generator": "shapes"}).replace(rank=8)


def test_every_moved_key_names_a_field_of_the_nested_recipe():
    assert set(MOVED.values()) <= set(field_names())
    assert not set(MOVED) & {name for name in field_names() if "." not in name}


def test_yaml_round_trip_gives_the_same_recipe(tmp_path):
    recipe = LoraRecipe(
        name="rt",
        data={"generator": "shapes", "options": {"size": 56}},
        adapter={"rank": 4, "modules_to_save": ["lm_head"]},
        optimizer={"loraplus_lr_ratio": 4.0},
        prompt={"thinking": True},
    )
    recipe.to_yaml(tmp_path / "rt.yaml")
    assert LoraRecipe.from_yaml(tmp_path / "rt.yaml") == recipe


def test_replace_takes_dotted_paths_returns_a_validated_copy_and_leaves_the_recipe_alone():
    recipe = LoraRecipe(data={"generator": "shapes"}, adapter={"alpha": 8.0})
    changed = recipe.replace(**{"adapter.rank": 4, "base_model": "tiny"})
    assert (recipe.adapter.rank, recipe.base_model) == (16, "zai-org/GLM-4.6V-Flash")
    assert (changed.adapter.rank, changed.adapter.alpha, changed.base_model) == (4, 8.0, "tiny")
    # a mapping replaces its whole section: alpha falls back to its default
    assert recipe.replace(adapter={"rank": 4}).adapter == AdapterSettings(rank=4)
    with pytest.raises(ConfigError, match=r"adapter\.rank=-2: must be an integer >= 1"):
        recipe.replace(**{"adapter.rank": -2})
    with pytest.raises(ConfigError, match=r"adapter\.rnak: unknown field \(did you mean 'rank'\?\)"):
        recipe.replace(**{"adapter.rnak": 4})


def test_default_targets_are_the_language_model_only_and_vision_is_opt_in():
    recipe = LoraRecipe(data={"generator": "shapes"})
    assert recipe.adapter.target_regex == LANGUAGE_TARGETS
    assert "visual" not in recipe.adapter.target_regex
    assert "visual\\.merger" in recipe.replace(**{"adapter.adapt_vision": "merger"}).adapter.target_regex


def test_every_field_has_help():
    assert all(field_help(name) for name in field_names())
    assert field_help("adapter.rank").startswith("LoRA rank r")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the error is for machines without CUDA")
def test_quantize_4bit_on_cpu_is_a_clear_error(tmp_path):
    from glmlab.lora import train

    recipe = LoraRecipe(data={"generator": "shapes"}, base_model="tiny", hardware={"quantize_4bit": True})
    with pytest.raises(ConfigError, match="hardware.quantize_4bit=True: QLoRA needs a CUDA GPU"):
        train(recipe, tmp_path / "run")


def test_model_selection_needs_scores_on_checkpointed_steps_and_trackers_are_the_trainers():
    with pytest.raises(ConfigError) as caught:
        LoraRecipe(
            data={"generator": "shapes"},
            evaluation={"samples": 0, "early_stopping_patience": 2},
            tracking={"report_to": ["tensorbored"]},
        )
    message = str(caught.value)
    assert "evaluation: select_best and early_stopping_patience need held-out scores" in message
    assert "tracking.report_to=['tensorbored']: must be a list of tracker names, from " in message
    assert "mlflow" in message and "tensorboard" in message and "wandb" in message
    with pytest.raises(ConfigError, match=r"checkpoints.every_steps: 30 is not a multiple of evaluation"):
        LoraRecipe(
            data={"generator": "shapes"},
            evaluation={"every_steps": 20, "select_best": True},
            checkpoints={"every_steps": 30},
        )


def test_trainer_arguments_carry_tracking_selection_and_sharding_settings(tmp_path):
    from glmlab.lora.training import training_arguments

    recipe = LoraRecipe(
        name="sel",
        data={"generator": "shapes"},
        evaluation={"every_steps": 10, "select_best": True, "metric": "anls"},
        checkpoints={"every_steps": 20},
        tracking={"report_to": ["tensorboard"]},
        hardware={"fsdp_config": {"min_num_params": 1000}},
    )
    args = training_arguments(recipe, tmp_path, "cpu", "fp32")
    assert args.report_to == ["tensorboard"] and args.run_name == "sel"
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_anls"
    assert args.greater_is_better is True and args.eval_steps == 10 and args.save_steps == 20
    plain = training_arguments(LoraRecipe(data={"generator": "shapes"}), tmp_path, "cpu", "fp32")
    assert plain.report_to == [] and plain.metric_for_best_model is None
    assert not plain.load_best_model_at_end and not plain.deepspeed


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the error is for machines without CUDA")
def test_deepspeed_or_fsdp_on_cpu_is_a_clear_error_pointing_to_nproc(tmp_path):
    from glmlab.lora import train

    for hardware in ({"deepspeed": "ds.json"}, {"fsdp": "full_shard auto_wrap"}):
        recipe = LoraRecipe(data={"generator": "shapes"}, base_model="tiny", hardware=hardware)
        with pytest.raises(ConfigError, match=r"DeepSpeed and FSDP shard a model over CUDA GPUs.*--nproc N"):
            train(recipe, tmp_path / "run")


def test_a_data_folder_is_shuffled_and_split_into_disjoint_train_and_held_out_records(tmp_path):
    from support import scene

    from glmlab.data import save_records
    from glmlab.lora.data import load_training_data

    rows = [
        {"id": f"r{i}", "image": scene(56, 56), "question": "Colour?", "answer": "red"} for i in range(10)
    ]
    save_records(rows, tmp_path / "data")
    recipe = LoraRecipe(data={"folder": str(tmp_path / "data"), "n": 5}, evaluation={"samples": 3})
    data = load_training_data(recipe)
    train_ids, held_out_ids = set(data.train["id"]), set(data.eval["id"])
    assert (len(train_ids), len(held_out_ids)) == (5, 3) and not train_ids & held_out_ids
    assert load_training_data(recipe).fingerprint == data.fingerprint
    assert load_training_data(recipe.replace(seed=1)).fingerprint != data.fingerprint
    with pytest.raises(ConfigError, match="evaluation.samples=10: .* holds only 10 records"):
        load_training_data(recipe.replace(**{"evaluation.samples": 10}))
