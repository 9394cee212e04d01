"""`ModelHost`: the one model behind the server, and the rules for reaching it.

It loads the model in a background thread (the server answers 503 until it is ready), admits at most
`max_concurrency` requests (queued + running; more get 429), hands their rows to the `Batcher` (one
generation thread; requests that wait together run together) and guards run-time adapter loading: safetensors folders under the allowed
roots only, symlinks resolved, no `..`; each load (or replacement) is a transaction of `VLM.load_adapter`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from glmlab.adapters import check_adapter_folder, check_adapter_name
from glmlab.errors import AdapterError, GlmlabError
from glmlab.images import DecodeMemory, ImageBudget
from glmlab.rows import Row
from glmlab.serve.batcher import Batcher
from glmlab.serve.errors import APIError, model_not_found
from glmlab.serve.metrics import ServerMetrics
from glmlab.serve.rate_limits import RateLimits
from glmlab.serve.settings import ServerSettings

if TYPE_CHECKING:  # annotations only: no import of the model at run time
    from glmlab.model import VLM

logger = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
DECODE_WAIT_S = 5.0  # how long a request waits for decode memory other requests' images hold (then 503)


class Ticket:
    """One admitted request: holds a queue place, its images' decode memory, then its rows (one per
    choice) while they wait for and run in a batch (`glmlab.serve.batcher`).

    `end_generation` marks the model done with the request (a slow client still reading its stream
    does not count as running); `close` frees whatever the ticket still holds.
    """

    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.rows: list[Row] = []
        self.prepared = False
        self.generating = False
        self.sending = False  # generated, its response still being sent
        self.closed = False
        self.images = host.image_budget()

    async def start_generation(self, rows: list[Row], deadline: float) -> None:
        """Queue the rows for the next batch with room and wait (cancellably) until it starts.

        Raises APIError 429 (with Retry-After) after --max-queue-wait, 504 at the request's deadline;
        either way the rows leave the queue.
        """
        host = self.host
        self.rows = rows
        self._prepared()
        host.batcher.submit(rows)
        left, limit = deadline - anyio.current_time(), host.settings.max_queue_wait_s
        started = await wait_for_thread_event(
            lambda done: host.batcher.on_start(rows, done), min(left, limit)
        )
        if not started and host.batcher.withdraw(rows):
            if left <= limit:
                raise APIError(
                    504,
                    "the request timed out while waiting in the queue (the server's limit is set with "
                    "--timeout); ask for fewer tokens or retry when the server is less busy.",
                    code="timeout",
                )
            raise APIError(
                429,
                f"the server is busy: the request waited {limit:g} s (--max-queue-wait) without a place "
                "in a batch; retry later.",
                code="queue_timeout",
                headers={"Retry-After": "5"},
            )
        self.generating = True
        host.running += 1

    async def finish_generation(self) -> None:
        """Stop the rows (a no-op once finished; a prefill stops between two layers), wait until the
        model is done with them, then count the request as generated."""
        for row in self.rows:
            row.stream.stop()
        if self.rows and not self.host.batcher.withdraw(self.rows):
            with anyio.CancelScope(shield=True):
                for row in self.rows:
                    await wait_for_thread_event(row.stream.add_done_callback)
        self.end_generation()

    def end_generation(self) -> None:
        """The model is done with this request (its response may still be sending)."""
        if self.generating:
            self.generating = False
            self.host.running -= 1
            self.sending = True
            self.host.sending += 1

    def _prepared(self) -> None:
        """The request is read and decoded (queued, or failed): the batcher no longer waits for it."""
        if not self.prepared:
            self.prepared = True
            self.host.preparing -= 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.prepared:
            self._prepared()
            self.host.batcher.poke()
        for row in self.rows:  # rows still queued (an error before they started) leave the queue
            row.stream.stop()
        if self.rows:
            self.host.batcher.withdraw(self.rows)
        self.end_generation()
        self.images.release()
        self.host.admitted -= 1
        if self.sending:
            self.sending = False
            self.host.sending -= 1


async def wait_for_thread_event(
    register: Callable[[Callable[[], None]], None], timeout_s: float | None = None
) -> bool:
    """Wait on the event loop, holding no worker thread, until another thread calls the callback that
    `register` hands over; False when `timeout_s` passes first."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    register(lambda: loop.call_soon_threadsafe(event.set))
    with anyio.move_on_after(timeout_s if timeout_s is not None else math.inf):
        await event.wait()
        return True
    return False


class ModelHost:
    """The served VLM, its loading state, the request queue and the adapter rules."""

    def __init__(self, settings: ServerSettings, vlm: VLM | None = None) -> None:
        self.settings = settings
        self.vlm = vlm
        self.load_error: str | None = None
        self.ready = threading.Event()
        self.admitted = 0  # queued + running + sending; only touched on the event loop
        self.running = 0
        self.sending = 0
        self.decode_memory = DecodeMemory(settings.decode_memory_bytes)  # shared by all requests
        self.metrics = ServerMetrics(self)  # GET /metrics; the batcher reports batches, the app answers
        self.preparing = 0  # admitted, not queued yet (reading and decoding); only touched on the event loop
        self.batcher = Batcher(
            lambda: self.vlm,
            settings.max_batch_size,
            on_batch=lambda rows: self.metrics.observe_batch(len(rows)),
            preparing=lambda: self.preparing,
            gather_s=settings.batch_gather_s,
        )
        self.rate_limits = RateLimits(
            settings.rate_limit_rpm, settings.rate_limit_tpm, by_api_key=settings.api_key is not None
        )  # checked at admission; the scheduler charges each finished request's tokens
        if vlm is not None:
            self._load_start_adapters(vlm)
            self.ready.set()

    # ---- loading -------------------------------------------------------------------------------

    def start_loading(self, loader: Callable[..., Any]) -> None:
        """Load the model in a background thread so the server can answer (503) meanwhile."""
        threading.Thread(target=self._load, args=(loader,), daemon=True, name="glmlab-serve-load").start()

    def _load(self, loader: Callable[..., Any]) -> None:
        settings = self.settings
        try:
            vlm = loader(
                settings.model,
                dtype=settings.dtype,
                device=settings.device,
                quantize=settings.quantize,
                max_image_pixels=settings.max_image_pixels,
                allow_urls=settings.allow_urls,
            )
            self._load_start_adapters(vlm)
            self.vlm = vlm
            logger.info(
                "serving %s as %r with adapters %s", vlm, settings.base_model_name, list(vlm.adapters)
            )
        except Exception as error:  # reported by /health and every 503 until restarted
            self.load_error = f"{type(error).__name__}: {error}"
            logger.error("the model could not be loaded: %s", self.load_error)
        finally:
            self.ready.set()

    def _load_start_adapters(self, vlm: VLM) -> None:
        for name, path in self.settings.adapters.items():
            if vlm.adapters.get(name) != str(Path(path).expanduser()):
                vlm.load_adapter(Path(path).expanduser(), name, activate=False)

    def require_ready(self) -> Any:
        """The VLM, or 503 while it loads (or after it failed to)."""
        if self.load_error is not None:
            raise APIError(
                503,
                f"the model failed to load ({self.load_error}); fix it and restart the server.",
                code="model_load_failed",
            )
        if not self.ready.is_set() or self.vlm is None:
            raise APIError(
                503,
                f"the model {self.settings.model!r} is still loading; retry shortly.",
                code="model_loading",
                headers={"Retry-After": "2"},
            )
        return self.vlm

    # ---- requests ------------------------------------------------------------------------------

    def admit(self) -> Ticket:
        """A queue place for one request, or 429 when max_concurrency requests are already in."""
        self.require_ready()
        if self.admitted >= self.settings.max_concurrency:
            raise APIError(
                429,
                f"the server is busy: {self.admitted} requests are queued or running (limit "
                f"{self.settings.max_concurrency}, --max-concurrency); retry later.",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        self.admitted += 1
        self.preparing += 1
        return Ticket(self)

    def image_budget(self) -> ImageBudget:
        """One request's image allowance (settings max_images, max_request_pixels), its decodes
        admitted against the host's decode memory, waiting up to DECODE_WAIT_S for it."""
        settings = self.settings
        return ImageBudget(
            max_images=settings.max_images,
            max_pixels=settings.max_request_pixels,
            memory=self.decode_memory,
            wait_s=DECODE_WAIT_S,
        )

    @property
    def base_name(self) -> str:
        return self.settings.base_model_name

    def model_names(self) -> list[str]:
        vlm = self.require_ready()
        return [self.base_name, *vlm.adapters]

    def resolve_model(self, name: str | None) -> str | None:
        """The adapter a request's `model` selects: None for the base model; 404 if unknown."""
        vlm = self.require_ready()
        if name is None or name == self.base_name:
            return None
        if name in vlm.adapters:
            return name
        raise model_not_found(name, self.model_names())

    # ---- adapters at run time ------------------------------------------------------------------

    def load_adapter(self, name: str, path: str, *, replace: bool = False) -> str:
        """Load a LoRA adapter (blocking: call it from a worker thread). Raises APIError 400."""
        vlm = self.require_ready()
        try:
            check_adapter_name(name)
        except GlmlabError as error:
            raise APIError(400, str(error), code="invalid_adapter_name", param="lora_name") from None
        if name == self.base_name:
            raise APIError(
                400,
                f"{name!r} is the base model's name; choose another adapter name.",
                code="adapter_exists",
                param="lora_name",
            )
        folder = self.checked_adapter_path(path)
        if name in vlm.adapters and not replace:
            raise APIError(
                400,
                f"an adapter named {name!r} is already loaded; unload it first "
                "(POST /v1/unload_lora_adapter) or pass load_inplace=true.",
                code="adapter_exists",
                param="lora_name",
            )
        try:  # a transaction: a failed load (or replacement) leaves every adapter as it was
            vlm.load_adapter(folder, name, activate=False, replace=replace)
        except AdapterError as error:
            reason = str(error).removeprefix(f"{folder}: ")
            raise APIError(
                400, f"lora_path {path!r}: {reason}", code="invalid_adapter", param="lora_path"
            ) from None
        logger.info("loaded adapter %r from %s", name, folder)
        return name

    def unload_adapter(self, name: str) -> None:
        vlm = self.require_ready()
        if name not in vlm.adapters:
            raise APIError(
                404,
                f"no adapter named {name!r} is loaded (loaded: {', '.join(vlm.adapters) or 'none'}).",
                code="adapter_not_found",
                param="lora_name",
            )
        vlm.unload_adapter(name)
        logger.info("unloaded adapter %r", name)

    def checked_adapter_path(self, path: str) -> Path:
        """An adapter folder a client may load: absolute, no `..`, under an allowed root once resolved,
        holding safetensors weights (`check_adapter_folder` refuses pickles)."""

        if "\x00" in path:
            raise APIError(
                400, f"lora_path {path!r}: contains a NUL byte.", code="invalid_path", param="lora_path"
            )
        raw = Path(path)
        if ".." in raw.parts:
            raise APIError(
                400, f"lora_path {path!r}: must not contain '..'.", code="invalid_path", param="lora_path"
            )
        if not raw.is_absolute():
            raise APIError(
                400, f"lora_path {path!r}: must be an absolute path.", code="invalid_path", param="lora_path"
            )
        folder = raw.resolve()
        targets = [folder] + [(folder / name).resolve() for name in ADAPTER_FILES if (folder / name).exists()]
        roots = self.settings.allowed_adapter_roots()
        if not roots or not all(any(target.is_relative_to(root) for root in roots) for target in targets):
            raise APIError(
                400,
                f"lora_path {path!r}: is outside the folders this server loads adapters from "
                "(start it with --adapter-root DIR to allow one).",
                code="path_not_allowed",
                param="lora_path",
            )
        try:
            check_adapter_folder(folder)
        except GlmlabError as error:
            raise APIError(
                400,
                f"lora_path {path!r}: {str(error).removeprefix(str(folder) + ': ')}",
                code="invalid_adapter",
                param="lora_path",
            ) from None
        return folder
