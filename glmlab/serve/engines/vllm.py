"""`glmlab serve --engine vllm`: the same settings, served by vLLM for throughput on a GPU.

`vllm_command` turns `ServerSettings` into a `vllm serve` command line: GLM-4.6V's reasoning and
tool-call parsers (glm45), LoRA enabled with every adapter as `--lora-modules name=path` and
`--max-lora-rank` the smallest rank vLLM allows that fits the largest adapter. Clients see the same
API as with glmlab's own server (model names, reasoning_content, /v1/load_lora_adapter when adapter
roots are given), so glmlab's client, eval harness and widget work unchanged against it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glmlab.adapters import check_for_vllm, inspect_adapter, max_lora_rank
from glmlab.errors import ConfigError
from glmlab.serve.settings import ServerSettings

logger = logging.getLogger(__name__)

DEFAULT_MAX_LORA_RANK = 16  # vLLM's own default, used when only run-time adapters are expected
INSTALL_HINT = (
    "vLLM is not installed in this environment. It runs on Linux with an NVIDIA GPU: install it in "
    "a fresh environment with `pip install -U vllm` (see https://docs.vllm.ai/en/latest/"
    "getting_started/installation/), then rerun. `glmlab serve --engine vllm --dry-run` prints the "
    "command without running it."
)

# glmlab server limits with no `vllm serve` counterpart (vLLM has its own defaults for these)
VLLM_IGNORES = (
    "allow_urls",
    "allow_private_urls",
    "allowed_hosts",
    "max_input_pixels",
    "max_images",
    "max_request_pixels",
    "max_decode_mb",
    "max_request_bytes",
    "max_concurrency",
    "timeout_s",
    "send_timeout_s",
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
    """The `vllm serve` command for `settings`; `extra_args` are passed to vLLM as they are.

    Adapters must be vLLM-ready (language-model modules only): export others with
    `glmlab export ADAPTER --format vllm --out DIR` first.
    """
    argv = [
        "vllm",
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
    argv += _lora_args(settings)
    if settings.max_image_pixels:
        from glmlab.prompts import pixel_budget_size

        argv += ["--mm-processor-kwargs", json.dumps({"size": pixel_budget_size(settings.max_image_pixels)})]
    if settings.max_model_len:
        argv += ["--max-model-len", str(settings.max_model_len)]
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
    return VllmCommand(argv + list(extra_args), env)


def _lora_args(settings: ServerSettings) -> list[str]:
    if not settings.adapters and not settings.adapter_roots:
        return []
    ranks = []
    for name, path in settings.adapters.items():
        info = inspect_adapter(path)
        modules = check_for_vllm(info)
        if modules.vision:
            raise ConfigError(
                f"adapter {name!r} ({path}) also adapts {len(modules.vision)} vision-tower modules, "
                f"which vLLM ignores; export it first: glmlab export {path} --format vllm --out DIR, "
                f"then serve --adapter {name}=DIR."
            )
        ranks.append(info.rank)
    args = [
        "--enable-lora",
        "--max-lora-rank",
        str(max_lora_rank(max(ranks, default=DEFAULT_MAX_LORA_RANK))),
        "--max-loras",
        str(max(1, len(settings.adapters))),
    ]
    if settings.adapters:
        args += [
            "--lora-modules",
            *(f"{name}={Path(path).expanduser().resolve()}" for name, path in settings.adapters.items()),
        ]
    return args


def _model_source(model: str) -> str:
    """What vLLM loads: 'tiny' becomes glmlab's tiny checkpoint folder; ids and folders stay as given."""
    if model != "tiny":
        return model
    from glmlab.loading import resolve_source

    return resolve_source(model)


def run_vllm(settings: ServerSettings, extra_args: Sequence[str] = ()) -> int:
    """Run `vllm serve` in the foreground and return its exit status; explains how to install vLLM if missing."""
    command = vllm_command(settings, extra_args)
    if shutil.which("vllm") is None:
        raise ConfigError(INSTALL_HINT)
    logger.info("running %s", command.shell())
    return subprocess.call(command.argv, env={**os.environ, **command.env})
