"""`glmlab serve --engine vllm`: the same settings, served by vLLM for throughput on a GPU.

`vllm_command` turns `ServerSettings` into a `vllm serve` command line that starts: GLM-4.6V's
reasoning and tool-call parsers (glm45); `--max-model-len` from max_model_len, else the longest context
whose KV cache fits gpu_memory_gib (`vllm_memory`), else `auto` (vLLM fits it on its GPU); images per
prompt from max_images and videos from max_videos in vLLM's JSON form, each video sampled with video_fps
and video_max_frames (`--media-io-kwargs`); LoRA enabled
with every adapter as `--lora-modules name=path`, `--max-lora-rank` the smallest rank vLLM allows that
fits the largest adapter (or max_lora_rank, DEFAULT_RUNTIME_LORA_RANK for run-time adapters only),
`--enable-tower-connector-lora` when an adapter holds vision-block or merger modules (or the
tower_connector_lora setting asks for it); GLM-V's recommended multimodal options as settings. Clients
see the same API as with glmlab's own server (model names, reasoning_content, /v1/load_lora_adapter
when adapter roots are given), so glmlab's client, eval harness and widget work unchanged against it.

vLLM pins its own torch and transformers, so it usually lives in an environment of its own:
`vllm_python` runs it as `PYTHON -m vllm.entrypoints.cli.main serve ...` from there. `run_vllm` starts
it, waits for its /health and reports the URL, or vLLM's last lines when it stops or never answers.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glmlab.adapters import TOWER_FLAG, VllmModules, check_for_vllm, inspect_adapter, max_lora_rank, vllm_rank
from glmlab.errors import ConfigError, GlmlabError
from glmlab.serve.settings import DEFAULT_RUNTIME_LORA_RANK, ServerSettings

logger = logging.getLogger(__name__)

VLLM_MODULE = "vllm.entrypoints.cli.main"  # what the `vllm` script runs
LAST_LINES = 30  # of vLLM's output, shown when it fails to start
INSTALL_HINT = (
    "vLLM is not installed in this environment. It runs on Linux with an NVIDIA GPU and pins its own "
    "torch and transformers, so install it in an environment of its own: `python -m venv ~/.venvs/vllm "
    "&& ~/.venvs/vllm/bin/pip install vllm` (see https://docs.vllm.ai/en/latest/getting_started/"
    "installation/), then rerun with --vllm-python ~/.venvs/vllm/bin/python. `glmlab serve --engine "
    "vllm --dry-run` prints the command without running it."
)


class EngineError(GlmlabError, RuntimeError):
    """vLLM stopped, or did not answer /health in time, before serving."""


# glmlab server limits with no `vllm serve` counterpart (vLLM has its own defaults for these)
VLLM_IGNORES = (
    "allow_urls",
    "allow_private_urls",
    "allowed_hosts",
    "max_input_pixels",
    "max_request_pixels",
    "max_decode_mb",
    "max_request_bytes",
    "max_concurrency",
    "max_batch_size",
    "batch_gather_s",
    "max_queue_wait_s",
    "max_n",
    "timeout_s",
    "send_timeout_s",
    "rate_limit_rpm",
    "rate_limit_tpm",
    "metrics_require_key",  # vLLM's /metrics is open, also with an API key
)


@dataclass
class VllmCommand:
    """A `vllm serve` command line and the environment variables it needs."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """The command as one shell line (the API key masked)."""
        env = [f"{key}={'<key>' if key == 'VLLM_API_KEY' else value}" for key, value in self.env.items()]
        return " ".join([*env, shlex.join(self.argv)])


def vllm_command(settings: ServerSettings, extra_args: Sequence[str] = ()) -> VllmCommand:
    """The `vllm serve` command for `settings`; `extra_args` are passed to vLLM as they are (and win).

    Adapters must be vLLM-ready (the modules vLLM serves, vision gate_proj / up_proj fused): export
    others with `glmlab export ADAPTER --format vllm --out DIR` first.
    """
    program = [settings.vllm_python, "-m", VLLM_MODULE] if settings.vllm_python else ["vllm"]
    argv = [
        *program,
        "serve",
        _model_source(settings.model),
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--reasoning-parser",
        "glm45",
        "--tool-call-parser",
        "glm45",
        "--enable-auto-tool-choice",
    ]
    if settings.served_model_name:
        argv += ["--served-model-name", settings.served_model_name]
    for flag, path in settings.uvicorn_tls().items():  # vLLM's own flags of the same names
        argv += ["--" + flag.replace("_", "-"), path]
    lora, slots, rank = _lora_args(settings)
    argv += lora
    argv += ["--max-model-len", _max_model_len(settings, slots, rank)]
    argv += [
        "--limit-mm-per-prompt",
        json.dumps({"image": settings.max_images, "video": settings.max_videos}),
    ]
    if settings.max_videos:  # vLLM samples video_url parts itself: the same fps and frame cap as glmlab's
        media = {"video": {"num_frames": settings.video_max_frames, "fps": settings.video_fps}}
        argv += ["--media-io-kwargs", json.dumps(media)]
    if settings.max_image_pixels:
        from glmlab.prompts import pixel_budget_size

        argv += ["--mm-processor-kwargs", json.dumps({"size": pixel_budget_size(settings.max_image_pixels)})]
    argv += _gpu_args(settings)
    if settings.dtype != "auto":
        argv += ["--dtype", settings.dtype]
    if settings.quantize == "4bit":
        argv += ["--quantization", "bitsandbytes"]
    elif settings.quantize:
        raise ConfigError(
            f"quantize={settings.quantize!r}: vLLM quantizes on the fly to 4bit (bitsandbytes) only; "
            "use quantize='4bit' or a pre-quantized (FP8) checkpoint."
        )
    ignored = [
        name
        for name in VLLM_IGNORES
        if getattr(settings, name) != getattr(ServerSettings(model=settings.model), name)
    ]
    if ignored:
        logger.warning("vLLM does not enforce glmlab's %s: these settings are ignored", ", ".join(ignored))
    env = {}
    if settings.api_key:
        env["VLLM_API_KEY"] = settings.api_key  # not on the command line, where `ps` would show it
    if settings.adapter_roots:
        logger.warning(
            "vLLM's /v1/load_lora_adapter loads any path it is given (it has no adapter roots); "
            "keep the server on loopback or behind an API key."
        )
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return VllmCommand(_without(argv, extra_args) + list(extra_args), env)


def _without(argv: list[str], extra_args: Sequence[str]) -> list[str]:
    """`argv` less the one-value options that `extra_args` gives again (so the command names each once)."""
    given = {arg.split("=", 1)[0] for arg in extra_args if arg.startswith("--")}
    kept, skip = [], False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        value_follows = index + 1 < len(argv) and not argv[index + 1].startswith("--")
        if arg in given and arg != "--lora-modules" and value_follows:
            skip = True
            continue
        kept.append(arg)
    return kept


def _max_model_len(settings: ServerSettings, lora_slots: int, lora_rank: int) -> str:
    """max_model_len as given, else the context that fits gpu_memory_gib, else vLLM's own fit (auto)."""
    if settings.max_model_len:
        return str(settings.max_model_len)
    if settings.gpu_memory_gib is None:
        return "auto"
    from glmlab.serve.engines.vllm_memory import fitting_context, model_config

    config = model_config(settings.model)
    if config.get("quantization_config"):  # pre-quantized weights: their size is not the rule's
        logger.warning("%s is pre-quantized; --max-model-len auto lets vLLM fit the context", settings.model)
        return "auto"
    return str(
        fitting_context(
            config,
            settings.gpu_memory_gib,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            quantize=settings.quantize,
            dtype=settings.dtype,
            lora_slots=lora_slots,
            lora_rank=lora_rank,
        )
    )


def _gpu_args(settings: ServerSettings) -> list[str]:
    """GLM-V's recommended vLLM options, where set (the vision encoder data-parallel across GPUs)."""
    args = []
    if settings.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(settings.tensor_parallel_size)]
    encoder_mode = settings.mm_encoder_tp_mode or ("data" if settings.tensor_parallel_size > 1 else None)
    options = {
        "--gpu-memory-utilization": settings.gpu_memory_utilization,
        "--mm-encoder-tp-mode": encoder_mode,
        "--mm-processor-cache-gb": settings.mm_processor_cache_gb,
        "--mm-processor-cache-type": settings.mm_processor_cache_type,
    }
    for flag, value in options.items():
        if value is not None:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def _lora_args(settings: ServerSettings) -> tuple[list[str], int, int]:
    """The LoRA options, the GPU slots (max_loras) and the rank each slot holds (0, 0 without LoRA).

    An adapter with vision-block or merger modules turns on vLLM's tower/connector LoRA (TOWER_FLAG;
    without it vLLM applies only the language model's), as does the tower_connector_lora setting
    (for adapters loaded at run time).
    """
    if not settings.adapters and not settings.adapter_roots:
        if settings.tower_connector_lora:
            raise ConfigError(
                "tower_connector_lora=True: applies to LoRA adapters only; give --adapter or "
                "--adapter-root, or drop --tower-connector-lora."
            )
        return [], 0, 0
    ranks, tower = [], settings.tower_connector_lora
    for name, path in settings.adapters.items():
        info = inspect_adapter(path)
        modules = check_for_vllm(info)
        if modules.fuse or modules.dropped:
            raise ConfigError(
                f"adapter {name!r} ({path}) adapts vision modules vLLM cannot serve as they are "
                f"({_as_written(modules)}); export it first: glmlab export {path} --format vllm --out "
                f"DIR, then serve --adapter {name}=DIR."
            )
        ranks.append(vllm_rank(info))
        tower = tower or modules.needs_tower_lora
    needed = max_lora_rank(max(ranks)) if ranks else 0
    if settings.max_lora_rank is not None and settings.max_lora_rank < needed:
        raise ConfigError(
            f"max_lora_rank={settings.max_lora_rank}: the adapters given need {needed} (largest rank "
            f"{max(ranks)}); raise --max-lora-rank or leave it unset."
        )
    rank = settings.max_lora_rank or needed or DEFAULT_RUNTIME_LORA_RANK
    slots = settings.max_loras or max(1, len(settings.adapters))
    args = ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(slots)]
    if settings.max_cpu_loras is not None:
        args += ["--max-cpu-loras", str(settings.max_cpu_loras)]
    if tower:
        args.append(TOWER_FLAG)
    if settings.adapters:
        args += [
            "--lora-modules",
            *(f"{name}={Path(path).expanduser().resolve()}" for name, path in settings.adapters.items()),
        ]
    return args, slots, rank


def _as_written(modules: VllmModules) -> str:
    """Why an adapter's vision modules need the export: what vLLM would do with them."""
    reasons = []
    if modules.fuse:
        reasons.append(f"{len(modules.fuse)} gate_proj/up_proj, which vLLM takes fused as gate_up_proj")
    if modules.dropped:
        reasons.append(f"{len(modules.dropped)} it has no LoRA layer for and ignores")
    return "; ".join(reasons)


def _model_source(model: str) -> str:
    """What vLLM loads: 'tiny' becomes glmlab's tiny checkpoint folder; ids and folders stay as given."""
    if model != "tiny":
        return model
    from glmlab.loading import resolve_source

    return resolve_source(model)


def run_vllm(
    settings: ServerSettings, extra_args: Sequence[str] = (), report: Callable[[str], None] = print
) -> int:
    """Start vLLM, wait for its /health, `report` its URL, and serve until it exits; returns its status.

    Raises EngineError with vLLM's last output lines when it stops before answering /health or does not
    answer within settings.vllm_start_timeout_s (it is stopped then); ConfigError when vLLM is missing.
    """
    command = vllm_command(settings, extra_args)
    _check_program(settings)
    if settings.port == 0:
        raise ConfigError(
            "port=0: give vLLM a port of its own (--port), so glmlab can tell where it listens."
        )
    logger.info("running %s", command.shell())
    process = subprocess.Popen(
        command.argv,
        env={**os.environ, **command.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    last = collections.deque(maxlen=LAST_LINES)
    echo = threading.Thread(target=_relay, args=(process, last), daemon=True)
    echo.start()
    try:
        url = wait_until_healthy(process, settings, last)
        report(f"vLLM serves {settings.base_model_name!r} at {url}/v1 (Ctrl-C stops it)")
        return process.wait()
    finally:
        _stop(process)
        echo.join(timeout=5)


def wait_until_healthy(process: subprocess.Popen, settings: ServerSettings, last: collections.deque) -> str:
    """Poll vLLM's /health until it answers 200 and return the server's base URL; EngineError (with its
    last output lines) when the process exits first or the start timeout passes."""
    import httpx

    url = f"{settings.scheme}://{_client_host(settings.host)}:{settings.port}"
    deadline = time.monotonic() + settings.vllm_start_timeout_s
    while True:
        if process.poll() is not None:
            time.sleep(0.2)  # let the relay read the last lines
            raise EngineError(
                f"vLLM stopped with status {process.returncode} before serving; its last lines:\n"
                + "\n".join(last)
            )
        try:
            # our own child on a port we chose: the poll asks whether it is up, not who it is, so a
            # private CA's certificate needs no bundle here (clients do verify it)
            if httpx.get(f"{url}/health", timeout=5, verify=False).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise EngineError(
                f"vLLM did not answer {url}/health within {settings.vllm_start_timeout_s:g} s "
                "(--vllm-start-timeout) and was stopped; its last lines:\n" + "\n".join(last)
            )
        time.sleep(0.5)


def _check_program(settings: ServerSettings) -> None:
    if settings.vllm_python is None:
        if shutil.which("vllm") is None:
            raise ConfigError(INSTALL_HINT)
        return
    python = Path(settings.vllm_python).expanduser()
    if not python.is_file() or not os.access(python, os.X_OK):
        raise ConfigError(
            f"vllm_python={settings.vllm_python!r}: is not an executable file; give the python of the "
            "environment where vLLM is installed (e.g. ~/.venvs/vllm/bin/python)."
        )


def _relay(process: subprocess.Popen, last: collections.deque) -> None:
    """Copy vLLM's output to stderr as it comes, keeping the last lines for an error message."""
    for line in process.stdout:
        last.append(line.rstrip("\n"))
        sys.stderr.write(line)
    sys.stderr.flush()


def _stop(process: subprocess.Popen) -> None:
    """End vLLM (and give it 30 s to free the GPU) if it still runs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _client_host(host: str) -> str:
    """Where to reach a server listening on `host` from this machine."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
