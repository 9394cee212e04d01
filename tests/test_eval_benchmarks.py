"""The public benchmark suites (ChartQA, TextVQA, OCRBench, MMMU, RefCOCO): their metrics against
hand-computed values, and each shipped suite run offline on a local copy shaped like its hub rows."""

from __future__ import annotations

import json

import pytest
from support import EVAL_DIR, QUIET, scene, script, write_hub_copy
from typer.testing import CliRunner

from glmlab.eval import evaluate
from glmlab.eval.extract import extract_box
from glmlab.eval.metrics import box_accuracy, box_iou, mmmu_accuracy, ocrbench, textvqa_accuracy
from glmlab.eval.mmmu import parse_choice, parse_open
from glmlab.eval.samples import load_samples
from glmlab.eval.scoring import metric_results
from glmlab.eval.suite import Suite

HME = "Handwritten Mathematical Expression Recognition"


def local(name: str, folder, **overrides) -> Suite:
    return Suite.from_yaml(EVAL_DIR / f"{name}.yaml", overrides={"data.hub": str(folder), **overrides})


# ---- metrics, by hand -------------------------------------------------------------------------------


def test_textvqa_accuracy_processes_every_human_answer_and_votes_leave_one_out():
    # "Two" x10: TextVQA normalises the humans too, so "two" (-> "2") matches all ten; vqa_accuracy would not
    assert textvqa_accuracy("two", ["Two"] * 10) == 1.0
    # 2 of 10 humans agree: 8 subsets keep both (2/3), 2 keep one (1/3) -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6
    assert textvqa_accuracy("Coca-Cola", ["coca-cola", "Coca Cola"] + ["pepsi"] * 8) == pytest.approx(0.6)
    assert textvqa_accuracy("the stop sign.", ["stop sign"] * 3 + ["x"] * 7) == pytest.approx(0.9)
    assert textvqa_accuracy(None, ["a"] * 10) == 0.0


def test_ocrbench_is_a_substring_test_case_blind_except_for_handwritten_maths():
    assert ocrbench("The word is CENTRAL.", ["central"]) == 1.0
    assert ocrbench("centra", ["central"]) == 0.0
    assert ocrbench("line one\nline two", ["ONE LINE TWO", "one line two"]) == 1.0  # newline -> space
    assert ocrbench("x^{2} + 1", ["x^{2}+1"], question_type=HME) == 1.0  # spaces removed
    assert ocrbench("X^{2}+1", ["x^{2}+1"], question_type=HME) == 0.0  # case kept
    assert ocrbench(None, ["a"]) == 0.0


def test_mmmu_choice_parsing_follows_the_reference_order_of_trust():
    options = ["$6", "$7", "$8", "$9"]
    assert parse_choice("B", options) == "B"
    assert parse_choice("(C)", options) == "C"
    assert parse_choice("The answer is D.", options) == "D"  # "D." after the edge "." is stripped: "D "
    assert parse_choice("Not (A) or C; (B) it is", options) == "B"  # bracketed first, the last one
    assert parse_choice("I think the price must be $8 in total here", options) == "C"  # by option text
    guess = parse_choice("no idea", options)
    assert guess in "ABCD" and parse_choice("no idea", options) == guess  # seeded: the same every time


def test_mmmu_open_parsing_and_judging():
    # the reference's number patterns also read the "000" of "3,000" on its own: 0.0 is a piece too
    assert set(parse_open("So the total is 3,000 dollars")) == {"3,000 dollars", 3000.0, 0.0}
    assert mmmu_accuracy("The result is 3.14159", "3.14", question_type="open") == 1.0  # rounded to 2 places
    assert mmmu_accuracy("It is granite", "Granite", question_type="open") == 1.0
    assert mmmu_accuracy("It is marble", "Granite", question_type="open") == 0.0
    assert mmmu_accuracy("C", "C", question_type="multiple-choice", options="['a', 'b', 'c']") == 1.0
    assert mmmu_accuracy("B", "C", question_type="multiple-choice", options="['a', 'b', 'c']") == 0.0


def test_box_iou_and_accuracy_by_hand():
    # two 100 x 100 boxes overlapping in a 50 x 100 strip: 5000 / (10000 + 10000 - 5000) = 1/3
    assert box_iou([0, 0, 100, 100], ["[50, 0, 150, 100]"]) == pytest.approx(1 / 3)
    assert box_accuracy([0, 0, 100, 100], ["[50, 0, 150, 100]"]) == 0.0
    # 80 x 100 inside 100 x 100: 8000 / 10000 = 0.8
    assert box_accuracy([0, 0, 100, 100], [[20, 0, 100, 100]]) == 1.0
    assert box_accuracy([0, 0, 100, 100], [[50, 0, 150, 100]], threshold=0.3) == 1.0
    assert box_iou([5, 5, 5, 5], [[5, 5, 5, 5]]) == 0.0  # no area: 0, not a division by zero
    assert box_accuracy(None, ["[0, 0, 1, 1]"]) == 0.0


def test_box_extractor_reads_glm_box_tags_then_bare_brackets():
    assert extract_box("<think>hm</think><|begin_of_box|>[[10,20,300,400]]<|end_of_box|>") == [
        10,
        20,
        300,
        400,
    ]
    assert extract_box("The box is [0.5, 12, 30.25, 40].") == [0.5, 12.0, 30.25, 40.0]
    assert extract_box("a cat on the left") is None


# ---- the suites on local copies of the hub rows ------------------------------------------------------


def test_chartqa_suite_runs_on_a_copy_of_the_hub_rows(scripted, tmp_path):
    script(scripted, "42")
    rows = [
        {"type": "human_test", "question": "How many?", "answer": "43", "image": scene()},  # within 5 %
        {"type": "augmented_test", "question": "Value?", "answer": "45", "image": scene()},
        {"type": "human_test", "question": "Label?", "answer": "42", "image": scene()},
    ]
    suite = local("chartqa", write_hub_copy(tmp_path / "chartqa", "chartqa", "test", rows))
    run = evaluate(suite, scripted, **QUIET)
    assert run.samples["question"][0] == "How many?\nAnswer the question using a single word or phrase."
    assert run.samples["relaxed_accuracy"].tolist() == [1.0, 0.0, 1.0]
    assert run.samples["type"].tolist() == ["human_test", "augmented_test", "human_test"]


def textvqa_row(k: int, question: str, answers: list[str]) -> dict:
    return {
        "image_id": f"img{k}",
        "question_id": 34602 + k,
        "question": question,
        "question_tokens": question.split(),
        "image": scene(),
        "image_width": 112,
        "image_height": 112,
        "flickr_original_url": "",
        "flickr_300k_url": "",
        "answers": answers,
        "image_classes": ["Sign"],
        "set_name": "val",
        "ocr_tokens": ["42"],
    }


def test_textvqa_suite_capitalises_questions_and_votes_over_ten_answers(scripted, tmp_path):
    script(scripted, "42")
    rows = [
        textvqa_row(0, "what NUMBER is shown?", ["42"] * 10),
        textvqa_row(1, "which?", ["42"] + ["7"] * 9),
    ]
    suite = local("textvqa", write_hub_copy(tmp_path / "textvqa", "textvqa", "validation", rows))
    run = evaluate(suite, scripted, **QUIET)
    assert run.samples["id"].tolist() == ["34602", "34603"]
    assert (
        run.samples["question"][0]
        == "What number is shown?\nAnswer the question using a single word or phrase."
    )
    assert run.samples["references"][1] == ["42"] + ["7"] * 9
    assert run.samples["textvqa_accuracy"].tolist() == [1.0, pytest.approx(0.3)]  # 9 subsets x 1/3, 1 x 0


def test_ocrbench_suite_scores_substrings_per_category(scripted, tmp_path):
    script(scripted, "42")
    rows = [
        {"dataset": "IIIT5K", "question": " what is written in the image?", "question_type": "Regular Text Recognition",
         "answer": ["42"], "image": scene()},
        {"dataset": "HME100k", "question": "Please write out the expression of the formula in the image using LaTeX format.",
         "question_type": HME, "answer": ["4 2"], "image": scene()},
        {"dataset": "FUNSD", "question": "what is the date?", "question_type": "Key Information Extraction",
         "answer": ["1942", "42x"], "image": scene()},
    ]  # fmt: skip
    suite = local("ocrbench", write_hub_copy(tmp_path / "ocrbench", "ocrbench", "test", rows))
    run = evaluate(suite, scripted, **QUIET)
    assert run.samples["id"].tolist() == ["000000", "000001", "000002"]  # the hub rows have no id
    assert run.samples["ocrbench"].tolist() == [1.0, 1.0, 0.0]
    assert run.samples["question_type"].tolist() == [row["question_type"] for row in rows]


def mmmu_row(k: int, question: str, options: list[str], answer: str, kind: str, images: dict) -> dict:
    return {
        "id": f"validation_Accounting_{k}",
        "question": question,
        "options": str(options),
        "explanation": "",
        **{f"image_{i}": images.get(i) for i in range(1, 8)},
        "img_type": "['Tables']",
        "answer": answer,
        "topic_difficulty": "Easy",
        "question_type": kind,
        "subfield": "Financial Accounting",
    }


def test_mmmu_suite_builds_lmms_eval_prompts_and_sends_the_mentioned_images(scripted, tmp_path):
    script(scripted, "B")
    rows = [
        mmmu_row(1, "Which is larger, <image 2> or <image 1>?", ["<image 1>", "the second"], "B", "multiple-choice",
                 {1: scene(colour="red"), 2: scene(80, 60, "blue"), 3: scene(colour="green")}),
        mmmu_row(2, "What letter is shown in <image 1>?", [], "b", "open", {1: scene()}),
        mmmu_row(3, "Pick one. <image 1>", ["x", "y", "z"], "C", "multiple-choice", {1: scene()}),
    ]  # fmt: skip
    suite = local("mmmu", write_hub_copy(tmp_path / "mmmu", "mmmu", "validation", rows))
    samples = load_samples(suite)
    assert samples.samples[0].question == (
        "Which is larger, <image 2> or <image 1>?\nA. <image 1>\nB. the second\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert samples.samples[1].question == (
        "What letter is shown in <image 1>?\n\nAnswer the question using a single word or phrase."
    )
    # image_1 then image_2 (sorted, each once); image_3 is never mentioned, so not sent
    assert [image.size for image in samples.images(samples.samples[0])] == [(112, 112), (80, 60)]
    run = evaluate(suite, scripted, **QUIET)
    assert run.samples["mmmu_accuracy"].tolist() == [
        1.0,
        1.0,
        0.0,
    ]  # open "b": " b"/"b " in "b"? no -> see below
    assert run.samples["subfield"].tolist() == ["Financial Accounting"] * 3


def refcoco_row(k: int, bbox: list[float], expressions: list[str]) -> dict:
    return {
        "question_id": str(k),
        "image": scene(200, 100),
        "question": "Please carefully observe the area circled in the image and come up with a caption for the area.",
        "answer": expressions,
        "segmentation": [0.0] * 8,
        "bbox": bbox,
        "iscrowd": 0,
        "file_name": f"COCO_train2014_{k:012d}.jpg",
    }


def test_refcoco_suite_asks_each_expression_and_scores_glm_boxes(scripted, tmp_path):
    rows = [
        refcoco_row(7, [20, 10, 100, 50], ["man on left", "guy in red"]),
        refcoco_row(9, [0, 0, 200, 100], ["all"]),
    ]
    suite = local(
        "refcoco",
        write_hub_copy(tmp_path / "refcoco", "refcoco", "val", rows),
        **{"data.split": "validation"},
    )
    samples = load_samples(suite).samples
    assert [(s.id, s.kept["expression"]) for s in samples] == [
        ("7-0", "man on left"),
        ("7-1", "guy in red"),
        ("9-0", "all"),
    ]
    assert samples[1].question == (
        "Please provide the bounding box coordinate of the region this sentence describes: guy in red"
    )
    # [20, 10, 100, 50] px on a 200 x 100 image: corners (20, 10)-(120, 60) -> 0-1000: [100, 100, 600, 600]
    assert json.loads(samples[0].references[0]) == [100.0, 100.0, 600.0, 600.0]
    glm = "<|begin_of_box|>[[100,100,500,600]]<|end_of_box|>"  # 400x500 of a 500x500 box: IoU 0.8
    scores = metric_results(suite, glm, samples[0].references, {})
    assert scores == {"box_accuracy": 1.0, "box_iou": pytest.approx(0.8)}
    script(scripted, "left")
    run = evaluate(suite, scripted, **QUIET)
    assert run.samples["box_accuracy"].tolist() == [0.0, 0.0, 0.0]  # no box in the answer
    assert run.samples["extracted"].tolist() == [None, None, None]


def test_a_shipped_suite_runs_by_name_from_the_command_line(tmp_path):
    from glmlab.cli.root import app

    result = CliRunner().invoke(app, ["eval", "chartqa", "--check"])
    assert result.exit_code == 0 and "valid suite 'chartqa' (relaxed_accuracy)" in result.output
    missing = CliRunner().invoke(app, ["eval", "chartqb", "--check"])
    assert missing.exit_code != 0 and "suite 'chartqb': no eval/chartqb.yaml" in missing.output
