"""`ServerSettings`: every knob of `glmlab serve`, one typed dataclass.

Its fields become the CLI flags (`glmlab/cli/serve.py` builds the options from `fields(ServerSettings)`
and their `help` metadata), so the library and the command line cannot drift. Validation names the bad
field. Safety defaults follow llama-cpp-python's server: loopback only, an optional API key, explicit
limits on request size, image size, queue length and time.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from glmlab.errors import ConfigError
from glmlab.images import DEFAULT_MAX_INPUT_PIXELS
from glmlab.loading import DEFAULT_MODEL, DTYPES, QUANTIZE

DTYPE_NAMES = ("auto", *DTYPES)  # glmlab.loading's choices, checked when the server starts
QUANTIZE_NAMES = QUANTIZE
logger = logging.getLogger(__name__)

API_KEY_ENV = "GLMLAB_API_KEY"
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _option(default, help: str, **extra):
    """A dataclass field with the CLI help text (and optional flag name) in its metadata."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(metadata={"help": help, **extra}, **factory)


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
        "127.0.0.1", "Address to listen on (loopback by default; set --api-key before listening on others)."
    )
    port: int = _option(8080, "Port to listen on (0: any free port).")
    api_key: str | None = _option(
        None, f"Require 'Authorization: Bearer KEY' on all routes but /health (env {API_KEY_ENV})."
    )
    allow_urls: bool = _option(False, "Let requests reference http(s) images (data URLs are always allowed).")
    max_image_pixels: int | None = _option(
        None,
        "Largest image area the model sees after resizing (the latency lever; default: the checkpoint's).",
    )
    max_input_pixels: int = _option(
        DEFAULT_MAX_INPUT_PIXELS,
        "Refuse images larger than this many pixels before decoding them (decompression-bomb guard).",
    )
    max_request_bytes: int = _option(20 * 1024 * 1024, "Refuse request bodies larger than this (413).")
    max_concurrency: int = _option(8, "Requests queued plus running; beyond it requests get 429.")
    timeout_s: float = _option(
        300.0,
        "Seconds a request may wait and generate (prefill included) before 504.",
        flag="--timeout",
    )
    send_timeout_s: float = _option(
        30.0,
        "Seconds a streamed response waits for a client that reads nothing before dropping its stream "
        "(the model is freed as soon as it has generated, whatever the client reads).",
        flag="--send-timeout",
    )
    max_model_len: int | None = _option(
        None,
        "Most tokens of prompt plus max_tokens one request may use (default: the model's context); "
        "more is a 400 that says both numbers.",
    )
    dtype: str = _option("auto", " | ".join(DTYPE_NAMES) + ".")
    device: str = _option("auto", "auto | cpu | cuda | cuda:N.")
    quantize: str | None = _option(None, "None | 8bit | 4bit (bitsandbytes, CUDA only).")

    def __post_init__(self) -> None:
        if self.api_key is None and os.environ.get(API_KEY_ENV):
            self.api_key = os.environ[API_KEY_ENV]
        self.adapters = dict(self.adapters)
        self.adapter_roots = [str(root) for root in self.adapter_roots]
        checks = [
            ("port", 0 <= self.port <= 65535, "between 0 and 65535"),
            ("max_concurrency", self.max_concurrency >= 1, "at least 1"),
            ("max_request_bytes", self.max_request_bytes >= 1024, "at least 1024"),
            ("max_input_pixels", self.max_input_pixels >= 28 * 28, "at least 784"),
            ("timeout_s", self.timeout_s > 0, "greater than 0"),
            ("send_timeout_s", self.send_timeout_s > 0, "greater than 0"),
            ("max_model_len", self.max_model_len is None or self.max_model_len >= 1, "at least 1 (or unset)"),
            (
                "max_image_pixels",
                self.max_image_pixels is None or self.max_image_pixels >= 28 * 28,
                "at least 784 (or unset)",
            ),
            ("dtype", self.dtype in DTYPE_NAMES, " | ".join(DTYPE_NAMES)),
            ("quantize", self.quantize in (None, *QUANTIZE_NAMES), "unset, " + " or ".join(QUANTIZE_NAMES)),
        ]
        for name, valid, expected in checks:
            if not valid:
                raise ConfigError(f"ServerSettings.{name}={getattr(self, name)!r}: must be {expected}.")
        for name in self.adapters:
            check_adapter_name(name)
        if not is_loopback(self.host) and self.api_key is None:
            logger.warning(
                "serving on %s without an API key: anyone who can reach it can use the model; "
                "set --api-key (or %s).",
                self.host,
                API_KEY_ENV,
            )

    @property
    def base_model_name(self) -> str:
        """The `model` value that selects the base model (no adapter)."""
        return self.served_model_name or self.model

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


def check_adapter_name(name: str) -> str:
    """Adapter names travel in URLs and JSON: letters, digits, '.', '_' and '-', up to 64 characters."""
    if not ADAPTER_NAME.match(name or ""):
        raise ConfigError(
            f"adapter name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)."
        )
    return name


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
