"""evaluate(): every metric through the harness, answer extraction end to end, resume, latency, batching.

Exact scores need exact answers, and a random model's answers are noise. So besides the shared tiny
model (`vlm`), these tests use a *scripted* tiny model: the same real Glm4v checkpoint with its
decoder layers zeroed, so the next token depends only on the current one, and its embedding and
output rows set so that greedy decoding writes a chosen text after the prompt, whatever the image
and question. It runs the real prompt, processor, generate and decode path (no mock): only its
weights are hand-set.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from support import (
    EVAL_DIR,
    QUIET,
    RUN_FOLDER_FILES,
    docvqa_rows,
    scene,
    script,
    shapes_suite,
    write_docvqa_copy,
)

from glmlab.data import generate, save_records
from glmlab.errors import ConfigError, InputError
from glmlab.eval import EvalRun, Suite, evaluate


def summary_values(run: EvalRun) -> dict[str, dict]:
    values: dict[str, dict] = {}
    for row in run.summary.itertuples():
        values.setdefault(row.metric, {})[row.statistic] = row.value
    return values


# ---- metrics and extraction through the harness ---------------------------------------------------


@pytest.mark.parametrize("thinking", [False, None], ids=["no-thinking", "thinking"])
def test_exact_match_with_and_without_thinking_tags_end_to_end(scripted, thinking):
    script(scripted, "<think>o</think>red" if thinking is None else "red")
    suite = shapes_suite(**{"prompt.thinking": thinking})
    run = evaluate(suite, scripted, limit=12, **QUIET)
    records = generate("shapes", 12, seed=1000)
    expected = sum(record["answer"] == "red" for record in records) / 12
    assert expected > 0
    assert run.samples["prediction"].tolist() == ["red"] * 12
    assert run.samples["raw"].iloc[0] == ("<think>o</think>red" if thinking is None else "red")
    assert run.samples["thinking"].iloc[0] == ("o" if thinking is None else None)
    assert run.samples["completion_tokens"].tolist() == [7 if thinking is None else 4] * 12
    assert summary_values(run) == {"exact_match": {"mean": expected}}
    assert run.samples["exact_match"].tolist() == [float(r["answer"] == "red") for r in records]


def test_field_f1_scores_the_json_object_extracted_from_the_answer(scripted, tmp_path):
    script(scripted, "{tax:7}")  # json5: unquoted key, distinct tokens
    records = [
        {"id": f"inv-{k}", "image": scene(), "question": "Fields as JSON?", "answer": json.dumps(answer)}
        for k, answer in enumerate([{"tax": "7", "total": "9.5"}, {"tax": "7.00"}, {"total": "1"}])
    ]
    save_records(records, tmp_path / "invoices")
    suite = Suite.from_yaml(
        EVAL_DIR / "invoices-en.yaml",
        overrides={"data": {"folder": str(tmp_path / "invoices")}, "keep_fields": []},
    )
    run = evaluate(suite, scripted, **QUIET)
    assert run.samples["extracted"].tolist() == [{"tax": 7}] * 3
    values = summary_values(run)["field_f1"]
    # tax: TP, TP (amounts: 7 == 7.00), FP; total: FN, -, FN
    assert (values["precision"], values["recall"], values["samples"], values["unparsed"]) == (
        2 / 3,
        0.5,
        3,
        0,
    )
    assert values["tax/precision"] == 2 / 3 and values["total/recall"] == 0.0
    assert run.samples["field_f1"].tolist() == [2 / 3, 1.0, 0.0]


def test_medical_vqa_takes_its_question_type_from_each_sample(scripted):
    script(scripted, "yes")
    overrides = {"extract": "yes_no", "data.options.size": 128}
    suite = Suite.from_yaml(EVAL_DIR / "medical-phantoms.yaml", overrides=overrides)
    run = evaluate(suite, scripted, limit=10, **QUIET)
    records = generate("medical-phantoms", 10, seed=1000, size=128, max_lesions=3)
    # "yes" is right on the one closed question answered "yes" of six, and recalls no open answer's token
    closed = [r["answer"] for r in records if r["metadata"]["answer_type"] == "closed"]
    assert (len(closed), closed.count("yes")) == (6, 1)
    assert summary_values(run)["medical_vqa"] == {
        "closed_count": 6,
        "closed_accuracy": 1 / 6,
        "open_count": 4,
        "open_recall": 0.0,
    }
    assert run.samples["extracted"].tolist() == ["yes"] * 10
    assert run.samples["answer_type"].tolist() == [r["metadata"]["answer_type"] for r in records]
    assert set(run.breakdown("question_type")["question_type"]) == {
        "presence",
        "count",
        "side",
        "size",
        "findings",
    }


def test_anls_vqa_accuracy_and_relaxed_accuracy_on_the_docvqa_layout(scripted, tmp_path):
    script(scripted, "42")
    folder = write_docvqa_copy(tmp_path / "docvqa", docvqa_rows([["42"], ["43", "42"], ["44.5"]]))
    suite = Suite.from_yaml(
        EVAL_DIR / "docvqa.yaml",
        overrides={
            "data.hub": str(folder),
            "data.config": None,
            "metrics": [
                "anls",
                "vqa_accuracy",
                "vqa_accuracy_lenient",
                {"name": "relaxed_accuracy", "extract": "number"},
            ],
        },
    )
    run = evaluate(suite, scripted, **QUIET)
    assert run.samples["anls"].tolist() == [1.0, 1.0, 0.0]
    # the official VQAv2 formula always divides by 3: one or two references cannot reach 1
    assert run.samples["vqa_accuracy"].tolist() == [0.0, pytest.approx(1 / 6), 0.0]
    assert run.samples["vqa_accuracy_lenient"].tolist() == [1.0, 0.5, 0.0]
    assert run.samples["relaxed_accuracy"].tolist() == [1.0, 1.0, 0.0]  # 42 vs 44.5 is 5.6 % off
    values = summary_values(run)
    assert (values["anls"]["mean"], values["vqa_accuracy_lenient"]["mean"]) == (2 / 3, 0.5)


def test_summary_has_a_95_percent_bootstrap_interval_around_each_value(scripted):
    script(scripted, "red")
    run = evaluate(shapes_suite(), scripted, limit=12, **QUIET)
    row = run.summary.iloc[0]
    assert row.ci_low <= row.value <= row.ci_high and row.ci_low < row.ci_high and row.n == 12


# ---- resume ---------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def stop_after(count: int):
    seen = []

    def callback(row: dict) -> None:
        seen.append(row["id"])
        if len(seen) == count:
            raise Interrupt(f"stopped after {count} samples")

    return callback


def file_ids(run_dir) -> list[str]:
    lines = (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["id"] for line in lines]


def test_interrupted_run_resumes_and_matches_an_uninterrupted_run(scripted, tmp_path):
    script(scripted, "red")
    suite = shapes_suite()
    whole = evaluate(suite, scripted, limit=9, run_dir=tmp_path / "whole", **QUIET)
    with pytest.raises(Interrupt):
        evaluate(suite, scripted, limit=9, run_dir=tmp_path / "cut", on_sample=stop_after(4), **QUIET)
    assert len(file_ids(tmp_path / "cut")) == 4
    redone = []
    resumed = evaluate(
        suite,
        scripted,
        limit=9,
        run_dir=tmp_path / "cut",
        on_sample=lambda r: redone.append(r["id"]),
        **QUIET,
    )
    ids = file_ids(tmp_path / "cut")
    assert len(ids) == len(set(ids)) == 9 and len(redone) == 5
    pd.testing.assert_frame_equal(resumed.summary, whole.summary)
    assert resumed.samples["session"].tolist() == [1] * 4 + [2] * 5
    columns = ["id", "raw", "prediction", "exact_match", "references"]
    pd.testing.assert_frame_equal(resumed.samples[columns], whole.samples[columns])


def test_a_larger_limit_continues_a_run_without_redoing_its_samples(vlm, tmp_path):
    suite = shapes_suite(**{"generation.max_new_tokens": 3})
    first = evaluate(suite, vlm, limit=2, run_dir=tmp_path, **QUIET)
    more = evaluate(suite, vlm, limit=4, run_dir=tmp_path, **QUIET)
    assert file_ids(tmp_path) == more.samples["id"].tolist() and len(more.samples) == 4
    assert more.samples["raw"].tolist()[:2] == first.samples["raw"].tolist()


def test_an_incomplete_last_line_is_redone_on_resume(scripted, tmp_path):
    script(scripted, "red")
    evaluate(shapes_suite(), scripted, limit=3, run_dir=tmp_path, **QUIET)
    lines = (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40], encoding="utf-8")
    run = evaluate(shapes_suite(), scripted, limit=3, run_dir=tmp_path, **QUIET)
    assert file_ids(tmp_path) == run.samples["id"].tolist() and run.samples["session"].tolist() == [1, 1, 2]


def test_a_last_row_cut_inside_a_multibyte_character_is_truncated_away_and_redone(scripted, tmp_path):
    script(scripted, "red")
    suite = shapes_suite(**{"prompt.template": "{question} 请用一个词回答。"})
    whole = evaluate(suite, scripted, limit=3, **QUIET)
    evaluate(suite, scripted, limit=3, run_dir=tmp_path, **QUIET)
    path = tmp_path / "samples.jsonl"
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = data.index("请".encode(), last) + 1  # inside the 3-byte character
    path.write_bytes(data[:cut])
    inode = path.stat().st_ino
    with pytest.raises(UnicodeDecodeError):
        data[:cut].decode("utf-8")
    run = evaluate(suite, scripted, limit=3, run_dir=tmp_path, **QUIET)
    assert path.stat().st_ino == inode  # cut in place, not rewritten
    assert path.read_bytes()[:last] == data[:last] and file_ids(tmp_path) == run.samples["id"].tolist()
    assert (
        run.samples["session"].tolist() == [1, 1, 2] and run.samples["question"].str.endswith("回答。").all()
    )
    columns = ["id", "question", "raw", "exact_match"]
    pd.testing.assert_frame_equal(run.samples[columns], whole.samples[columns])
    assert EvalRun.load(tmp_path).samples[columns].equals(whole.samples[columns])


def test_a_complete_row_that_lost_only_its_newline_is_redone_not_kept_twice(scripted, tmp_path):
    script(scripted, "red")
    evaluate(shapes_suite(), scripted, limit=2, run_dir=tmp_path, **QUIET)
    path = tmp_path / "samples.jsonl"
    path.write_bytes(path.read_bytes()[:-1])
    run = evaluate(shapes_suite(), scripted, limit=2, run_dir=tmp_path, **QUIET)
    assert file_ids(tmp_path) == run.samples["id"].tolist() and run.samples["session"].tolist() == [1, 2]


def test_a_corrupt_row_in_the_middle_or_a_corrupt_config_is_an_input_error(scripted, tmp_path):
    script(scripted, "red")
    evaluate(shapes_suite(), scripted, limit=2, run_dir=tmp_path, **QUIET)
    lines = (tmp_path / "samples.jsonl").read_bytes().split(b"\n")
    (tmp_path / "samples.jsonl").write_bytes(b"\n".join([lines[0][:-3], *lines[1:]]))
    with pytest.raises(InputError, match="samples.jsonl line 1: not valid JSON"):
        EvalRun.load(tmp_path)
    (tmp_path / "config.json").write_text('{"suite": {"na')
    with pytest.raises(InputError, match="config.json: not valid JSON"):
        EvalRun.load(tmp_path)


def test_state_files_are_replaced_whole_and_leave_no_temporary_files(scripted, tmp_path):
    script(scripted, "red")
    run = evaluate(shapes_suite(), scripted, limit=2, run_dir=tmp_path, **QUIET)
    copy = run.save(tmp_path / "copy")
    names = sorted(path.name for path in copy.iterdir())
    assert names == RUN_FOLDER_FILES
    assert not list(tmp_path.rglob("*.tmp"))
    pd.testing.assert_frame_equal(EvalRun.load(copy).samples, EvalRun.load(tmp_path).samples)


def test_resuming_with_a_changed_suite_is_refused(scripted, tmp_path):
    script(scripted, "red")
    evaluate(shapes_suite(), scripted, limit=1, run_dir=tmp_path, **QUIET)
    with pytest.raises(ConfigError, match="holds a run with a different suite"):
        evaluate(
            shapes_suite(**{"generation.max_new_tokens": 5}), scripted, limit=1, run_dir=tmp_path, **QUIET
        )
    with pytest.raises(ConfigError, match="already holds samples of a run. Pass resume=True"):
        evaluate(shapes_suite(), scripted, limit=1, run_dir=tmp_path, resume=False, **QUIET)


def test_bad_generation_value_fails_before_any_model_call(vlm):
    with pytest.raises(ConfigError, match=r"generation\.temperature=-1: must be >= 0"):
        evaluate(shapes_suite(**{"generation.temperature": -1}), vlm, limit=1, **QUIET)


# ---- latency and batching -------------------------------------------------------------------------


def test_latency_columns_are_present_positive_and_consistent(vlm):
    run = evaluate(shapes_suite(), vlm, limit=3, batch_size=1, **QUIET)
    samples = run.samples
    assert (samples["ttft_s"] > 0).all() and (samples["ttft_s"] <= samples["latency_s"]).all()
    assert samples["completion_tokens"].tolist() == [8, 8, 8]
    tpot = (samples["latency_s"] - samples["ttft_s"]) / 7
    np.testing.assert_allclose(samples["tpot_s"], tpot)
    np.testing.assert_allclose(samples["decode_tokens_per_s"], 1 / tpot)
    assert (samples["image_tokens"] == 16).all() and (samples["prompt_tokens"] > 16).all()
    assert (samples["peak_memory_bytes"] > 0).all() and (samples["finished_at"] > samples["started_at"]).all()
    latency = run.latency.set_index("measure")
    assert list(latency.columns) == ["mean", "p50", "p95", "p99", "n"]
    assert latency.loc["ttft_s", "p50"] <= latency.loc["ttft_s", "p99"]
    assert run.throughput["samples_per_s"] > 0 and run.throughput["output_tokens_per_s"] > 0
    assert run.config["settings"]["memory"] == "process_peak_rss"


def test_local_models_are_evaluated_in_batches_of_8_by_default(vlm):
    run = evaluate(shapes_suite(**{"generation.max_new_tokens": 2}), vlm, limit=10, **QUIET)
    assert run.samples["batch_size"].tolist() == [8] * 8 + [2] * 2
    assert run.config["settings"]["batch_size"] == 8


def test_batched_run_answers_like_one_by_one_and_shares_the_batch_timing(vlm):
    suite = shapes_suite(**{"generation.max_new_tokens": 4})
    single = evaluate(suite, vlm, limit=4, batch_size=1, **QUIET)
    batched = evaluate(suite, vlm, limit=4, batch_size=2, **QUIET)
    assert batched.samples["raw"].tolist() == single.samples["raw"].tolist()
    assert batched.samples["batch_size"].tolist() == [2, 2, 2, 2]
    assert batched.samples["ttft_s"].iloc[0] == batched.samples["ttft_s"].iloc[1]
    assert batched.samples["latency_s"].iloc[2] == batched.samples["latency_s"].iloc[3]
    assert batched.config["settings"]["batch_size"] == 2


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_sample_the_model_cannot_take_is_recorded_as_failed_and_scores_zero(scripted, tmp_path, batch_size):
    from PIL import Image

    script(scripted, "red")
    records = [
        {"id": "ok", "image": scene(), "question": "Colour?", "answer": "red"},
        {"id": "sliver", "image": Image.new("RGB", (2000, 5), "red"), "question": "Colour?", "answer": "red"},
    ]
    save_records(records, tmp_path / "data")
    suite = shapes_suite(data={"folder": str(tmp_path / "data")}, keep_fields=[])
    run = evaluate(suite, scripted, batch_size=batch_size, **QUIET)
    assert run.samples["exact_match"].tolist() == [1.0, 0.0] and run.failed == 1
    assert run.samples["error"][1].endswith("absolute aspect ratio must be smaller than 200, got 400.0")
    assert run.samples["finish_reason"].tolist() == ["stop", "error"]


def test_evaluating_an_adapter_name_that_is_not_loaded_is_a_config_error(vlm):
    with pytest.raises(ConfigError, match="adapter='shapes': not loaded on this model"):
        evaluate(shapes_suite(), vlm, limit=1, adapter="shapes", **QUIET)


# ---- server ---------------------------------------------------------------------------------------


def test_a_server_and_the_local_model_give_the_same_greedy_predictions(vlm):
    from glmlab.client import Client
    from glmlab.serve.runner import start

    suite = shapes_suite(**{"generation.max_new_tokens": 6})
    local = evaluate(suite, vlm, limit=4, **QUIET)
    with start(vlm) as server:
        remote = evaluate(suite, Client(server.url), limit=4, concurrency=2, **QUIET)
    assert remote.samples["raw"].tolist() == local.samples["raw"].tolist()
    assert remote.samples["exact_match"].tolist() == local.samples["exact_match"].tolist()
    assert remote.samples["completion_tokens"].tolist() == local.samples["completion_tokens"].tolist()
    assert (remote.samples["ttft_s"] > 0).all() and (
        remote.samples["ttft_s"] <= remote.samples["latency_s"]
    ).all()
    assert remote.samples["peak_memory_bytes"].isna().all()  # a server's memory is not this process's
    assert (remote.config["model"]["kind"], remote.config["settings"]["concurrency"]) == ("server", 2)


def test_batch_timing_gives_every_answer_the_batch_ttft_and_the_calls_latency():
    import math

    from glmlab.answer import Answer, Timing, Usage
    from glmlab.eval.latency import batch_timing

    def answer(ttft: float | None, total: float, tokens: int) -> Answer:
        return Answer(text="x", usage=Usage(completion_tokens=tokens), timing=Timing(ttft, total))

    # the call ran 10 s, generate its last 8 s (2 s of preprocessing); the rows' first tokens came in
    # the same step (1.0 s into generate), the rows ended 5 s and 8 s into it
    answers = [answer(1.0, 5.0, 5), answer(1.0005, 8.0, 9), answer(None, 0.0, 0)]
    first, second, failed = batch_timing(answers, start=100.0, end=110.0)
    assert first["ttft_s"] == second["ttft_s"] == 3.0  # 1.0 s into generate + the 2 s before it
    assert first["latency_s"] == second["latency_s"] == failed["latency_s"] == 10.0
    assert (first["tpot_s"], second["tpot_s"]) == (7.0 / 4, 7.0 / 8)
    assert math.isnan(failed["ttft_s"]) and math.isnan(failed["tpot_s"])
