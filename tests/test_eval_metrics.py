"""Sample-level metrics, the metric registry and the bootstrap statistics, on hand-computed examples."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import glmlab.eval
from glmlab.errors import ConfigError, InputError
from glmlab.eval.extract import extract_number
from glmlab.eval.labels import LabelPrediction
from glmlab.eval.metrics import (
    METRICS,
    MedicalVQAScore,
    aggregate_medical_vqa,
    aggregate_metric,
    anls,
    bootstrap_ci,
    exact_match,
    get_metric,
    label_f1,
    medical_vqa,
    normalize_text,
    paired_bootstrap_pvalue,
    register_metric,
    relaxed_accuracy,
    relaxed_accuracy_lenient,
    sample_score,
    vqa_accuracy,
    vqa_accuracy_lenient,
)
from glmlab.eval.vqa_normalize import normalize_vqa_answer

# --- exact match ---------------------------------------------------------------------------------


def test_normalize_text_folds_case_punctuation_and_whitespace():
    assert normalize_text("  Hello,   World! ") == "hello world"


def test_exact_match_ignores_case_and_whitespace():
    assert exact_match("  PARIS ", ["paris"]) == 1.0


def test_exact_match_ignores_chinese_punctuation():
    assert exact_match("《北京》。", ["北京"]) == 1.0


def test_exact_match_folds_full_width_forms():
    assert exact_match("ＡＢＣ１２３", ["abc123"]) == 1.0


def test_exact_match_removes_thousands_comma():
    assert exact_match("1,000", ["1000"]) == 1.0


def test_exact_match_keeps_decimal_point():
    assert exact_match("3.5", ["35"]) == 0.0


def test_exact_match_accepts_any_of_several_references():
    assert exact_match("NYC", ["New York", "nyc"]) == 1.0


def test_exact_match_different_text_is_zero():
    assert exact_match("London", ["Paris"]) == 0.0


def test_exact_match_empty_prediction_is_zero():
    assert exact_match("", ["Paris"]) == 0.0


def test_exact_match_failed_extraction_is_zero():
    assert exact_match(None, ["Paris"]) == 0.0


def test_exact_match_accepts_single_string_reference():
    assert exact_match("paris", "Paris") == 1.0


def test_exact_match_integral_float_prediction_matches_integer_text():
    assert exact_match(45.0, ["45"]) == 1.0


def test_metric_without_references_raises_input_error():
    with pytest.raises(InputError, match="references: empty list"):
        exact_match("Paris", [])


# --- ANLS ----------------------------------------------------------------------------------------


def test_anls_one_substitution_in_five_characters():
    assert anls("hello", ["hallo"]) == 0.8


def test_anls_ignores_case_and_extra_whitespace():
    assert anls("  Hello   World ", ["hello world"]) == 1.0


def test_anls_distance_at_threshold_still_scores():
    assert anls("ab", ["ac"]) == 0.5


def test_anls_threshold_option_changes_cutoff():
    assert anls("ab", ["ac"], threshold=0.4) == 0.0


def test_anls_takes_best_reference():
    assert anls("hello", ["xyz", "hallo", "hello!"]) == pytest.approx(5 / 6, abs=1e-12)


def test_anls_chinese_counts_characters():
    assert anls("发票号", ["发票号码"]) == 0.75


def test_anls_empty_prediction_is_zero():
    assert anls("", ["invoice"]) == 0.0


def test_anls_both_empty_is_one():
    assert anls("", [""]) == 1.0


def test_anls_failed_extraction_is_zero():
    assert anls(None, ["invoice"]) == 0.0


# --- VQAv2 accuracy ------------------------------------------------------------------------------


def test_vqa_normalize_turns_number_words_into_digits_and_drops_period():
    assert normalize_vqa_answer("Two dogs.") == "2 dogs"


def test_vqa_normalize_drops_articles():
    assert normalize_vqa_answer("The red car") == "red car"


def test_vqa_normalize_restores_contractions():
    assert normalize_vqa_answer("dont know") == "don't know"


def test_vqa_normalize_spaces_slash_without_surrounding_space():
    assert normalize_vqa_answer("black/white") == "black white"


def test_vqa_normalize_deletes_digit_comma():
    assert normalize_vqa_answer("1,000") == "1000"


def test_vqa_normalize_keeps_decimal_point():
    assert normalize_vqa_answer("3.5") == "3.5"


def test_vqa_accuracy_three_of_ten_humans_scores_point_nine():
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9, abs=1e-12)


def test_vqa_accuracy_two_of_ten_humans_scores_point_six():
    assert vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6, abs=1e-12)


def test_vqa_accuracy_one_of_ten_humans_scores_point_three():
    assert vqa_accuracy("yes", ["yes"] + ["no"] * 9) == pytest.approx(0.3, abs=1e-12)


def test_vqa_accuracy_four_of_ten_humans_scores_one():
    assert vqa_accuracy("yes", ["yes"] * 4 + ["no"] * 6) == 1.0


def test_vqa_accuracy_no_agreeing_human_scores_zero():
    assert vqa_accuracy("maybe", ["yes"] * 10) == 0.0


def test_vqa_accuracy_normalises_prediction_before_matching():
    assert vqa_accuracy("Two.", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9, abs=1e-12)


def test_vqa_accuracy_lenient_single_reference_is_exact_match():
    assert vqa_accuracy_lenient("Yes", ["yes"]) == 1.0


def test_vqa_accuracy_lenient_two_agreeing_references_score_one():
    assert vqa_accuracy_lenient("yes", ["yes", "yes"]) == 1.0


def test_vqa_accuracy_lenient_three_references_lower_needed_agreement_to_two():
    assert vqa_accuracy_lenient("yes", ["yes", "no", "no"]) == pytest.approx(1 / 3, abs=1e-12)


def test_vqa_accuracy_lenient_normalises_unanimous_references():
    assert vqa_accuracy_lenient("two", ["Two"] * 10) == 1.0


def test_vqa_accuracy_failed_extraction_is_zero():
    assert vqa_accuracy(None, ["yes"] * 10) == 0.0


# --- relaxed accuracy ----------------------------------------------------------------------------


def test_relaxed_accuracy_within_five_percent_is_correct():
    assert relaxed_accuracy("104", ["100"]) == 1.0


def test_relaxed_accuracy_exactly_five_percent_is_correct():
    assert relaxed_accuracy("105", ["100"]) == 1.0


def test_relaxed_accuracy_beyond_five_percent_is_wrong():
    assert relaxed_accuracy("106", ["100"]) == 0.0


def test_relaxed_accuracy_lenient_strips_percent_sign():
    assert relaxed_accuracy_lenient("45%", ["45"]) == 1.0


def test_relaxed_accuracy_compares_percent_values():
    assert relaxed_accuracy("44%", ["45%"]) == 1.0


def test_relaxed_accuracy_zero_reference_needs_exact_zero():
    assert relaxed_accuracy("0.01", ["0"]) == 0.0


def test_relaxed_accuracy_lenient_zero_reference_accepts_zero_written_differently():
    assert relaxed_accuracy_lenient("0.0", ["0"]) == 1.0


def test_relaxed_accuracy_lenient_reads_thousands_separator_and_float_prediction():
    assert relaxed_accuracy_lenient(1234.0, ["1,234"]) == 1.0


def test_relaxed_accuracy_reads_full_width_digits():
    assert relaxed_accuracy("１００", ["100"]) == 1.0


def test_relaxed_accuracy_lenient_text_answers_need_exact_match_ignoring_case_and_spaces():
    assert relaxed_accuracy_lenient(" Blue ", ["blue"]) == 1.0


def test_relaxed_accuracy_different_text_is_wrong():
    assert relaxed_accuracy("blue", ["green"]) == 0.0


def test_relaxed_accuracy_number_with_unit_is_text_until_extracted():
    assert relaxed_accuracy("约100元", ["100"]) == 0.0


def test_relaxed_accuracy_after_number_extraction_reads_unit_answer():
    assert relaxed_accuracy(extract_number("约100元"), ["100"]) == 1.0


def test_relaxed_accuracy_empty_prediction_is_wrong():
    assert relaxed_accuracy("", ["100"]) == 0.0


# --- medical VQA ---------------------------------------------------------------------------------


def test_medical_vqa_closed_yes_reads_verdict_of_sentence():
    assert medical_vqa("Yes, there is a mass.", ["yes"], question_type="closed") == MedicalVQAScore(
        1.0, "closed", "closed"
    )


def test_medical_vqa_closed_chinese_yes():
    assert medical_vqa("是的", ["是"], question_type="closed").score == 1.0


def test_medical_vqa_closed_chinese_wrong_verdict_scores_zero():
    assert medical_vqa("没有", ["有"], question_type="closed").score == 0.0


def test_medical_vqa_closed_choice_reads_letter():
    assert medical_vqa("Answer: (B)", ["B"], question_type="choice") == MedicalVQAScore(
        1.0, "closed", "choice"
    )


def test_medical_vqa_closed_other_answer_is_normalised_exact_match():
    assert medical_vqa("Left lung", ["left lung."], question_type="CLOSED").score == 1.0


def test_medical_vqa_open_recall_finds_all_reference_tokens():
    assert medical_vqa("There is a mass in the left lung.", ["left lung"]) == MedicalVQAScore(
        1.0, "open", "open"
    )


def test_medical_vqa_open_recall_counts_fraction_of_tokens():
    assert medical_vqa("right lung", ["left lung"], question_type="open").score == 0.5


def test_medical_vqa_open_recall_counts_reference_multiplicity():
    assert medical_vqa("the lung", ["lung lung base"]).score == pytest.approx(2 / 3, abs=1e-12)


def test_medical_vqa_open_recall_tokenises_chinese_per_character():
    assert medical_vqa("左肺有结节", ["右肺结节"]).score == 0.75


def test_medical_vqa_open_empty_prediction_scores_zero():
    assert medical_vqa("", ["left lung"]).score == 0.0


def test_medical_vqa_unknown_question_type_raises_config_error():
    with pytest.raises(
        ConfigError, match="question_type 'yesno': unknown. Use one of: closed, yes_no, choice, open"
    ):
        medical_vqa("yes", ["yes"], question_type="yesno")


def test_aggregate_medical_vqa_splits_by_bucket():
    results = [
        MedicalVQAScore(1.0, "closed", "closed"),
        MedicalVQAScore(0.0, "closed", "yes_no"),
        MedicalVQAScore(0.5, "open", "open"),
    ]
    assert aggregate_medical_vqa(results) == {
        "closed_count": 2,
        "closed_accuracy": 0.5,
        "open_count": 1,
        "open_recall": 0.5,
    }


def test_aggregate_medical_vqa_empty_bucket_reports_only_count():
    assert aggregate_medical_vqa([MedicalVQAScore(1.0, "open", "open")]) == {
        "closed_count": 0,
        "open_count": 1,
        "open_recall": 1.0,
    }


# --- label_f1 (single-label classification) -------------------------------------------------------


def test_label_f1_reads_labels_from_dicts_json_text_and_plain_text():
    reference = '{"label": "spam", "reason": "r", "evidence": "e"}'
    assert label_f1({"label": "spam", "reason": "x"}, [reference]) == LabelPrediction(1.0, "spam", "spam")
    assert label_f1('Verdict: {"label": "ok"}', [reference]) == LabelPrediction(0.0, "spam", "ok")
    assert label_f1(" spam ", ["spam"]) == LabelPrediction(1.0, "spam", "spam")
    assert label_f1({"verdict": "spam"}, [reference]) == LabelPrediction(0.0, "spam", None)
    assert label_f1(None, ["ok", "spam"]) == LabelPrediction(0.0, "ok", None)
    assert label_f1({"category": "spam"}, [{"category": "spam"}], key="category").score == 1.0


def test_label_f1_summary_is_per_label_precision_recall_f1_and_macro_f1():
    # expected  a a a b b c d ; predicted a a b b - c a   (- = no label read)
    pairs = [("a", "a"), ("a", "a"), ("a", "b"), ("b", "b"), ("b", None), ("c", "c"), ("d", "a")]
    results = [label_f1(None if p is None else {"label": p}, [{"label": e}]) for e, p in pairs]
    summary = aggregate_metric("label_f1", results)
    # a: TP 2, FP 1 (d), FN 1 -> P 2/3, R 2/3; b: TP 1, FP 1, FN 1 -> 1/2, 1/2; c: 1, 1; d: 0 (no TP)
    assert list(summary)[:4] == ["macro_f1", "accuracy", "samples", "unparsed"]
    assert summary["accuracy"] == pytest.approx(4 / 7)
    assert (summary["samples"], summary["unparsed"]) == (7, 1)
    assert summary["a/precision"] == pytest.approx(2 / 3) and summary["a/recall"] == pytest.approx(2 / 3)
    assert summary["a/f1"] == pytest.approx(2 / 3) and summary["a/support"] == 3
    assert (summary["b/precision"], summary["b/recall"], summary["b/f1"]) == (0.5, 0.5, 0.5)
    assert (summary["c/precision"], summary["c/recall"], summary["c/f1"]) == (1.0, 1.0, 1.0)
    assert (summary["d/precision"], summary["d/recall"], summary["d/f1"], summary["d/support"]) == (
        0.0,
        0.0,
        0.0,
        1,
    )
    assert summary["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0 + 0.0) / 4)


def test_label_f1_counts_a_predicted_label_outside_the_references_as_its_own_class():
    results = [label_f1({"label": "spam"}, ["ok"]), label_f1({"label": "ok"}, ["ok"])]
    summary = aggregate_metric("label_f1", results)
    assert (summary["spam/precision"], summary["spam/support"]) == (0.0, 0)
    assert (summary["ok/precision"], summary["ok/recall"]) == (1.0, 0.5)
    assert summary["macro_f1"] == pytest.approx((0.0 + 2 / 3) / 2)


# --- registry ------------------------------------------------------------------------------------


def test_registry_holds_every_builtin_metric():
    assert {
        "exact_match",
        "anls",
        "vqa_accuracy",
        "relaxed_accuracy",
        "field_f1",
        "medical_vqa",
        "label_f1",
    } <= set(METRICS)


def test_get_metric_returns_registered_function():
    assert get_metric("anls") is anls


def test_get_metric_unknown_name_lists_known_ones():
    with pytest.raises(
        ConfigError,
        match=r"metric 'anlss': unknown metric\. Known metrics: anls, box_accuracy, box_iou, exact_match",
    ):
        get_metric("anlss")


def test_register_metric_makes_user_metric_available_by_name():
    @register_metric("test_length_match")
    def length_match(prediction, references):
        return float(any(len(prediction) == len(ref) for ref in references))

    try:
        assert get_metric("test_length_match")("abc", ["xyz"]) == 1.0
    finally:
        METRICS.pop("test_length_match")


def test_register_metric_refuses_taken_name():
    with pytest.raises(ConfigError, match="metric 'anls': already registered"):
        register_metric("anls")(lambda prediction, references: 0.0)


def test_misspelt_metric_option_is_type_error():
    with pytest.raises(TypeError):
        anls("a", ["a"], treshold=0.4)


def test_sample_score_reads_structured_result():
    assert sample_score(MedicalVQAScore(0.25, "open", "open")) == 0.25


def test_aggregate_metric_defaults_to_mean():
    assert aggregate_metric("exact_match", [1.0, 0.0, 1.0, 1.0]) == {"mean": 0.75}


def test_aggregate_metric_uses_registered_aggregator():
    results = [medical_vqa("yes", ["yes"], question_type="closed"), medical_vqa("left", ["left lung"])]
    assert aggregate_metric("medical_vqa", results) == {
        "closed_count": 1,
        "closed_accuracy": 1.0,
        "open_count": 1,
        "open_recall": 0.5,
    }


def test_aggregate_metric_without_results_raises_input_error():
    with pytest.raises(InputError, match="metric 'anls': no results to aggregate"):
        aggregate_metric("anls", [])


# --- bootstrap -----------------------------------------------------------------------------------


def test_bootstrap_ci_of_constant_scores_is_that_constant():
    assert bootstrap_ci([0.5] * 20) == (0.5, 0.5)


def test_bootstrap_ci_of_two_scores_spans_their_range():
    # Means of two draws from {0, 1}: 0 (p=1/4), 0.5 (p=1/2), 1 (p=1/4); 2.5% and 97.5% quantiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], n_resamples=1000) == (0.0, 1.0)


def test_bootstrap_ci_is_reproducible_for_a_seed():
    scores = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert bootstrap_ci(scores, seed=3) == bootstrap_ci(scores, seed=3)
    assert len({bootstrap_ci(scores, seed=seed, n_resamples=50) for seed in range(10)}) > 1  # seed is used


def test_bootstrap_ci_contains_the_mean():
    scores = [float(i % 3 == 0) for i in range(300)]
    low, high = bootstrap_ci(scores)
    assert low < sum(scores) / len(scores) < high


def test_bootstrap_ci_rejects_confidence_outside_unit_interval():
    with pytest.raises(ConfigError, match="confidence=1.5: must lie strictly between 0 and 1"):
        bootstrap_ci([1.0, 0.0], confidence=1.5)


def test_bootstrap_ci_rejects_empty_scores():
    with pytest.raises(InputError, match="values: no scores"):
        bootstrap_ci([])


def test_paired_bootstrap_identical_runs_give_p_one():
    assert paired_bootstrap_pvalue([1.0, 0.0, 1.0], [1.0, 0.0, 1.0]) == 1.0


def test_paired_bootstrap_consistent_difference_gives_smallest_p():
    assert paired_bootstrap_pvalue([1.0] * 30, [0.0] * 30, n_resamples=999) == 0.001


def test_paired_bootstrap_symmetric_differences_give_p_one():
    assert paired_bootstrap_pvalue([1.0, 0.0], [0.0, 1.0]) == 1.0


def test_paired_bootstrap_rejects_runs_of_different_length():
    with pytest.raises(InputError, match="a has 2 scores and b has 3"):
        paired_bootstrap_pvalue([1.0, 0.0], [1.0, 0.0, 1.0])


def test_paired_bootstrap_rejects_zero_resamples():
    with pytest.raises(ConfigError, match="n_resamples=0: must be a positive integer"):
        paired_bootstrap_pvalue([1.0], [0.0], n_resamples=0)


# --- layering ------------------------------------------------------------------------------------


def test_eval_scoring_modules_import_no_model_code():
    # Static check: `import glmlab` itself may load the model stack, but scoring code must not need it.
    package = Path(glmlab.eval.__file__).parent
    imported = set()
    for module in ("__init__", "extract", "fields", "metrics", "stats", "vqa_normalize"):
        tree = ast.parse((package / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
    forbidden = {"torch", "transformers", "peft", "glmlab.model", "glmlab.loading", "glmlab.images"}
    assert {name for name in imported if name.split(".")[0] in forbidden or name in forbidden} == set()


def test_the_headline_statistic_is_the_mean_else_micro_f1_else_the_first():
    from glmlab.eval.scoring import headline_statistic

    assert headline_statistic(["mean", "f1"]) == "mean"
    assert headline_statistic(["precision", "recall", "f1", "tp"]) == "f1"
    assert headline_statistic(["open_recall", "closed_accuracy"]) == "closed_accuracy"
    assert headline_statistic(["anything"]) == "anything"
