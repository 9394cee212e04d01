"""One DataSource for training recipes and eval suites: the same source gives the same records to both."""

from __future__ import annotations

import datasets
import pytest
from support import scene

from glmlab.data import DataSource, load_source, save_records
from glmlab.errors import ConfigError
from glmlab.eval.samples import load_samples
from glmlab.eval.suite import Suite
from glmlab.lora import LoraRecipe
from glmlab.lora.data import fingerprint, load_training_data


def records_of(data: dict):
    """The records a recipe trains on (none held out) and the records a suite asks about, same source."""
    recipe = LoraRecipe.from_dict({"data": data, "evaluation": {"samples": 0}})
    suite = Suite.from_dict({"name": "same", "data": data, "metrics": ["exact_match"]})
    return load_training_data(recipe).train, load_samples(suite).dataset


def rows(dataset) -> list[tuple]:
    """Every record's id, messages and metadata, by id (a recipe shuffles a folder or hub set)."""
    table = dataset.select_columns(["id", "messages", "metadata"])
    return sorted((row["id"], str(row["messages"]), row["metadata"]) for row in table)


def test_a_generator_source_gives_recipe_and_suite_the_same_records_in_the_same_order():
    train, asked = records_of({"generator": "shapes", "n": 5, "seed": 7, "options": {"size": 56}})
    assert len(train) == len(asked) == 5
    assert fingerprint(train) == fingerprint(asked)  # ids, messages, metadata and image bytes


def test_a_recipe_without_data_seed_generates_with_its_own_seed():
    recipe = LoraRecipe.from_dict(
        {"data": {"generator": "shapes", "n": 3}, "seed": 4, "evaluation": {"samples": 0}}
    )
    same = load_source(DataSource(generator="shapes", n=3, seed=4))
    assert fingerprint(load_training_data(recipe).train) == fingerprint(same)


def test_a_folder_source_gives_recipe_and_suite_the_same_records(tmp_path):
    records = [
        {"id": f"r{k}", "image": scene(56, 56), "question": "Colour?", "answer": colour, "kind": "color"}
        for k, colour in enumerate(["red", "blue", "green"])
    ]
    save_records(records, tmp_path / "data")
    train, asked = records_of({"folder": str(tmp_path / "data")})
    assert rows(train) == rows(asked) and [row[0] for row in rows(asked)] == ["r0", "r1", "r2"]


def hub_copy(folder) -> str:
    """A local parquet copy in a hub layout: its own column names, a list of accepted answers."""
    features = datasets.Features(
        {
            "questionId": datasets.Value("string"),
            "query": datasets.Value("string"),
            "image": datasets.Image(),
            "answers": datasets.List(datasets.Value("string")),
        }
    )
    table = [
        {"questionId": "q0", "query": "What is written?", "image": scene(), "answers": ["42", "forty-two"]},
        {"questionId": "q1", "query": "Which colour?", "image": scene(), "answers": ["red"]},
    ]
    folder.mkdir(parents=True)
    datasets.Dataset.from_list(table, features=features).to_parquet(str(folder / "validation-0.parquet"))
    return str(folder)


def test_a_hub_source_is_renamed_into_records_the_same_way_for_recipe_and_suite(tmp_path):
    data = {
        "hub": hub_copy(tmp_path / "hub"),
        "split": "validation",
        "columns": {"questionId": "id", "query": "question"},
        "references": "answers",
    }
    train, asked = records_of(data)
    assert rows(train) == rows(asked)
    first = sorted(asked, key=lambda row: row["id"])[0]
    assert first["id"] == "q0"
    assert [message["content"] for message in first["messages"]] == ["What is written?", "42"]


def test_a_hub_column_mapping_naming_a_missing_column_fails_for_a_recipe_too(tmp_path):
    data = {"hub": hub_copy(tmp_path / "hub"), "split": "validation", "columns": {"question_id": "id"}}
    recipe = LoraRecipe.from_dict({"data": data, "evaluation": {"samples": 0}})
    with pytest.raises(ConfigError, match=r"data\.columns: \['question_id'\] not in"):
        load_training_data(recipe)


def test_n_and_limit_both_cut_a_folder(tmp_path):
    save_records(
        [{"id": f"r{k}", "image": scene(56, 56), "question": "Q?", "answer": "a"} for k in range(6)],
        tmp_path / "data",
    )
    source = DataSource(folder=str(tmp_path / "data"), n=4)
    assert load_source(source)["id"] == ["r0", "r1", "r2", "r3"]
    assert load_source(source, limit=2)["id"] == ["r0", "r1"]
