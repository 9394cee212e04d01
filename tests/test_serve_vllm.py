"""`glmlab serve` settings and CLI, and the `vllm serve` command it builds with --engine vllm."""

from __future__ import annotations

import json
import re
import shlex
import socket
import sys
import textwrap
import time
from dataclasses import fields

import pytest
from typer.testing import CliRunner

from glmlab.cli import app
from glmlab.errors import ConfigError
from glmlab.serve import ServerSettings
from glmlab.serve.engines.vllm import INSTALL_HINT, EngineError, run_vllm, vllm_command
from glmlab.serve.engines.vllm_memory import fitting_context
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
        max_model_len=32768,
        max_images=4,
        max_videos=0,
    )
    command = vllm_command(settings)
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
        "--limit-mm-per-prompt",
        '{"image": 4, "video": 0}',
    ]
    assert command.env == {"VLLM_API_KEY": "secret-key-1"}  # never on the command line
    assert command.shell().startswith("VLLM_API_KEY=<key> vllm serve ")


def test_vllm_command_without_adapters_lets_vllm_fit_the_context():
    argv = vllm_command(ServerSettings(model="zai-org/GLM-4.6V-Flash", port=8000)).argv
    assert argv[3:] == [
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--reasoning-parser",
        "glm45",
        "--tool-call-parser",
        "glm45",
        "--enable-auto-tool-choice",
        "--max-model-len",
        "auto",
        "--limit-mm-per-prompt",
        '{"image": 32, "video": 1}',
        "--media-io-kwargs",
        '{"video": {"num_frames": 16, "fps": 2.0}}',
    ]
    assert json.loads(argv[-3]) == {"image": 32, "video": 1}  # vLLM's JSON form, as glmlab's limits
    assert json.loads(argv[-1]) == {"video": {"num_frames": 16, "fps": 2.0}}  # glmlab's sampling


def test_options_after_the_separator_replace_glmlab_s_own():
    argv = vllm_command(
        ServerSettings(model="zai-org/GLM-4.6V-Flash", max_model_len=4096),
        ["--max-model-len", "8192", '--limit-mm-per-prompt={"image": 2}', "--enforce-eager"],
    ).argv
    assert argv.count("--max-model-len") == 1 and argv[argv.index("--max-model-len") + 1] == "8192"
    assert "--limit-mm-per-prompt" not in argv and argv[-2:] == [
        '--limit-mm-per-prompt={"image": 2}',
        "--enforce-eager",
    ]


def test_runtime_lora_gets_a_documented_rank_never_vllm_s_16():
    roots = ServerSettings(model="zai-org/GLM-4.6V-Flash", adapter_roots=["/srv/adapters"])
    argv = vllm_command(roots).argv
    assert argv[argv.index("--enable-lora") :][:5] == [
        "--enable-lora",
        "--max-lora-rank",
        "64",
        "--max-loras",
        "1",
    ]
    chosen = ServerSettings(
        model="zai-org/GLM-4.6V-Flash",
        adapter_roots=["/srv"],
        max_lora_rank=128,
        max_loras=4,
        max_cpu_loras=8,
    )
    argv = vllm_command(chosen).argv
    assert argv[argv.index("--enable-lora") :][:7] == [
        "--enable-lora",
        "--max-lora-rank",
        "128",
        "--max-loras",
        "4",
        "--max-cpu-loras",
        "8",
    ]


def test_lora_limits_are_checked_against_vllm_and_the_adapters(exported):
    with pytest.raises(ConfigError, match=r"max_lora_rank=48: must be unset or one of vLLM's ranks 1, 8, 16"):
        ServerSettings(model="tiny", max_lora_rank=48)
    with pytest.raises(ConfigError, match=r"max_cpu_loras=2: must be at least max_loras"):
        ServerSettings(model="tiny", max_loras=4, max_cpu_loras=2)
    too_small = ServerSettings(model="tiny", adapters={"beta": str(exported["beta"])}, max_lora_rank=1)
    with pytest.raises(ConfigError, match=r"max_lora_rank=1: the adapters given need 8 \(largest rank 8\)"):
        vllm_command(too_small)


def test_gpu_options_pass_through_with_glm_v_s_recommendations():
    settings = ServerSettings(
        model="zai-org/GLM-4.6V-Flash",
        max_model_len=65536,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.95,
        mm_processor_cache_type="shm",
        mm_processor_cache_gb=8,
    )
    argv = vllm_command(settings).argv
    assert argv[argv.index("--tensor-parallel-size") :] == [
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.95",
        "--mm-encoder-tp-mode",
        "data",
        "--mm-processor-cache-gb",
        "8",
        "--mm-processor-cache-type",
        "shm",
    ]
    one_gpu = vllm_command(ServerSettings(model="zai-org/GLM-4.6V-Flash")).argv
    assert "--tensor-parallel-size" not in one_gpu and "--mm-encoder-tp-mode" not in one_gpu
    with pytest.raises(ConfigError, match=r"mm_encoder_tp_mode='rows': must be unset, weights or data"):
        ServerSettings(model="tiny", mm_encoder_tp_mode="rows")


@pytest.mark.parametrize(
    ("gib", "options", "tokens"),
    [
        # 24 x 0.9 - 19.17 (10.29 B params x 2 bytes) - 2 = 0.43 GiB / 40 KiB a token = 11,225 -> 10,240
        (24, {}, 10240),
        (24, {"gpu_memory_utilization": 0.95}, 41984),  # 1.63 GiB -> 42,505 -> 41,984
        (24, {"gpu_memory_utilization": 0.95, "lora_slots": 1, "lora_rank": 64}, 32768),  # 0.36 GiB of LoRA
        (24, {"quantize": "4bit"}, 131072),  # the decoder's linear layers at 4 bits: the whole context fits
        (20, {"tensor_parallel_size": 2}, 131072),
        (32, {}, 131072),  # capped at GLM-4.6V-Flash's context
    ],
)
def test_the_default_context_is_the_longest_whose_kv_cache_fits(gib, options, tokens):
    from glmlab.reference import glm46v_flash_config

    assert fitting_context(glm46v_flash_config(), gib, **options) == tokens


def test_a_gpu_too_small_for_the_weights_is_refused_with_what_to_do():
    from glmlab.reference import glm46v_flash_config

    with pytest.raises(
        ConfigError, match=r"gpu_memory_gib=22.5: 19.2 GiB of weights plus 2 GiB of overhead "
    ):
        fitting_context(glm46v_flash_config(), 22.5)


def test_vllm_command_reads_the_model_s_config_for_the_rule(tmp_path):
    from glmlab.reference import glm46v_flash_config

    (tmp_path / "config.json").write_text(json.dumps(glm46v_flash_config()))
    argv = vllm_command(ServerSettings(model=str(tmp_path), gpu_memory_gib=24)).argv
    assert argv[argv.index("--max-model-len") + 1] == "10240"
    given = vllm_command(ServerSettings(model=str(tmp_path), gpu_memory_gib=24, max_model_len=4096)).argv
    assert given[given.index("--max-model-len") + 1] == "4096"  # a given length wins over the rule


def test_vllm_command_refuses_vision_modules_vllm_cannot_take_as_they_are(adapters, vision_adapter):
    settings = ServerSettings(model="zai-org/GLM-4.6V-Flash", adapters={"seeing": str(adapters["seeing"])})
    with pytest.raises(
        ConfigError,
        match=r"adapts vision modules vLLM cannot serve as they are \(2 it has no LoRA layer for and "
        r"ignores\); export it first: glmlab export .* --format vllm --out DIR, then serve --adapter seeing=DIR",
    ):
        vllm_command(settings)
    raw = ServerSettings(model="zai-org/GLM-4.6V-Flash", adapters={"vision": str(vision_adapter)})
    with pytest.raises(
        ConfigError,
        match=r"\(6 gate_proj/up_proj, which vLLM takes fused as gate_up_proj; 2 it has no LoRA layer for "
        r"and ignores\); export it first",
    ):
        vllm_command(raw)


def test_an_adapter_with_vision_modules_turns_on_vllm_s_tower_lora(exported, vision_adapter, tmp_path):
    import warnings

    from glmlab.export import export_vllm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the qkv drop
        vision = export_vllm(vision_adapter, tmp_path / "vision").path
    adapters = {"alpha": str(exported["alpha"]), "vision": str(vision)}
    argv = vllm_command(ServerSettings(model="zai-org/GLM-4.6V-Flash", adapters=adapters)).argv
    assert argv[argv.index("--enable-lora") :][:10] == [
        "--enable-lora",
        "--max-lora-rank",
        "8",  # vision's fused gate_up_proj: rank 4 + 4
        "--max-loras",
        "2",
        "--enable-tower-connector-lora",
        "--lora-modules",
        f"alpha={exported['alpha']}",
        f"vision={vision}",
        "--max-model-len",
    ]
    text_only = vllm_command(
        ServerSettings(model="zai-org/GLM-4.6V-Flash", adapters=adapters | {"vision": adapters["alpha"]})
    )
    assert "--enable-tower-connector-lora" not in text_only.argv


def test_tower_lora_for_run_time_adapters_is_a_setting():
    roots = ServerSettings(model="zai-org/GLM-4.6V-Flash", adapter_roots=["/srv"], tower_connector_lora=True)
    argv = vllm_command(roots).argv
    assert argv[argv.index("--enable-lora") :][:6] == [
        "--enable-lora",
        "--max-lora-rank",
        "64",
        "--max-loras",
        "1",
        "--enable-tower-connector-lora",
    ]
    assert "--enable-tower-connector-lora" not in vllm_command(ServerSettings(adapter_roots=["/srv"])).argv
    with pytest.raises(ConfigError, match=r"tower_connector_lora=True: applies to LoRA adapters only"):
        vllm_command(ServerSettings(model="zai-org/GLM-4.6V-Flash", tower_connector_lora=True))
    result = CliRunner().invoke(
        app,
        ["serve", "--engine", "vllm", "--dry-run", "--adapter-root", "/srv", "--tower-connector-lora"],
    )
    assert result.exit_code == 0, result.output
    assert "--max-loras 1 --enable-tower-connector-lora --max-model-len auto" in result.output.splitlines()[0]


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
            "--max-model-len",
            "8192",
            "--",
            "--enforce-eager",
        ],
    )
    assert result.exit_code == 0, result.output
    command = result.output.splitlines()[0]
    assert (
        shlex.split(command)
        == vllm_command(
            ServerSettings(
                model="zai-org/GLM-4.6V-Flash",
                port=8000,
                adapters={"alpha": str(exported["alpha"])},
                max_model_len=8192,
            ),
            ["--enforce-eager"],
        ).argv
    )
    assert "--lora-modules alpha=" in command and "--max-lora-rank 8" in command
    assert '--max-model-len 8192 --limit-mm-per-prompt \'{"image": 32, "video": 1}\'' in command


def test_dry_run_with_vllm_python_runs_vllm_s_module_from_that_python(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--engine",
            "vllm",
            "--dry-run",
            "--vllm-python",
            "/opt/vllm/bin/python",
            "--max-images",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.output.splitlines()[0])
    assert argv[:5] == [
        "/opt/vllm/bin/python",
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
        "zai-org/GLM-4.6V-Flash",
    ]
    assert argv[-6:-2] == ["--max-model-len", "auto", "--limit-mm-per-prompt", '{"image": 2, "video": 1}']
    assert argv[-2:] == ["--media-io-kwargs", '{"video": {"num_frames": 16, "fps": 2.0}}']
    assert "not installed" not in result.output  # vLLM lives in that other environment


def test_the_glmlab_engine_says_it_ignores_vllm_only_options():
    result = CliRunner().invoke(
        app, ["serve", "--model", "tiny", "--dry-run", "--max-loras", "4", "--vllm-start-timeout", "60"]
    )
    assert result.exit_code == 0
    assert "note: --max-loras, --vllm-start-timeout only apply with --engine vllm" in result.output


def test_running_vllm_where_it_is_not_installed_explains_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="vLLM is not installed in this environment"):
        run_vllm(ServerSettings(model="zai-org/GLM-4.6V-Flash"))
    result = CliRunner().invoke(app, ["serve", "--engine", "vllm", "--model", "zai-org/GLM-4.6V-Flash"])
    assert result.exit_code == 2 and INSTALL_HINT in result.output and "--vllm-python" in INSTALL_HINT


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


# ---- starting vLLM: a local HTTP server process stands in for it -------------------------------------

FAKE_VLLM = """
import http.server, json, os, sys, threading, time
argv = sys.argv[1:]
open(os.environ["FAKE_ARGV"], "w").write(json.dumps(argv))
mode = os.environ["FAKE_MODE"]
print("INFO starting the fake engine", flush=True)
if mode == "fail":
    print("ValueError: To serve at least one request with max seq len 131072, 5.0 GiB KV cache is needed",
          flush=True)
    sys.exit(3)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
if mode == "silent":
    time.sleep(60)
server = http.server.HTTPServer(("127.0.0.1", int(argv[argv.index("--port") + 1])), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("INFO ready", flush=True)
time.sleep(float(os.environ.get("FAKE_SERVE_S", "1")))
"""


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    """An executable that stands in for vLLM's Python: it records its argv and serves /health."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(FAKE_VLLM))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    return script


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_vllm_waits_for_health_reports_the_url_and_runs_vllm_s_module(fake_python, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "serve")
    monkeypatch.setenv("FAKE_DELAY", "1.5")  # /health refuses connections until then
    port = _free_port()
    settings = ServerSettings(model="zai-org/GLM-4.6V-Flash", port=port, vllm_python=str(fake_python))
    reports = []
    started = time.monotonic()
    assert run_vllm(settings, report=reports.append) == 0
    assert time.monotonic() - started >= 1.5
    assert reports == [
        f"vLLM serves 'zai-org/GLM-4.6V-Flash' at http://127.0.0.1:{port}/v1 (Ctrl-C stops it)"
    ]
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:3] == ["-m", "vllm.entrypoints.cli.main", "serve"]
    assert argv == vllm_command(settings).argv[1:]  # PYTHON -m vllm.entrypoints.cli.main serve ...


def test_run_vllm_reports_vllm_s_last_lines_when_it_stops(fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail")
    settings = ServerSettings(model="zai-org/GLM-4.6V-Flash", port=_free_port(), vllm_python=str(fake_python))
    with pytest.raises(EngineError) as caught:
        run_vllm(settings, report=pytest.fail)
    message = str(caught.value)
    assert message.startswith("vLLM stopped with status 3 before serving; its last lines:\n")
    assert message.endswith(
        "INFO starting the fake engine\nValueError: To serve at least one request with max seq "
        "len 131072, 5.0 GiB KV cache is needed"
    )


def test_a_vllm_that_never_answers_is_stopped_after_the_start_timeout(fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "silent")
    settings = ServerSettings(
        model="tiny", port=_free_port(), vllm_python=str(fake_python), vllm_start_timeout_s=1
    )
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"did not answer http://127.0.0.1:\d+/health within 1 s "):
        run_vllm(settings, report=pytest.fail)
    assert time.monotonic() - started < 10  # stopped, not waited for (it would sleep 60 s)


def test_cli_runs_vllm_and_reports_its_failure(fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail")
    result = CliRunner().invoke(
        app, ["serve", "--engine", "vllm", "--vllm-python", str(fake_python), "--port", str(_free_port())]
    )
    assert result.exit_code == 2
    assert "EngineError: vLLM stopped with status 3 before serving" in result.output
    missing = CliRunner().invoke(app, ["serve", "--engine", "vllm", "--vllm-python", "/nonexistent/python"])
    assert (
        missing.exit_code == 2
        and "vllm_python='/nonexistent/python': is not an executable file" in missing.output
    )
