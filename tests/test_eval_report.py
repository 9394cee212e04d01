"""Eval results: the run folder round trip, compare, plots, the HTML report, the CLI and the demo stage."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from matplotlib.figure import Figure
from support import EVAL_DIR, QUIET, RUN_FOLDER_FILES, script, shapes_suite
from typer.testing import CliRunner

from glmlab.data import generate
from glmlab.eval import EvalRun, compare, evaluate, plot_comparison, report
from glmlab.eval.suite import Suite

LIMIT = 12


@pytest.fixture(scope="module")
def red_and_blue(scripted):  # noqa: F811
    """Two runs of the shapes suite on the same samples: one always answers red, one blue."""
    script(scripted, "red")
    red = evaluate(shapes_suite(), scripted, limit=LIMIT, name="red", **QUIET)
    script(scripted, "blue")
    blue = evaluate(shapes_suite(), scripted, limit=LIMIT, name="blue", **QUIET)
    return red, blue


def share(colour: str, count: int = LIMIT) -> float:
    return sum(record["answer"] == colour for record in generate("shapes", count, seed=1000)) / count


# ---- run folder -----------------------------------------------------------------------------------


def assert_same_run(loaded: EvalRun, run: EvalRun) -> None:
    pd.testing.assert_frame_equal(loaded.samples, run.samples)
    pd.testing.assert_frame_equal(loaded.summary, run.summary)
    assert loaded.config == json.loads(json.dumps(run.config))
    assert loaded.thumbnails == run.thumbnails


def test_a_run_in_memory_saves_and_loads_back_identically(red_and_blue, tmp_path):
    red, _ = red_and_blue
    folder = red.save(tmp_path / "red")
    assert sorted(path.name for path in folder.iterdir()) == RUN_FOLDER_FILES
    assert_same_run(EvalRun.load(folder), red)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"] == [
        {
            "metric": "exact_match",
            "statistic": "mean",
            "value": share("red"),
            "ci_low": red.summary.ci_low[0],
            "ci_high": red.summary.ci_high[0],
            "n": LIMIT,
        }
    ]
    assert [row["measure"] for row in summary["latency"]][:2] == ["ttft_s", "latency_s"]


def test_a_run_written_while_evaluating_loads_back_identically(scripted, tmp_path):  # noqa: F811
    script(scripted, "red")
    run = evaluate(shapes_suite(), scripted, limit=4, run_dir=tmp_path, **QUIET)
    assert_same_run(EvalRun.load(tmp_path), run)


def test_config_records_suite_model_settings_versions_and_commit(red_and_blue):
    config = red_and_blue[0].config
    assert config["suite"] == Suite.from_yaml(EVAL_DIR / "shapes.yaml").to_dict()
    assert config["model"]["kind"] == "local" and config["model"]["adapter"] is None
    assert config["settings"]["limit"] == LIMIT and config["settings"]["generation"]["temperature"] == 0
    assert {"python", "torch", "transformers", "pandas"} <= set(config["versions"])
    assert re.fullmatch(r"[0-9a-f]{40}", config["git"]["commit"])


def test_thumbnails_are_kept_for_wrong_answers_only(red_and_blue):
    red, _ = red_and_blue
    wrong = red.samples["exact_match"] < 1
    assert red.samples["thumbnail"].notna().tolist() == wrong.tolist()
    assert all(data.startswith(b"\x89PNG") for data in red.thumbnails.values())


# ---- compare and plots ----------------------------------------------------------------------------


def test_compare_puts_runs_side_by_side_with_delta_and_paired_pvalue(red_and_blue):
    red, blue = red_and_blue
    table = compare([red, blue])
    assert list(table.columns) == ["metric", "statistic", "n", "red", "blue", "delta blue", "p blue"]
    row = table.iloc[0]
    assert (row["red"], row["blue"], row["n"]) == (share("red"), share("blue"), LIMIT)
    assert row["delta blue"] == share("blue") - share("red")
    from glmlab.eval.stats import paired_bootstrap_pvalue

    red_scores, blue_scores = (run.samples.sort_values("id")["exact_match"].tolist() for run in (red, blue))
    assert row["p blue"] == paired_bootstrap_pvalue(blue_scores, red_scores, n_resamples=2000, seed=0)


def test_compare_pairs_on_shared_sample_ids_only(red_and_blue, scripted, caplog):  # noqa: F811
    red, _ = red_and_blue
    script(scripted, "red")
    shorter = evaluate(shapes_suite(), scripted, limit=6, name="red again", **QUIET)
    row = compare([red, shorter]).iloc[0]
    assert "read different data" not in caplog.text
    other_images = evaluate(shapes_suite(**{"data.options.size": 84}), scripted, limit=6, **QUIET)
    compare([red, other_images])
    assert "read different data" in caplog.text
    assert (row["n"], row["red"], row["red again"], row["delta red again"], row["p red again"]) == (
        6,
        share("red", 6),
        share("red", 6),
        0.0,
        1.0,
    )


def test_compare_tests_every_statistic_of_a_structured_metric(scripted):  # noqa: F811
    suite = Suite.from_yaml(EVAL_DIR / "medical-phantoms.yaml", overrides={"data.options.size": 128})
    runs = []
    for answer in ("yes", "no"):
        script(scripted, answer)
        runs.append(evaluate(suite, scripted, limit=10, name=answer, **QUIET))
    table = compare(runs, n_resamples=200).set_index("statistic")
    assert list(table.index) == ["closed_count", "closed_accuracy", "open_count", "open_recall"]
    assert table["p no"].isna().tolist() == [True, False, True, False]
    assert table.loc["closed_count", "yes"] == 6 and table.loc["open_count", "no"] == 4


def test_plots_return_figures_with_accuracy_and_latency_axes(red_and_blue):
    red, blue = red_and_blue
    for figure in (red.plot(), plot_comparison([red, blue])):
        assert isinstance(figure, Figure)
        assert [axes.get_title() for axes in figure.axes] == ["accuracy", "latency per sample"]


# ---- HTML report ----------------------------------------------------------------------------------


def test_report_is_self_contained_and_escapes_model_text(scripted, red_and_blue, tmp_path):  # noqa: F811
    script(scripted, "<script>")
    hostile = evaluate(shapes_suite(), scripted, limit=4, name="<i>hostile</i>", **QUIET)
    path = report([red_and_blue[0], hostile], tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page and "&lt;i&gt;hostile&lt;/i&gt;" in page
    assert re.findall(r"(?:src|href)=['\"](?!data:)", page) == []  # nothing is fetched from elsewhere
    wrong = round(LIMIT * (1 - share("red"))) + 4
    assert (
        page.count("src='data:image/png;base64,") == 3 + wrong
    )  # 3 figures and a thumbnail per wrong answer
    assert "<h2>Comparison</h2>" in page and "p &lt;i&gt;hostile&lt;/i&gt;" in page


# ---- CLI ------------------------------------------------------------------------------------------


def test_cli_eval_prints_the_summary_and_writes_the_run_folder(tmp_path):
    from glmlab.cli import app

    arguments = [
        "eval",
        str(EVAL_DIR / "shapes.yaml"),
        "--model",
        "tiny",
        "--limit",
        "2",
        "--run-dir",
        str(tmp_path),
        "--set",
        "generation.max_new_tokens=2",
        "--report",
        str(tmp_path / "r.html"),
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "tiny on shapes: 2 samples" in result.output and "exact_match" in result.output
    assert "ttft_s" in result.output and f"run folder: {tmp_path}" in result.output
    run = EvalRun.load(tmp_path)
    assert len(run.samples) == 2 and run.suite.generation["max_new_tokens"] == 2
    assert (tmp_path / "r.html").is_file()


def test_cli_check_names_every_bad_field_without_loading_a_model():
    from glmlab.cli import app

    result = CliRunner().invoke(
        app, ["eval", str(EVAL_DIR / "shapes.yaml"), "--check", "--set", "data.nn=1", "--set", "extract=js"]
    )
    assert result.exit_code == 2
    assert "2 invalid field(s)" in result.output and "data.nn: unknown field" in result.output
    ok = CliRunner().invoke(app, ["eval", str(EVAL_DIR / "docvqa.yaml"), "--check"])
    assert ok.exit_code == 0 and "valid suite 'docvqa' (anls)" in ok.output


def test_cli_flags_cover_every_evaluate_setting():
    from glmlab.cli.eval import FRONT_ONLY_FLAGS, eval_command

    flags = set(inspect.signature(eval_command).parameters) - set(FRONT_ONLY_FLAGS)
    library_only = {"suite", "model", "name", "on_sample", "progress", "max_thumbnails"}
    assert flags == set(inspect.signature(evaluate).parameters) - library_only
    library = inspect.signature(evaluate).parameters
    for flag in flags - {"adapter", "limit", "run_dir"}:  # these three: CLI paths / None
        assert inspect.signature(eval_command).parameters[flag].default.default == library[flag].default, flag


# ---- demo and layering ----------------------------------------------------------------------------


def test_demo_eval_stage_evaluates_the_base_and_says_when_no_adapter_was_trained(vlm, tmp_path, monkeypatch):
    from glmlab import demo

    monkeypatch.setattr(demo, "EVAL_LIMIT", 3)
    lines: list[str] = []
    ctx = demo.DemoContext(model="tiny", work_dir=tmp_path, echo=lines.append, vlm=vlm)
    demo.stage_eval(ctx)
    assert lines[0].startswith("no trained adapter in this demo run")
    assert lines[1].startswith("base: exact_match 0.000") and lines[-1].startswith("report: ")
    assert [run.name for run in ctx.results["eval"]] == ["base"]


def test_demo_eval_stage_breaks_the_adapter_score_down_by_question_type(vlm, adapters, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from glmlab import demo

    monkeypatch.setattr(demo, "EVAL_LIMIT", 6)
    lines: list[str] = []
    ctx = demo.DemoContext(
        model="tiny",
        work_dir=tmp_path,
        echo=lines.append,
        vlm=vlm,
        results={"train": SimpleNamespace(adapter_dir=adapters["alpha"])},
    )
    try:
        demo.stage_eval(ctx)
    finally:
        vlm.unload_adapter("demo-shapes")
    table = demo.by_question_type(ctx.results["eval"])
    assert list(table.columns) == ["question_type", "base", "adapter", "n"]
    assert sorted(table["question_type"]) == ["color", "count", "shape"] and table["n"].sum() == 6
    runs = {run.name: run for run in ctx.results["eval"]}
    colour = runs["adapter"].samples.query("question_type == 'color'")["exact_match"].mean()
    assert table.set_index("question_type").loc["color", "adapter"] == colour
    assert any(line.startswith("the suite mixes colour, shape and count questions") for line in lines)


def test_scoring_a_saved_run_never_imports_torch(red_and_blue, tmp_path):
    folder = red_and_blue[0].save(tmp_path / "run", figures=False)
    code = (
        "import sys, glmlab.eval as e; run = e.EvalRun.load(sys.argv[1]); run.summary; run.latency; "
        "e.compare([run, run]); e.report(run, sys.argv[1] + '/r.html'); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
