"""`glmlab serve` settings and CLI, and the `vllm serve` command it builds with --engine vllm."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields

import pytest
from typer.testing import CliRunner

from glmlab.cli import app
from glmlab.errors import ConfigError
from glmlab.serve import ServerSettings
from glmlab.serve.engines.vllm import INSTALL_HINT, run_vllm, vllm_command
from glmlab.serve.settings import parse_adapter_args


@pytest.fixture(scope="module")
def exported(adapters, tmp_path_factory):
    """vLLM-ready copies: alpha (rank 4) and beta (rank 8)."""
    from glmlab.export import export_vllm

    root = tmp_path_factory.mktemp("vllm-ready")
    return {name: export_vllm(adapters[name], root / name).path for name in ("alpha", "beta")}


def test_vllm_command_serves_each_adapter_with_the_rank_that_fits(exported):
    settings = ServerSettings(
        model="zai-org/GLM-4.6V-Flash",
        adapters={name: str(path) for name, path in exported.items()},
        port=8000,
        api_key="secret-key-1",
    )
    command = vllm_command(settings, ["--max-model-len", "32768"])
    assert command.argv == [
        "vllm",
        "serve",
        "zai-org/GLM-4.6V-Flash",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--reasoning-parser",
        "glm45",
        "--tool-call-parser",
        "glm45",
        "--enable-auto-tool-choice",
        "--enable-lora",
        "--max-lora-rank",
        "8",
        "--max-loras",
        "2",
        "--lora-modules",
        f"alpha={exported['alpha']}",
        f"beta={exported['beta']}",
        "--max-model-len",
        "32768",
    ]
    assert command.env == {"VLLM_API_KEY": "secret-key-1"}  # never on the command line
    assert command.shell().startswith("VLLM_API_KEY=<key> vllm serve ")


def test_vllm_command_options_follow_the_settings():
    settings = ServerSettings(
        model="zai-org/GLM-4.6V-Flash",
        adapter_roots=["/srv/adapters"],
        served_model_name="glm",
        max_image_pixels=1024 * 1024,
        quantize="4bit",
        dtype="bfloat16",
    )
    argv = vllm_command(settings).argv
    assert argv[argv.index("--served-model-name") + 1] == "glm"
    assert argv[argv.index("--max-lora-rank") + 1] == "16" and "--lora-modules" not in argv
    assert (
        argv[argv.index("--mm-processor-kwargs") + 1]
        == '{"size": {"shortest_edge": 12544, "longest_edge": 2097152}}'
    )
    assert (
        argv[argv.index("--quantization") + 1] == "bitsandbytes"
        and argv[argv.index("--dtype") + 1] == "bfloat16"
    )
    assert vllm_command(settings).env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def test_vllm_command_refuses_an_adapter_with_vision_modules(adapters):
    settings = ServerSettings(model="zai-org/GLM-4.6V-Flash", adapters={"seeing": str(adapters["seeing"])})
    with pytest.raises(
        ConfigError,
        match=r"also adapts 2 vision-tower modules, which vLLM ignores; export it first: "
        r"glmlab export .* --format vllm",
    ):
        vllm_command(settings)


def test_dry_run_prints_the_vllm_command(exported):
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--engine",
            "vllm",
            "--dry-run",
            "--model",
            "zai-org/GLM-4.6V-Flash",
            "--adapter",
            f"alpha={exported['alpha']}",
            "--port",
            "8000",
            "--",
            "--max-model-len",
            "8192",
        ],
    )
    assert result.exit_code == 0, result.output
    command = result.output.splitlines()[0]
    assert (
        shlex.split(command)
        == vllm_command(
            ServerSettings(
                model="zai-org/GLM-4.6V-Flash", port=8000, adapters={"alpha": str(exported["alpha"])}
            ),
            ["--max-model-len", "8192"],
        ).argv
    )
    assert "--lora-modules alpha=" in command and "--max-lora-rank 8" in command


def test_running_vllm_where_it_is_not_installed_explains_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="vLLM is not installed in this environment"):
        run_vllm(ServerSettings(model="zai-org/GLM-4.6V-Flash"))
    result = CliRunner().invoke(app, ["serve", "--engine", "vllm", "--model", "zai-org/GLM-4.6V-Flash"])
    assert result.exit_code == 2 and INSTALL_HINT in result.output and "pip install -U vllm" in INSTALL_HINT


def test_every_setting_is_a_cli_option_with_its_help():
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    for item in fields(ServerSettings):
        flag = item.metadata.get("flag", "--" + item.name.replace("_", "-"))
        assert flag in result.output, flag
    assert (
        "--max-request-bytes" in result.output
        and "--timeout" in result.output
        and "--dry-run" in result.output
    )


def test_glmlab_engine_dry_run_and_bad_values_name_the_field():
    dry = CliRunner().invoke(app, ["serve", "--model", "tiny", "--port", "9000", "--dry-run"])
    assert dry.exit_code == 0 and "http://127.0.0.1:9000/v1" in dry.output
    bad = CliRunner().invoke(app, ["serve", "--max-concurrency", "0", "--dry-run"])
    assert bad.exit_code == 2 and "ServerSettings.max_concurrency=0: must be at least 1" in bad.output


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_image_pixels", 100, "must be at least 784 (or unset)"),
        ("dtype", "fp8", "must be auto | bfloat16 | float16 | float32"),
        ("quantize", "3bit", "must be unset, 8bit or 4bit"),
    ],
)
def test_server_settings_refuse_a_bad_model_setting_at_start(field, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"ServerSettings.{field}={value!r}: {expected}")):
        ServerSettings(model="tiny", **{field: value})


def test_settings_parse_adapter_args_and_read_the_key_from_the_environment(monkeypatch, tmp_path):
    assert parse_adapter_args(["a=/x/a", str(tmp_path / "b")]) == {"a": "/x/a", "b": str(tmp_path / "b")}
    with pytest.raises(ConfigError, match="adapter name 'bad name'"):
        parse_adapter_args(["bad name=/x"])
    monkeypatch.setenv("GLMLAB_API_KEY", "from-the-environment")
    assert ServerSettings(model="tiny").api_key == "from-the-environment"
    roots = ServerSettings(model="tiny", adapters={"a": str(tmp_path / "runs" / "a")}).allowed_adapter_roots()
    assert roots == [(tmp_path / "runs").resolve()]


def test_settings_vllm_cannot_enforce_are_named_in_a_warning(caplog):
    vllm_command(ServerSettings(model="zai-org/GLM-4.6V-Flash"))
    assert "does not enforce" not in caplog.text
    vllm_command(ServerSettings(model="zai-org/GLM-4.6V-Flash", timeout_s=30, max_concurrency=2))
    assert "vLLM does not enforce glmlab's max_concurrency, timeout_s" in caplog.text
