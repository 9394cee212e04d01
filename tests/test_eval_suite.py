"""Eval suites: the shipped YAML files, validation that names every bad field, and sample building.

Nothing here loads a model: every failure must happen before a model is touched, which the tests
show by passing `model=None` to `evaluate` (a model call would be an AttributeError, not a ConfigError).
"""

from __future__ import annotations

import pytest
from support import EVAL_DIR, docvqa_rows, scene, write_docvqa_copy

from glmlab.data import generate, save_records
from glmlab.errors import ConfigError
from glmlab.eval import evaluate
from glmlab.eval.samples import load_samples
from glmlab.eval.suite import Suite, suite_problems


def minimal(**changes) -> dict:
    suite = {
        "name": "mini",
        "data": {"generator": "shapes", "n": 4, "seed": 3},
        "metrics": ["exact_match"],
        "generation": {"max_new_tokens": 4, "temperature": 0},
    }
    suite.update(changes)
    return suite


def test_every_shipped_suite_is_valid():
    import yaml

    files = sorted(EVAL_DIR.glob("*.yaml"))
    assert {path.stem for path in files} >= {
        "shapes",
        "invoices-zh",
        "invoices-en",
        "medical-phantoms",
        "moderation",
        "docvqa",
    }
    problems = {path.name: suite_problems(yaml.safe_load(path.read_text(encoding="utf-8"))) for path in files}
    assert {name: found for name, found in problems.items() if found} == {}
    for path in files:
        Suite.from_yaml(path).check_data()


def test_every_shipped_suite_opens_with_a_comment_block_naming_its_command():
    for path in sorted(EVAL_DIR.glob("*.yaml")):
        header = path.read_text(encoding="utf-8").split("\nname:")[0]
        assert header.startswith("#") and f"glmlab eval eval/{path.name}" in header, path.name
        assert "Override:" in header, path.name


def test_validation_reports_all_invalid_fields_at_once_with_their_paths():
    bad = minimal(
        data={"generatr": "shapes", "n": 0},
        metrics=["exact_match", {"name": "anls", "options": {"treshold": 0.4}}, "f1_score"],
        prompt={"thinking": "yes"},
        generation={"max_tokens": 8},
        extract="jsonn",
    )
    with pytest.raises(ConfigError) as raised:
        Suite.from_dict(bad, source="bad.yaml")
    message = str(raised.value)
    assert message.startswith("bad.yaml: 8 invalid field(s):")
    for expected in [
        "data.generatr: unknown field (did you mean 'generator'?)",
        "data: give exactly one of generator, folder, hub (got none)",
        "data.n=0: must be an integer >= 1",
        "metrics[1].options.treshold: anls takes no option 'treshold'; it takes threshold",
        "metrics[2].name='f1_score': must be one of exact_match, anls,",
        "prompt.thinking='yes': must be true, false or null",
        "generation.max_tokens: unknown setting (did you mean 'max_new_tokens'?)",
        "extract='jsonn': must be one of text, json, ",
        "(did you mean 'json'?)",
    ]:
        assert expected in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"top_p": 2}, "generation.top_p=2: must be in (0, 1]"),
        ({"temperature": "hot"}, "generation.temperature='hot': must be a finite number >= 0 (0 = greedy)"),
    ],
)
def test_generation_values_are_checked_with_the_suite_for_any_model(setting, expected):
    with pytest.raises(ConfigError) as raised:
        Suite.from_dict(minimal(generation=setting))  # before evaluate: a server run is caught too
    assert expected in str(raised.value)


def test_unknown_metric_fails_before_any_model_call():
    with pytest.raises(ConfigError, match=r"metrics\[0\]\.name='accuracy': must be one of exact_match, "):
        evaluate(Suite.from_dict(minimal()).to_dict() | {"metrics": ["accuracy"]}, model=None)


def test_missing_data_folder_fails_before_any_model_call(tmp_path):
    suite = Suite.from_dict(minimal(data={"folder": str(tmp_path / "nowhere")}))
    with pytest.raises(ConfigError, match=r"data\.folder: '.*nowhere' holds no records"):
        evaluate(suite, model=None)


def test_unknown_generator_option_fails_when_the_suite_is_read():
    with pytest.raises(ConfigError, match=r"data\.options\.colours: generator 'shapes' takes no option"):
        Suite.from_dict(minimal(data={"generator": "shapes", "n": 2, "options": {"colours": ["red"]}}))


def test_template_placeholder_missing_from_the_data_names_the_field():
    suite = Suite.from_dict(minimal(prompt={"template": "{question} ({hint})"}))
    with pytest.raises(ConfigError, match=r"prompt\.template: placeholder 'hint' is not a field of sample"):
        evaluate(suite, model=None)


def test_per_sample_option_from_a_missing_field_names_the_metric():
    suite = Suite.from_dict(
        minimal(metrics=[{"name": "medical_vqa", "per_sample": {"question_type": "kind"}}])
    )
    with pytest.raises(
        ConfigError, match=r"metrics\[0\]\.per_sample\.question_type: sample .* no field 'kind'"
    ):
        evaluate(suite, model=None)


def test_duplicate_metric_and_clashing_kept_field_are_refused():
    with pytest.raises(ConfigError) as raised:
        Suite.from_dict(minimal(metrics=["exact_match", "exact_match"], keep_fields=["raw"]))
    assert "metrics: 'exact_match' listed twice" in str(raised.value)
    assert "keep_fields: ['raw'] clash with sample columns" in str(raised.value)


def test_overrides_set_dotted_fields_and_leave_the_original_suite_unchanged():
    suite = Suite.from_yaml(EVAL_DIR / "shapes.yaml")
    changed = suite.with_overrides({"data.n": 12, "generation.max_new_tokens": 3, "metrics.0.name": "anls"})
    assert (changed.data.n, changed.generation["max_new_tokens"], changed.metrics[0].name) == (12, 3, "anls")
    assert (suite.data.n, suite.generation["max_new_tokens"], suite.metrics[0].name) == (
        300,
        8,
        "exact_match",
    )


def test_suite_round_trips_through_yaml(tmp_path):
    suite = Suite.from_yaml(EVAL_DIR / "medical-phantoms.yaml")
    assert Suite.from_yaml(suite.to_yaml(tmp_path / "copy.yaml")) == suite


def test_generator_samples_carry_template_references_and_kept_fields():
    suite = Suite.from_dict(
        minimal(prompt={"template": "Q: {question} [{question_type}]"}, keep_fields=["question_type"])
    )
    samples = load_samples(suite, limit=3).samples
    records = generate("shapes", 3, seed=3)
    assert [s.id for s in samples] == [r["id"] for r in records]
    assert samples[0].question == f"Q: {records[0]['question']} [color]"
    assert [s.references for s in samples] == [[r["answer"]] for r in records]
    assert [s.kept for s in samples] == [{"question_type": t} for t in ("color", "shape", "count")]


def chat_sample_set(tmp_path):
    records = [
        {
            "id": "chat-1",
            "image": scene(),
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Colour?"},
                {"role": "assistant", "content": "red"},
            ],
        }
    ]
    save_records(records, tmp_path / "chat")
    return load_samples(Suite.from_dict(minimal(data={"folder": str(tmp_path / "chat")})))


def test_folder_samples_keep_the_record_system_prompt_and_earlier_turns(tmp_path):
    sample_set = chat_sample_set(tmp_path)
    sample = sample_set.samples[0]
    assert (sample.system, sample.question, sample.references) == ("Be brief.", "Colour?", ["red"])
    messages = sample_set.item(sample)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert [part["type"] for part in messages[1]["content"]] == ["image", "text"]


def test_eval_asks_a_multi_turn_record_with_the_messages_training_builds_for_it(tmp_path, vlm):
    from glmlab.lora.collator import LoraCollator

    sample_set = chat_sample_set(tmp_path)
    asked = sample_set.item(sample_set.samples[0])["messages"]
    collator = LoraCollator(vlm.processor, eos_token_id=vlm.tokenizer.eos_token_id)
    trained, answer = collator.prompt_messages(sample_set.dataset[0])
    assert answer == "red"
    assert [{**m, "content": _without_images(m["content"])} for m in trained] == [
        {**m, "content": _without_images(m["content"])} for m in asked
    ]
    image_parts = [part for part in trained[1]["content"] if part["type"] == "image"]
    assert len(image_parts) == 1 and image_parts[0]["image"].size == asked[1]["content"][0]["image"].size


def _without_images(content):
    return content if isinstance(content, str) else [p for p in content if p["type"] != "image"]


def test_docvqa_layout_maps_hub_columns_and_takes_every_answer_as_reference(tmp_path):
    folder = write_docvqa_copy(tmp_path / "docvqa", docvqa_rows([["42", "forty-two"], ["7"]]))
    suite = Suite.from_yaml(
        EVAL_DIR / "docvqa.yaml", overrides={"data.hub": str(folder), "data.config": None}
    )
    samples = load_samples(suite).samples
    assert [(s.id, s.references) for s in samples] == [("q0", ["42", "forty-two"]), ("q1", ["7"])]
    assert (
        samples[0].question == "What is written in box 0?\nAnswer the question using a single word or phrase."
    )
    assert samples[1].kept == {"question_types": ["form"], "docId": 101}


def test_hub_column_mapping_naming_a_missing_column_is_a_config_error(tmp_path):
    folder = write_docvqa_copy(tmp_path / "docvqa", docvqa_rows([["1"]]))
    suite = Suite.from_yaml(
        EVAL_DIR / "docvqa.yaml",
        overrides={"data.hub": str(folder), "data.config": None, "data.columns": {"question_id": "id"}},
    )
    with pytest.raises(ConfigError, match=r"data\.columns: \['question_id'\] not in"):
        evaluate(suite, model=None)
