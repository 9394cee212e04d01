"""`ServerSettings`: every knob of `glmlab serve`, one typed dataclass.

Its fields become the CLI flags (`glmlab/cli/serve.py` builds the options from `fields(ServerSettings)`
and their `help` metadata), so the library and the command line cannot drift. Validation names the bad
field. Safety defaults follow llama-cpp-python's server: loopback only, an optional API key, explicit
limits on request size, image size, queue length and time. Beyond loopback a key is required (or an
explicit `no_auth`); Host headers are checked against loopback names, `host` and `allowed_hosts`
(DNS rebinding); image URLs, when allowed, are fetched from public addresses only.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from glmlab.adapters import VLLM_LORA_RANKS, check_adapter_name
from glmlab.config import Check, checked_field, is_int, is_number, problems, raise_if_problems
from glmlab.errors import ConfigError
from glmlab.images import DEFAULT_MAX_INPUT_PIXELS, MB
from glmlab.loading import DEFAULT_MODEL, DTYPES, QUANTIZE
from glmlab.settings import MIN_IMAGE_PIXELS
from glmlab.urls import is_loopback_host
from glmlab.videos import DEFAULT_FPS, TEMPORAL_PATCH_SIZE

DTYPE_NAMES = ("auto", *DTYPES)  # glmlab.loading's choices, checked when the server starts
QUANTIZE_NAMES = QUANTIZE
logger = logging.getLogger(__name__)

API_KEY_ENV = "GLMLAB_API_KEY"
API_KEY = re.compile(r"^[!-~]+$")  # printable ASCII, no spaces: what a Bearer header carries intact
HOST_PATTERN = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])$")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# vLLM's --max-lora-rank when adapters only come at run time (--adapter-root, no --adapter): its own
# default, 16, would refuse every later adapter above rank 16; 64 covers the usual LoRA ranks.
DEFAULT_RUNTIME_LORA_RANK = 64
# settings only `glmlab serve --engine vllm` uses
VLLM_ONLY = (
    "gpu_memory_gib",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "mm_encoder_tp_mode",
    "mm_processor_cache_gb",
    "mm_processor_cache_type",
    "max_lora_rank",
    "max_loras",
    "max_cpu_loras",
    "tower_connector_lora",
    "vllm_python",
    "vllm_start_timeout_s",
)


def _option(default, help: str, check: Check | None = None, **extra):
    """A dataclass field with the CLI help text, its check (glmlab.config) and an optional flag name."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return checked_field(help=help, check=check, **factory, **extra)


def _at_least(low: float, *, integer: bool = True) -> Check:
    kind = is_int if integer else is_number
    return Check(lambda value: kind(value) and value >= low, f"at least {low}")


def _positive() -> Check:
    return Check(lambda value: is_number(value) and value > 0, "greater than 0")


@dataclass
class ServerSettings:
    """How `glmlab serve` loads its model and which requests it accepts."""

    model: str = _option(DEFAULT_MODEL, "Hub id, local checkpoint folder, or 'tiny'.")
    adapters: dict[str, str] = _option(
        dict, "LoRA adapters to load at start, NAME=DIR (repeatable).", flag="--adapter", metavar="NAME=DIR"
    )
    adapter_roots: list[str] = _option(
        list,
        "Folders under which /v1/load_lora_adapter may load adapters "
        "(repeatable; the folders holding --adapter dirs are always allowed).",
        flag="--adapter-root",
        metavar="DIR",
    )
    served_model_name: str | None = _option(None, "Name clients use for the base model (default: --model).")
    host: str = _option(
        "127.0.0.1",
        "Address to listen on (loopback by default; any other needs --api-key, or --no-auth).",
    )
    port: int = _option(
        8080,
        "Port to listen on (0: any free port).",
        Check(lambda value: is_int(value) and 0 <= value <= 65535, "between 0 and 65535"),
    )
    ssl_certfile: str | None = _option(
        None,
        "Serve HTTPS with this PEM certificate (chain) file, with --ssl-keyfile (uvicorn's TLS); "
        "clients then verify it (glmlab.Client's ca_bundle for a private CA).",
        metavar="FILE",
    )
    ssl_keyfile: str | None = _option(
        None, "The PEM private key of --ssl-certfile (both or neither).", metavar="FILE"
    )
    api_key: str | None = _option(
        None, f"Require 'Authorization: Bearer KEY' on all routes but /health (env {API_KEY_ENV})."
    )
    no_auth: bool = _option(
        False,
        "Listen on a non-loopback --host without an API key: anyone who can reach the port can use "
        "the model and load adapters.",
    )
    allowed_hosts: list[str] = _option(
        list,
        "Host header values to accept besides localhost, 127.0.0.1, [::1] and --host (repeatable; "
        "'*.example.com' matches subdomains, '*' turns the check off). Guards against DNS rebinding.",
        flag="--allowed-host",
        metavar="HOST",
    )
    allow_urls: bool = _option(
        False,
        "Let requests reference http(s) images (data URLs are always allowed); the server fetches "
        "them from public addresses only, within --max-request-bytes and 20 s.",
    )
    allow_private_urls: bool = _option(
        False,
        "With --allow-urls, also fetch from loopback, private and link-local addresses (an intranet); "
        "cloud metadata addresses stay refused.",
    )
    max_image_pixels: int | None = _option(
        None,
        "Largest image area the model sees after resizing (the latency lever; default: the checkpoint's).",
        Check(_at_least(MIN_IMAGE_PIXELS), f"at least {MIN_IMAGE_PIXELS} (or unset)"),
    )
    max_input_pixels: int = _option(
        DEFAULT_MAX_INPUT_PIXELS,
        "Refuse images larger than this many pixels before decoding them (decompression-bomb guard).",
        _at_least(MIN_IMAGE_PIXELS),
    )
    max_images: int = _option(
        32,
        "Most images one request may hold (each PDF page and DICOM frame counts one); more: 400.",
        _at_least(1),
    )
    max_videos: int = _option(
        1,
        "Most videos (video_url parts) one request may hold; more: 400. Their sampled frames also count "
        "in --max-images and --max-request-pixels.",
        _at_least(0),
    )
    video_fps: float = _option(
        DEFAULT_FPS,
        "Frames sampled per second of a request's video (glmlab.videos: times 0, 1/fps, 2/fps, ...).",
        _positive(),
    )
    video_max_frames: int = _option(
        16,
        "Most frames sampled from one video (spread evenly over a longer clip); each counts one image "
        "against --max-images and its pixels against --max-request-pixels, checked from the container's "
        "headers before decoding (16 frames of 720p fit the default pixel budget).",
        _at_least(TEMPORAL_PATCH_SIZE),
    )
    max_request_pixels: int = _option(
        16 * 1024 * 1024,
        "Most decoded pixels all images of one request may hold together, checked from their headers "
        "before decoding (400). The default keeps one request under 400 MB end to end: the processor "
        "resizes each image in float32 (about 18 bytes per decoded pixel with the copies around it).",
        _at_least(MIN_IMAGE_PIXELS),
    )
    max_decode_mb: int = _option(
        384,
        "Memory (MiB) the decoded images of all requests together may hold, admitted from their headers "
        "before decoding and held until each request ends; a request that needs more alone gets 400, one "
        "that finds it in use waits up to 5 s, then gets 503.",
        _at_least(1),
    )
    max_request_bytes: int = _option(
        20 * 1024 * 1024, "Refuse request bodies larger than this (413).", _at_least(1024)
    )
    max_concurrency: int = _option(
        32, "Requests queued plus running; beyond it requests get 429.", _at_least(1)
    )
    max_batch_size: int = _option(
        8,
        "Most requests (rows: each of OpenAI's n choices is one) generated together in one batch; "
        "requests that arrive while a batch runs form the next one. 1 turns batching off.",
        _at_least(1),
    )
    batch_gather_s: float = _option(
        0.25,
        "Seconds a batch about to start waits for requests that arrived but are still being read and "
        "decoded, so requests sent together run together (a lone request never waits).",
        Check(lambda value: is_number(value) and value >= 0, "at least 0"),
        flag="--batch-gather",
    )
    max_queue_wait_s: float = _option(
        60.0,
        "Seconds a request may wait for a place in a batch before 429 with Retry-After.",
        _positive(),
        flag="--max-queue-wait",
    )
    max_n: int = _option(
        4,
        "Most choices (OpenAI's n) one request may ask for; they run as rows of one batch (of several "
        "when n is above --max-batch-size).",
        _at_least(1),
    )
    rate_limit_rpm: int | None = _option(
        None,
        "Chat completions each client may start per minute (a moving 60 s window), keyed by the API key "
        "when the server has one, else by the client's address; more get 429 with Retry-After. Off unset.",
        Check(_at_least(1), "at least 1 (or unset)"),
    )
    rate_limit_tpm: int | None = _option(
        None,
        "Tokens (prompt + completion) each client may use per minute, keyed like --rate-limit-rpm: a "
        "finished request's tokens are counted whole, and while the last 60 s hold this many a new "
        "request gets 429 with Retry-After. Off unset.",
        Check(_at_least(1), "at least 1 (or unset)"),
    )
    metrics_require_key: bool = _option(
        False,
        "Require the API key on GET /metrics too. Off by default, like vLLM's /metrics: a Prometheus "
        "scraper needs no key, and the page holds counts and timings only (no prompts, keys or names).",
    )
    timeout_s: float = _option(
        300.0,
        "Seconds a request may wait and generate (prefill included) before 504.",
        _positive(),
        flag="--timeout",
    )
    send_timeout_s: float = _option(
        30.0,
        "Seconds a streamed response waits for a client that reads nothing before dropping its stream "
        "(the model is freed as soon as it has generated, whatever the client reads).",
        _positive(),
        flag="--send-timeout",
    )
    max_model_len: int | None = _option(
        None,
        "Most tokens of prompt plus max_tokens one request may use (default: the model's context); "
        "more is a 400 that says both numbers.",
        Check(_at_least(1), "at least 1 (or unset)"),
    )
    dtype: str = _option(
        "auto",
        " | ".join(DTYPE_NAMES) + ".",
        Check(lambda value: value in DTYPE_NAMES, " | ".join(DTYPE_NAMES)),
    )
    device: str = _option("auto", "auto | cpu | cuda | cuda:N.")
    quantize: str | None = _option(
        None,
        "None | 8bit | 4bit (bitsandbytes, CUDA only).",
        Check(lambda value: value in QUANTIZE_NAMES, "unset, " + " or ".join(QUANTIZE_NAMES)),
    )
    # --engine vllm only (VLLM_ONLY): the `vllm serve` options glmlab sets for GLM-V
    gpu_memory_gib: float | None = _option(
        None,
        "vLLM: memory of each GPU in GiB (as nvidia-smi shows it); sets the default --max-model-len to the "
        "longest context whose KV cache fits (README: vLLM's context length). Unset: "
        "--max-model-len auto (vLLM fits it on the GPU it starts on).",
        Check(lambda value: is_number(value) and value > 0, "greater than 0 (or unset)"),
    )
    gpu_memory_utilization: float | None = _option(
        None,
        "vLLM: share of each GPU's memory vLLM may take (vLLM's default: 0.9).",
        Check(lambda value: is_number(value) and 0 < value <= 1, "between 0 and 1 (or unset)"),
    )
    tensor_parallel_size: int = _option(1, "vLLM: GPUs to split the model over.", _at_least(1))
    mm_encoder_tp_mode: str | None = _option(
        None,
        "vLLM: weights | data: how the vision encoder uses tensor parallelism (default: data with "
        "--tensor-parallel-size above 1, as GLM-V recommends; vLLM's own otherwise).",
        Check(lambda value: value in ("weights", "data"), "unset, weights or data"),
    )
    mm_processor_cache_gb: float | None = _option(
        None,
        "vLLM: GiB of processed images each vLLM process caches (vLLM's default: 4; 0 turns it off).",
        Check(lambda value: is_number(value) and value >= 0, "at least 0 (or unset)"),
    )
    mm_processor_cache_type: str | None = _option(
        None,
        "vLLM: lru | shm: the processed-image cache's kind (GLM-V recommends shm with several GPUs).",
        Check(lambda value: value in ("lru", "shm"), "unset, lru or shm"),
    )
    max_lora_rank: int | None = _option(
        None,
        "vLLM: largest adapter rank the server accepts, one of "
        + ", ".join(map(str, VLLM_LORA_RANKS))
        + f" (default: the smallest that fits the --adapter ones; {DEFAULT_RUNTIME_LORA_RANK} when "
        "adapters are only loaded at run time).",
        Check(
            lambda value: value in VLLM_LORA_RANKS,
            "unset or one of vLLM's ranks " + ", ".join(map(str, VLLM_LORA_RANKS)),
        ),
    )
    max_loras: int | None = _option(
        None,
        "vLLM: adapters one batch may use at once, each a GPU slot of max_lora_rank "
        "(default: the number of --adapter ones, at least 1).",
        Check(_at_least(1), "at least 1 (or unset)"),
    )
    max_cpu_loras: int | None = _option(
        None, "vLLM: adapters kept in CPU memory, at least --max-loras (vLLM's default: --max-loras)."
    )
    tower_connector_lora: bool = _option(
        False,
        "vLLM: also apply adapters' vision-block and merger LoRA (vLLM's experimental "
        "--enable-tower-connector-lora); on by itself when an --adapter holds such modules, this is for "
        "adapters loaded at run time.",
    )
    vllm_python: str | None = _option(
        None,
        "vLLM: the Python of an environment where vLLM is installed; runs `PYTHON -m "
        "vllm.entrypoints.cli.main serve` (vLLM pins its own torch and transformers). Default: `vllm` on PATH.",
        metavar="PATH",
    )
    vllm_start_timeout_s: float = _option(
        1800.0,
        "vLLM: seconds to wait for vLLM's /health after starting it (it downloads and loads the model).",
        _positive(),
        flag="--vllm-start-timeout",
    )

    def __post_init__(self) -> None:
        if self.api_key is None and API_KEY_ENV in os.environ:
            self.api_key = os.environ[API_KEY_ENV]
        self.adapters = dict(self.adapters)
        self.adapter_roots = [str(root) for root in self.adapter_roots]
        self.allowed_hosts = [str(host).lower() for host in self.allowed_hosts]
        # every bad setting at once, each named; the checks are the fields' own (glmlab.config)
        raise_if_problems(problems(self, prefix="ServerSettings."))
        for name in self.adapters:
            check_adapter_name(name)
        for pattern in self.allowed_hosts:
            if not HOST_PATTERN.match(pattern):
                raise ConfigError(
                    f"ServerSettings.allowed_hosts: {pattern!r} is not a host name; give a name or "
                    "address as clients write it in URLs (no port), '*.example.com', or '*'."
                )
        if self.metrics_require_key and self.api_key is None:
            raise ConfigError(
                "ServerSettings.metrics_require_key=True: only has a meaning with an api_key "
                f"(--api-key or {API_KEY_ENV})."
            )
        if self.allow_private_urls and not self.allow_urls:
            raise ConfigError(
                "ServerSettings.allow_private_urls=True: only has a meaning with allow_urls=True."
            )
        self._check_auth()
        self._check_tls()

    def _check_tls(self) -> None:
        """Both TLS files or neither, each readable: a typo should fail here, not at uvicorn's start."""
        given = {"ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile}
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            missing = next(name for name, value in given.items() if value is None)
            raise ConfigError(
                f"ServerSettings.{missing} is unset: HTTPS needs both --ssl-certfile and --ssl-keyfile."
            )
        for name, value in given.items():
            if value is not None and not Path(value).expanduser().is_file():
                raise ConfigError(f"ServerSettings.{name}={value!r}: no such file; give a PEM file's path.")

    @property
    def scheme(self) -> str:
        """'https' with a certificate, else 'http'."""
        return "https" if self.ssl_certfile else "http"

    def uvicorn_tls(self) -> dict[str, str]:
        """uvicorn's keyword arguments for TLS (none without a certificate)."""
        if self.ssl_certfile is None or self.ssl_keyfile is None:
            return {}
        return {
            "ssl_certfile": str(Path(self.ssl_certfile).expanduser()),
            "ssl_keyfile": str(Path(self.ssl_keyfile).expanduser()),
        }

    def extra_problems(self) -> list[tuple[str, str]]:
        """Checks that span fields (glmlab.config.problems calls this)."""
        found = []
        floor = max(self.max_loras or 1, len(self.adapters), 1)
        if self.max_cpu_loras is not None and (not is_int(self.max_cpu_loras) or self.max_cpu_loras < floor):
            found.append(
                (
                    f"max_cpu_loras={self.max_cpu_loras!r}",
                    "must be at least max_loras and the number of adapters (or unset)",
                )
            )
        return found

    def _check_auth(self) -> None:
        """An empty key would switch authentication off; beyond loopback a key (or no_auth) is required."""
        source = f" (from {API_KEY_ENV})" if os.environ.get(API_KEY_ENV) == self.api_key else ""
        if self.api_key is not None and not API_KEY.match(self.api_key):
            problem = (
                "is empty (an empty key would turn authentication off)"
                if not self.api_key.strip()
                else "holds spaces or non-ASCII characters (a Bearer header cannot carry them intact)"
            )
            raise ConfigError(
                f"ServerSettings.api_key{source} {problem}. Give a key of printable ASCII characters (e.g. from `python -c 'import secrets; "
                "print(secrets.token_urlsafe())'`), or unset it."
            )
        if self.no_auth and self.api_key is not None:
            raise ConfigError(f"ServerSettings.no_auth=True and an api_key{source} are both set; drop one.")
        if is_loopback_host(self.host) or self.api_key is not None:
            return
        if not self.no_auth:
            raise ConfigError(
                f"ServerSettings.host={self.host!r}: listening beyond loopback needs an API key: set "
                f"--api-key (or {API_KEY_ENV}), or pass --no-auth to serve to anyone who can reach it."
            )
        logger.warning(
            "AUTHENTICATION IS OFF (--no-auth): anyone who can reach %s:%s can use the model and load "
            "adapters.",
            self.host,
            self.port,
        )

    @property
    def base_model_name(self) -> str:
        """The `model` value that selects the base model (no adapter)."""
        return self.served_model_name or self.model

    def trusted_hosts(self) -> list[str]:
        """Host header values the server answers: loopback names, `host` itself and `allowed_hosts`."""
        hosts = list(LOOPBACK_HOSTS)
        listening = self.host.lower()
        try:
            address = ipaddress.ip_address(listening)
        except ValueError:
            address = None
        if address is not None and address.version == 6:
            listening = f"[{listening}]"
        if not (address is not None and address.is_unspecified):  # 0.0.0.0 / :: name no host
            hosts.append(listening)
        hosts += self.allowed_hosts
        return list(dict.fromkeys(hosts))

    @property
    def decode_memory_bytes(self) -> int:
        return self.max_decode_mb * MB

    def allowed_adapter_roots(self) -> list[Path]:
        """Resolved folders under which adapters may be loaded at run time (symlinks followed)."""
        roots = [Path(root) for root in self.adapter_roots]
        roots += [Path(path).expanduser().resolve().parent for path in self.adapters.values()]
        resolved = []
        for root in roots:
            root = root.expanduser().resolve()
            if root not in resolved:
                resolved.append(root)
        return resolved


def parse_adapter_args(values: list[str]) -> dict[str, str]:
    """`--adapter NAME=DIR` values (or a bare DIR, named after its folder) as {name: dir}."""
    adapters: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).name, value
        check_adapter_name(name)
        if name in adapters:
            raise ConfigError(f"--adapter {value}: the name {name!r} is given twice.")
        adapters[name] = path
    return adapters
