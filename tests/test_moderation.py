"""glmlab.moderation: the policy and its errors, the judgement of an answer, the moderation generator,
moderate() on the tiny model, and the moderation suite and recipe end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support import EVAL_DIR, QUIET

from glmlab.answer import Answer
from glmlab.data import GENERATORS, generate, generate_moderation, to_dialogue
from glmlab.data.moderation import LABELS
from glmlab.errors import ConfigError
from glmlab.moderation import (
    COLUMNS,
    JUDGE_TOKENS,
    READ_QUESTION,
    judge_prompt,
    judgement,
    load_policy,
    moderate,
)

SMALL_POLICY = {
    "name": "small",
    "labels": [
        {"name": "allowed", "definition": "Breaks no rule."},
        {"name": "spam", "definition": "Asks to call a number.", "examples": ["Call 555"]},
    ],
}


# ---- the policy -------------------------------------------------------------------------------------


def test_the_default_policy_has_the_labels_the_generator_draws():
    policy = load_policy()
    assert policy.names == list(LABELS)
    assert policy.allowed_label == "allowed"
    assert all(label.definition and label.examples for label in policy.labels)
    assert policy.schema()["properties"]["label"]["enum"] == list(LABELS)
    assert policy.schema()["required"] == ["label", "reason", "evidence"]


def test_a_policy_file_round_trips_and_its_prompt_holds_every_label(tmp_path):
    import yaml

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_POLICY), encoding="utf-8")
    policy = load_policy(path)
    assert policy == load_policy(SMALL_POLICY)
    prompt = judge_prompt(policy, "Call 555-0101 now\n")
    assert '- spam: Asks to call a number.\n  Examples: "Call 555"' in prompt
    assert "<<<\nCall 555-0101 now\n>>>" in prompt
    assert 'one of allowed, spam; "reason"' in prompt


def test_policy_errors_name_every_bad_field_at_once():
    bad = {
        "name": "",
        "labels": [
            {"name": "Spam!", "definition": "x"},
            {"name": "allowed", "definiton": "typo"},
            {"name": "allowed", "definition": "y", "examples": "not a list"},
        ],
        "allowed_label": "ok",
        "colour": "red",
    }
    with pytest.raises(ConfigError) as caught:
        load_policy(bad)
    assert str(caught.value) == (
        "policy: 3 invalid field(s):\n"
        "  - colour: unknown field; known: name, labels, allowed_label, description\n"
        "  - labels[1].definiton: unknown field (did you mean 'definition'?); known: name, definition, examples\n"
        "  - labels[1].definition: missing"
    )
    bad["labels"][1] = {"name": "allowed", "definition": "z"}
    del bad["colour"]
    with pytest.raises(ConfigError) as caught:
        load_policy(bad)
    assert str(caught.value) == (
        "policy: 5 invalid field(s):\n"
        "  - name='': must be a non-empty string\n"
        "  - labels[0].name='Spam!': must be a lower-case name of letters, digits and _ (e.g. contact_details)\n"
        "  - labels[2].examples='not a list': must be a list of example texts\n"
        "  - labels: 'allowed' named twice; each label needs its own name\n"
        "  - allowed_label: 'ok' is not a label of the policy (Spam!, allowed, allowed); "
        "name the label of text that breaks no rule"
    )


def test_policy_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path / "none.yaml")
    assert (
        str(caught.value)
        == f"policy file {str(tmp_path / 'none.yaml')!r}: not found; pass the path of a policy YAML file."
    )
    listed = tmp_path / "list.yaml"
    listed.write_text("- allowed\n- spam\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_policy(listed)
    assert str(caught.value) == f"{listed}: expected a mapping with name and labels, got list."
    one = tmp_path / "one.yaml"
    one.write_text("name: one\nlabels:\n  - name: allowed\n    definition: fine\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_policy(one)
    assert str(caught.value) == (
        f"{one}: labels=[Label(name='allowed', definition='fine', examples=[])]: must be a list of two or more labels."
    )


# ---- reading a judgement ------------------------------------------------------------------------------


def test_judgement_takes_the_json_object_and_checks_the_label():
    policy = load_policy(SMALL_POLICY)
    text = 'Sure. {"label": "spam", "reason": "A number to call.", "evidence": "Call 555"}'
    assert judgement(Answer(text=text), policy) == (
        {"label": "spam", "reason": "A number to call.", "evidence": "Call 555"},
        None,
    )
    assert judgement(Answer(text='{"label": "allowed"}'), policy) == (
        {"label": "allowed", "reason": "", "evidence": ""},
        None,
    )
    assert judgement(Answer(text='{"label": "scam", "reason": "", "evidence": ""}'), policy) == (
        None,
        "label 'scam' is not in the policy (allowed, spam)",
    )
    assert judgement(Answer(text='{"label": "spam", "evidence": 5}'), policy) == (
        None,
        "evidence is int, not a string: '5'",
    )
    assert judgement(Answer(text='{"label": "sp', finish_reason="length"), policy) == (
        None,
        "no JSON object in the judge's answer (cut by max_new_tokens: raise judge_tokens): '{\"label\": \"sp'",
    )
    assert judgement(Answer(text="", finish_reason="error", error="boom"), policy) == (None, "boom")
    constrained = Answer(text="ignored", parsed={"label": "allowed", "reason": "fine", "evidence": ""})
    assert judgement(constrained, policy) == ({"label": "allowed", "reason": "fine", "evidence": ""}, None)
    cut = Answer(text='{"label":"spam","reason":"ab', finish_reason="length", error="the answer is not JSON")
    assert judgement(cut, policy) == (
        None,
        "the answer is not JSON (cut by max_new_tokens: raise judge_tokens)",
    )


# ---- the generator ------------------------------------------------------------------------------------


def _pixels(record) -> np.ndarray:
    return np.asarray(record["image"])


def test_the_generator_is_deterministic_by_seed_and_balances_labels():
    first, again, other = (generate_moderation(8, seed) for seed in (3, 3, 4))
    assert [r["answer"] for r in first] == [r["answer"] for r in again]
    assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(first, again, strict=True))
    assert [r["metadata"]["text"] for r in first] != [r["metadata"]["text"] for r in other]
    assert sorted(r["metadata"]["label"] for r in first) == sorted(LABELS * 2)
    assert GENERATORS["moderation"] is generate_moderation
    assert [r["id"] for r in generate("moderation", 2, seed=3)] == [
        "moderation-s3-00000",
        "moderation-s3-00001",
    ]


def test_generated_records_answer_the_judge_prompt_of_their_own_text():
    policy = load_policy()
    for record in generate_moderation(12, seed=0, size=224):
        meta = record["metadata"]
        verdict = json.loads(record["answer"])
        assert verdict["label"] == meta["label"] and verdict["evidence"] == meta["evidence"]
        assert record["question"] == judge_prompt(policy, meta["text"])
        assert (meta["evidence"] == "") == (meta["label"] == "allowed")
        assert meta["evidence"] in meta["text"].splitlines() or meta["evidence"] == ""
        assert max(record["image"].size) == 224
        assert to_dialogue(record).answer == record["answer"]


def test_generator_options_choose_languages_and_kinds_and_refuse_bad_values(tmp_path):
    records = generate_moderation(6, seed=1, size=224, languages=("en",), kinds=("screenshot",))
    assert {r["metadata"]["language"] for r in records} == {"en"}
    assert {r["metadata"]["kind"] for r in records} == {"screenshot"}
    assert all(r["metadata"]["text"].isascii() for r in records)
    with pytest.raises(
        ConfigError, match=r"^kinds=\('video',\): expected some of \('poster', 'sign', 'screenshot'\)\.$"
    ):
        generate_moderation(1, kinds=("video",))
    with pytest.raises(ConfigError, match=r"^size=100: expected 224\.\.2048 px"):
        generate_moderation(1, size=100)
    import yaml

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_POLICY), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        generate_moderation(1, policy=str(path))
    assert str(caught.value) == (
        f"policy={str(path)!r}: its labels are ['allowed', 'spam'] (allowed: 'allowed'); the moderation set is "
        "labelled ['allowed', 'contact_details', 'medical_claim', 'violent_or_hateful'] with 'allowed'. "
        "Reword the definitions, keep the names."
    )


# ---- moderate() on the tiny model ---------------------------------------------------------------------


@pytest.mark.slow
def test_moderate_gives_a_row_per_page_each_judged_or_saying_why(vlm, tmp_path):
    images = [record["image"] for record in generate_moderation(2, seed=5, size=224)]
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"poster{index}.png")
        image.save(paths[-1])
    pdf = tmp_path / "two-pages.pdf"
    images[0].save(pdf, save_all=True, append_images=[images[1]])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    table = moderate(vlm, [*paths, pdf, broken], SMALL_POLICY, batch_size=4, read_tokens=8)
    assert list(table.columns) == COLUMNS
    assert list(table.source) == [str(paths[0]), str(paths[1]), str(pdf), str(pdf), str(broken)]
    assert list(table.page) == [1, 1, 1, 2, 1]
    assert table.error.iloc[-1].startswith(f"{broken.name}: ") or str(broken) in table.error.iloc[-1]
    assert table.label.iloc[-1] is None and table.text.iloc[-1] is None
    judged = table.iloc[:4]  # the constrained judge always answers a label of the policy
    assert list(judged.error) == [None] * 4, list(judged.error)
    assert set(judged.label) <= {"allowed", "spam"}
    assert list(judged.flagged) == [label == "spam" for label in judged.label]
    assert all(
        isinstance(text, str) and isinstance(reason, str)
        for text, reason in zip(judged.text, judged.reason, strict=True)
    )
    assert all(len(reason) <= 100 for reason in judged.reason)
    assert table.flagged.isna().iloc[-1] and len(table[table.flagged]) == sum(judged.label == "spam")


def test_the_read_question_asks_for_the_text_only():
    assert READ_QUESTION.endswith("Answer with the text only.")


# ---- the suite and the recipe -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_moderation_suite_runs_end_to_end_on_tiny(vlm):
    from glmlab.eval import Suite, evaluate

    suite = Suite.from_yaml(EVAL_DIR / "moderation.yaml", overrides={"data.options.size": 224})
    run = evaluate(suite, vlm, limit=4, **QUIET)
    summary = run.summary.set_index("statistic")
    assert set(run.summary.metric) == {"label_f1"}
    assert (summary.loc["samples", "value"], summary.loc["unparsed", "value"]) == (4, 0)  # constrained
    assert 0 <= summary.loc["macro_f1", "value"] <= 1
    assert (
        summary.loc["macro_f1", "ci_low"]
        <= summary.loc["macro_f1", "value"]
        <= summary.loc["macro_f1", "ci_high"]
    )
    assert {f"{label}/support" for label in set(run.samples.label)} <= set(summary.index)
    assert set(run.samples.columns) >= {"label", "language", "kind"}


def test_the_suite_constrains_answers_as_moderate_does():
    from glmlab.eval import Suite

    generation = Suite.from_yaml(EVAL_DIR / "moderation.yaml").generation
    assert generation["schema"] == load_policy().schema()
    assert generation["max_new_tokens"] == JUDGE_TOKENS


def test_the_moderation_recipe_trains_the_judge_on_the_generator():
    from glmlab.lora.recipe import LoraRecipe

    recipe = LoraRecipe.from_yaml(EVAL_DIR.parent / "lora" / "moderation.yaml")
    assert recipe.data.generator == "moderation"
    assert (recipe.evaluation.metric, recipe.evaluation.extractor) == ("label_f1", "json")
    with pytest.raises(ConfigError, match=r"adapter\.rank=0: must be an integer >= 1"):
        recipe.replace(**{"adapter.rank": 0})


def test_images_in_memory_are_moderated_too_and_named_by_their_kind(vlm):
    table = moderate(vlm, Image.new("RGB", (56, 56), "white"), SMALL_POLICY, read_tokens=1, judge_tokens=4)
    assert list(table.source) == ["Image"]
    assert table.error.iloc[0].startswith("judge step: the answer is not JSON")
    assert table.error.iloc[0].endswith("(cut by max_new_tokens: raise judge_tokens)")
