"""ChartQA, DocVQA and VQAv2 metrics against their reference definitions, edge cases included.

relaxed_accuracy: pix2struct's `relaxed_correctness` (used verbatim by lmms-eval and VLMEvalKit).
anls: DocVQA's official script (normalised texts, raw lengths, 1 - NL below 0.5 scores 0).
vqa_accuracy: EvalAI's processing of the prediction and VQAv2's `vqaEval.py` scoring.
"""

from __future__ import annotations

import pytest

from glmlab.eval.metrics import METRICS, anls, relaxed_accuracy, vqa_accuracy

# --- ChartQA relaxed accuracy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("50%", "0.5", 1.0),  # a trailing % divides by 100
        ("0.5", "50%", 1.0),
        ("45%", "45", 0.0),  # 0.45 is not 45
        ("45", "45%", 0.0),
        ("44%", "45%", 1.0),  # 2.2 % off
        ("105", "100", 1.0),  # exactly 5 % off: correct
        ("95", "100", 1.0),
        ("105.01", "100", 0.0),
        ("2.1", "2", 0.0),  # 5 % in decimals, 5.0000000000000044 % in binary floats
        ("-10.4", "-10", 1.0),
        ("0", "0", 1.0),  # a reference of 0 is compared as a string
        ("0.0", "0", 0.0),
        ("0.01", "0", 0.0),
        ("0%", "0", 0.0),
        ("Blue", "blue", 1.0),  # text: lowercased, not stripped
        (" blue", "blue", 0.0),
        ("blue ", "blue", 0.0),
        (" 100 ", "100", 1.0),  # float() itself ignores surrounding spaces
        ("1e2", "100", 1.0),
        ("１００", "100", 1.0),  # float() reads full-width digits
        ("1,234", "1234", 0.0),  # float() does not read thousands commas: string comparison
        ("1,234", "1,234", 1.0),
        ("$5", "5", 0.0),
        ("five", "5", 0.0),
        ("5", "five", 0.0),
        ("nan", "nan", 0.0),  # NaN is no number's neighbour, not even its own
        ("", "100", 0.0),
    ],
)
def test_relaxed_accuracy_follows_pix2struct(prediction, reference, expected):
    assert relaxed_accuracy(prediction, [reference]) == expected


def test_relaxed_accuracy_tolerance_option_widens_the_band():
    assert (relaxed_accuracy("110", ["100"]), relaxed_accuracy("110", ["100"], tolerance=0.1)) == (0.0, 1.0)


def test_relaxed_accuracy_float_prediction_meets_percent_reference():
    assert relaxed_accuracy(0.5, ["50%"]) == 1.0


def test_relaxed_accuracy_takes_the_best_reference():
    assert (relaxed_accuracy("12", ["7", "12.5"]), relaxed_accuracy("12", ["7", "20"])) == (1.0, 0.0)


def test_relaxed_accuracy_failed_extraction_is_wrong():
    assert relaxed_accuracy(None, ["0"]) == 0.0


def test_lenient_variants_are_registered_beside_the_reference_ones():
    assert {"relaxed_accuracy", "relaxed_accuracy_lenient", "vqa_accuracy", "vqa_accuracy_lenient"} <= set(
        METRICS
    )
    assert (
        METRICS["relaxed_accuracy_lenient"]("45%", ["45"]) == 1.0 and relaxed_accuracy("45%", ["45"]) == 0.0
    )


# --- DocVQA ANLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("Hello World", ["hello   world"], 1.0),
        ("hello", ["hallo"], 0.8),
        ("ab", ["ac"], 0.5),  # NL exactly 0.5: still scores
        ("abcd", ["abxy"], 0.5),
        ("abcde", ["abxyz"], 0.0),  # NL 0.6
        ("abc", ["axy"], 0.0),  # NL 2/3
        (" hallo ", ["hello"], 6 / 7),  # distance on normalised text, length of the raw one
        ("hello", ["xyz", "hallo", "helo"], 0.8),  # the smallest distance over references
        ("", [""], 1.0),
        ("", ["invoice"], 0.0),
        (None, ["invoice"], 0.0),
    ],
)
def test_anls_follows_the_docvqa_script(prediction, references, expected):
    assert anls(prediction, references) == pytest.approx(expected, abs=1e-12)


def test_anls_threshold_is_on_the_normalised_distance():
    assert (anls("abcde", ["abxyz"], threshold=0.6), anls("ab", ["ac"], threshold=0.4)) == (
        pytest.approx(0.4, abs=1e-12),
        0.0,
    )


# --- VQAv2 accuracy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matching", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (5, 1.0), (9, 1.0)]
)
def test_vqa_accuracy_averages_over_the_ten_leave_one_out_subsets(matching, expected):
    # 3 matches: 7 subsets keep 3 (score 1), 3 keep 2 (score 2/3) -> (7 + 2) / 10 = 0.9
    humans = ["yes"] * matching + ["no"] * (10 - matching)
    assert vqa_accuracy("yes", humans) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_ten_agreeing_humans_score_one():
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


@pytest.mark.parametrize(
    ("prediction", "humans", "expected"),
    [
        ("Two", ["2"] * 2 + ["3"] * 8, 0.6),  # number words become digits
        ("none", ["0"] * 3 + ["1"] * 7, 0.9),
        ("A dog", ["dog"] * 4 + ["cat"] * 6, 1.0),  # articles dropped
        ("the dog", ["a dog"] + ["cat"] * 9, 0.3),
        ("dont know", ["don't know"] * 3 + ["no"] * 7, 0.9),  # contractions restored
        ("Yes!", ["yes"] + ["no"] * 9, 0.3),  # punctuation
        ("black/white", ["black white"] * 2 + ["black"] * 8, 0.6),
        ("1,000", ["1000"] * 5 + ["100"] * 5, 1.0),  # EvalAI drops commas
        ("dog's", ["dog's"] * 3 + ["cat"] * 7, 0.0),  # EvalAI splits "'s" off: "dog 's"
    ],
)
def test_vqa_accuracy_normalises_answers_as_the_official_evaluation(prediction, humans, expected):
    assert vqa_accuracy(prediction, humans) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_unanimous_humans_are_not_normalised():
    # vqaEval.py normalises the human answers only when they differ; EvalAI always lowercases the prediction
    assert (vqa_accuracy("Yes", ["yes"] * 10), vqa_accuracy("two", ["two"] * 10)) == (1.0, 0.0)


def test_vqa_accuracy_always_divides_by_three():
    assert (vqa_accuracy("yes", ["yes"]), vqa_accuracy("yes", ["yes", "yes"])) == (0.0, pytest.approx(1 / 3))


def test_vqa_accuracy_failed_extraction_is_zero():
    assert vqa_accuracy(None, ["yes"] * 10) == 0.0
