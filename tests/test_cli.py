import json

import pytest
from typer.testing import CliRunner

from glmlab.cli import app

runner = CliRunner()


VERBS = ("ask", "demo", "train", "eval", "serve", "export")


def test_every_verb_is_registered_and_has_help():
    assert sorted(command.name or command.callback.__name__ for command in app.registered_commands) == sorted(
        VERBS
    )
    for verb in VERBS:
        result = runner.invoke(app, [verb, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, verb


def test_ask_json_prints_the_whole_answer(tiny_path, tmp_path, red_image):
    path = tmp_path / "red.png"
    red_image.save(path)
    result = runner.invoke(
        app,
        [
            "ask",
            str(path),
            "-q",
            "What colour?",
            "--model",
            "tiny",
            "--json",
            "--temperature",
            "0",
            "--max-new-tokens",
            "5",
            "--no-thinking",
        ],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("{") :])
    assert answer["usage"]["image_tokens"] == 16 and answer["usage"]["completion_tokens"] == 5
    assert answer["timing"]["ttft_s"] > 0 and answer["finish_reason"] == "length"


def test_ask_stream_prints_the_same_text_as_ask(tiny_path, tmp_path, red_image, vlm):
    path = tmp_path / "red.png"
    red_image.save(path)
    args = [
        "ask",
        str(path),
        "-q",
        "Describe",
        "--model",
        "tiny",
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
    ]
    plain, streamed = runner.invoke(app, args), runner.invoke(app, [*args, "--stream"])
    assert plain.exit_code == streamed.exit_code == 0
    expected = vlm.ask(red_image, "Describe", temperature=0, max_new_tokens=6)
    assert plain.output.strip() == expected.text
    assert streamed.output.strip() == expected.raw.strip()


def test_ask_missing_file_is_one_clear_line_and_exit_2(tiny_path):
    result = runner.invoke(app, ["ask", "/no/such/image.png", "-q", "?", "--model", "tiny"])
    assert result.exit_code == 2
    assert "InputError: /no/such/image.png: no such file." in result.output
    assert "Traceback" not in result.output


def test_demo_runs_its_first_stages(tiny_path, tmp_path):
    result = runner.invoke(
        app, ["demo", "--stage", "load", "--stage", "ask", "--stage", "stream", "--work-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "[1/3] load" in result.output and "image_tokens" in result.output and "streamed:" in result.output
    assert "demo finished" in result.output


@pytest.mark.parametrize(
    ("command", "item"),
    [
        (["train", "shapes", "--set", "rank"], "rank"),
        (["eval", "eval/shapes.yaml", "--set", "data.n", "--check"], "data.n"),
    ],
)
def test_a_set_override_without_a_value_is_refused_naming_it(command, item):
    result = runner.invoke(app, command)
    assert result.exit_code == 2 and f"--set {item!r}: expected KEY=VALUE" in result.output
