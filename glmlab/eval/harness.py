"""`evaluate(suite, model)`: ask a suite's questions, score the answers, time them, keep every row.

The model is a local `VLM` (with or without a LoRA adapter) or a client of a glmlab / OpenAI-style
server with the same `ask`/`chat`/`chat_stream` API. How questions reach it is the one thing that
differs, and `_answers` hides it: a local model gets `vlm.batch` (8 samples per call by default:
throughput is what an evaluation wants; batch_size=1 asks one at a time, for per-request latency), a server gets `concurrency` requests in flight from a thread pool, each streamed so its
time to first token is measured the way `vllm bench serve` measures it.

Everything that can be wrong with the suite (a field, the data, a template placeholder, a metric
option) is found before the first model call. Each finished sample is scored and appended to the
run folder's samples.jsonl at once, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
import platform
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from glmlab.errors import ConfigError, GlmlabError, InputError
from glmlab.eval.extract import final_text
from glmlab.eval.latency import MemoryProbe, sample_timing
from glmlab.eval.run import (
    CONFIG_FILE,
    SAMPLES_FILE,
    THUMBNAIL_DIR,
    EvalRun,
    SampleLog,
    json_row,
    read_config,
    read_samples,
    samples_frame,
    write_json,
)
from glmlab.eval.samples import EvalSample, SampleSet, load_samples
from glmlab.eval.scoring import score_answer
from glmlab.eval.suite import Suite
from glmlab.files import atomic_write
from glmlab.images import encode_png
from glmlab.interface import DEFAULT_ADAPTER, AdapterChoice, LocalModel, Model

logger = logging.getLogger(__name__)

__all__ = ["evaluate"]

THUMBNAIL_PX = 160
DEFAULT_BATCH_SIZE = 8  # local models; see benchmark 3 in eval/bench/RESULTS.md
# config.json keys that must match for a run folder to be resumed (limit and speed settings may change).
_RESUME_KEYS = ("suite", "model")


def evaluate(
    suite: Suite | str | Path,
    model: Model,
    *,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = 4,
    run_dir: str | Path | None = None,
    resume: bool = True,
    adapter: AdapterChoice = DEFAULT_ADAPTER,
    name: str | None = None,
    on_sample: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    max_thumbnails: int = 24,
) -> EvalRun:
    """Evaluate `model` on `suite` and return the `EvalRun` (rows, summary, latency).

    suite: a `Suite`, the path of a suite YAML, or the suite's fields as a dict.
    model: a local `glmlab.VLM`, or a client with the same API (`glmlab.Client`).
    limit: evaluate only the first `limit` samples (generators then generate only that many).
    batch_size: local models: samples per `vlm.batch` call (default 8; 1: one `ask` at a time, which
        measures per-request latency). Batched samples share their batch's TTFT and latency (see
        `glmlab.eval.latency`).
    concurrency: servers: requests in flight at once.
    run_dir: folder for samples.jsonl, config.json, summary.json and figures; None keeps the run in
        memory (`run.save(path)` writes it later).
    resume: with a run_dir that already holds samples of the same suite and model, skip them and
        run only the rest; False refuses such a folder instead of mixing runs.
    adapter: the adapter to evaluate by name (None: the base model); default the model's active one.
        For a client: any model or adapter name its server answers to (default: the client's model).
    name: the run's label in tables and plots (default: the model name, plus the adapter).
    on_sample: called with each finished row (after it is on disk), e.g. for live monitoring.
    max_thumbnails: wrong samples whose first image is kept as a thumbnail for the report.
    """
    suite = _as_suite(suite)
    _check_speed_settings(batch_size, concurrency)
    sample_set = load_samples(suite, limit)
    local = _is_local(model)
    gen = _call_options(suite, model, local, adapter)
    config = run_config(suite, model, local, adapter, name, limit, batch_size, concurrency)
    folder = _open_run_dir(Path(run_dir), config, resume) if run_dir is not None else None
    done = {row["id"]: row for row in read_samples(folder / SAMPLES_FILE)} if folder else {}
    pending = [sample for sample in sample_set.samples if sample.id not in done]
    if done:
        logger.info(
            "%s: resuming; %d of %d samples already done",
            folder,
            len(sample_set.samples) - len(pending),
            len(sample_set.samples),
        )
    probe = MemoryProbe(local)
    session = 1 + max((row.get("session", 0) for row in done.values()), default=0)
    kept = sum(bool(row.get("thumbnail")) for row in done.values())
    with _RowWriter(sample_set, folder, max(0, max_thumbnails - kept), on_sample) as writer:
        for sample, answer, timing in _answers(
            model, sample_set, pending, gen, local, batch_size, concurrency, progress
        ):
            writer.add(sample, _row(suite, sample, answer, timing, probe, session))
    rows = {**done, **writer.rows}
    wanted = [rows[sample.id] for sample in sample_set.samples]
    if len(rows) > len(wanted):
        logger.warning(
            "%s holds %d samples; this run (limit %s) reports %d", folder, len(rows), limit, len(wanted)
        )
    run = EvalRun(
        samples_frame(wanted), config, folder, _stored_thumbnails(folder, wanted, writer.thumbnails)
    )
    if folder:
        run.write_summary(folder)
    return run


class _RowWriter:
    """Keeps each finished row: thumbnail (if wrong), samples.jsonl (fsynced), then the callback."""

    def __init__(
        self, sample_set: SampleSet, folder: Path | None, thumbnails_left: int, on_sample: Any
    ) -> None:
        self.sample_set, self.folder, self.thumbnails_left = sample_set, folder, thumbnails_left
        self.on_sample = on_sample
        self.rows: dict[str, dict[str, Any]] = {}
        self.thumbnails: dict[str, bytes] = {}
        self.log = SampleLog(folder / SAMPLES_FILE) if folder else None

    def add(self, sample: EvalSample, row: dict[str, Any]) -> None:
        first_metric = self.sample_set.suite.metrics[0].name
        if self.thumbnails_left > 0 and row[first_metric] < 1.0:
            picture = _thumbnail(self.sample_set, sample)
            if picture is not None:
                row["thumbnail"], self.thumbnails[picture[0]] = picture
                self.thumbnails_left -= 1
                if self.folder:
                    (self.folder / THUMBNAIL_DIR).mkdir(exist_ok=True)
                    atomic_write(self.folder / THUMBNAIL_DIR / picture[0], picture[1])
        self.rows[sample.id] = self.log.append(row) if self.log else json_row(row)
        if self.on_sample is not None:
            self.on_sample(self.rows[sample.id])

    def __enter__(self) -> _RowWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.log:
            self.log.close()


def _as_suite(suite: Any) -> Suite:
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, Mapping):
        return Suite.from_dict(suite)
    return Suite.from_yaml(suite)


# ---- asking -------------------------------------------------------------------------------------

Timed = tuple[EvalSample, Any, dict[str, Any]]


def _answers(
    model: Model,
    sample_set: SampleSet,
    pending: list[EvalSample],
    gen: dict[str, Any],
    local: bool,
    batch_size: int,
    concurrency: int,
    progress: bool,
) -> Iterator[Timed]:
    """(sample, answer, timing columns) for each pending sample, as each finishes."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), desc=f"eval {sample_set.suite.name}", disable=not progress, unit="sample")
    if not local:
        source = _remote_answers(model, sample_set, pending, gen, concurrency)
    elif batch_size > 1 and isinstance(model, LocalModel):
        source = _batched_answers(model, sample_set, pending, gen, batch_size)
    else:
        source = _local_answers(model, sample_set, pending, gen)
    with bar:
        for timed in source:
            bar.update(1)
            yield timed


def _local_answers(
    model: LocalModel, sample_set: SampleSet, pending: list[EvalSample], gen: dict
) -> Iterator[Timed]:
    for sample in pending:
        item = sample_set.item(sample)
        start = time.perf_counter()
        answer = _guarded(lambda item=item: _call(model, item, gen))
        end = time.perf_counter()
        yield sample, answer, {**sample_timing(answer, start, end), "batch_size": 1, **_wall(start, end)}


def _batched_answers(
    model: LocalModel, sample_set: SampleSet, pending: list[EvalSample], gen: dict, batch_size: int
) -> Iterator[Timed]:
    for first in range(0, len(pending), batch_size):
        chunk = pending[first : first + batch_size]
        items = [sample_set.item(sample) for sample in chunk]
        start = time.perf_counter()
        answers = model.batch(items, batch_size=batch_size, **gen)
        end = time.perf_counter()
        for sample, answer in zip(chunk, answers, strict=True):
            timing = {**sample_timing(answer, start, end), "batch_size": len(chunk), **_wall(start, end)}
            yield sample, answer, timing


def _remote_answers(
    model: Model, sample_set: SampleSet, pending: list[EvalSample], gen: dict, concurrency: int
) -> Iterator[Timed]:
    """Up to `concurrency` requests in flight; images are loaded only as each request is sent."""

    def work(sample: EvalSample) -> Timed:
        item = sample_set.item(sample)
        start = time.perf_counter()
        answer, first_piece = _streamed_call(model, item, gen)
        end = time.perf_counter()
        timing = {**sample_timing(answer, start, end, first_piece), "batch_size": 1, **_wall(start, end)}
        return sample, answer, timing

    pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="glmlab-eval")
    try:  # the pool runs `concurrency` at a time; the rest wait unstarted (their images unloaded)
        futures = [pool.submit(work, sample) for sample in pending]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _call(model: Model, item: dict[str, Any], gen: dict[str, Any]) -> Any:
    if "messages" in item:
        return model.chat(item["messages"], **gen)
    return model.ask(item["images"], item["question"], system=item["system"], **gen)


def _streamed_call(model: Model, item: dict[str, Any], gen: dict[str, Any]) -> tuple[Any, float | None]:
    """A server call, streamed when the client can (to time the first piece), else a plain call."""
    if not isinstance(model, Model):
        return _guarded(lambda: _call(model, item, gen)), None
    messages = item.get("messages")
    if messages is None:
        from glmlab.prompts import question_messages

        messages = question_messages(item["images"], item["question"], item["system"])
    first_piece = None
    try:
        stream = model.chat_stream(messages, **gen)
        for piece in stream:
            if first_piece is None and piece:
                first_piece = time.perf_counter()
        return stream.answer, first_piece
    except GlmlabError as error:
        if not sample_level(error):
            raise
        return _failed(error), None


def _guarded(call: Callable[[], Any]) -> Any:
    """A sample-level failure (bad image, refused request) becomes an error answer; others propagate."""
    try:
        return call()
    except GlmlabError as error:
        if not sample_level(error):
            raise
        return _failed(error)


def sample_level(error: Exception) -> bool:
    """Whether a failure belongs to one sample (recorded, scored 0) or to the run (raised, resumable).

    A bad input (InputError) or a server's 4xx refusal of one request is the sample's; an unreachable
    server, 5xx, rate limits, auth and unknown models would fail every sample, so the run stops and
    resuming later redoes exactly the samples that did not finish.
    """
    status = getattr(error, "status", None)
    if hasattr(error, "status"):
        return status is not None and 400 <= status < 500 and status not in (401, 403, 404, 408, 429)
    return isinstance(error, InputError)


def _failed(error: Exception) -> Any:
    from glmlab.answer import Answer

    return Answer(text="", finish_reason="error", error=f"{type(error).__name__}: {error}")


def _wall(start: float, end: float) -> dict[str, float]:
    """Epoch times of a call (perf_counter is monotonic but has no epoch; shift it once)."""
    offset = time.time() - time.perf_counter()
    return {"started_at": start + offset, "finished_at": end + offset}


# ---- rows ---------------------------------------------------------------------------------------


def _row(
    suite: Suite, sample: EvalSample, answer: Any, timing: dict, probe: MemoryProbe, session: int
) -> dict:
    error = getattr(answer, "error", None)
    raw = "" if error else answer.raw
    extracted, scores = score_answer(suite, raw, sample.references, sample.options)
    return {
        "id": sample.id,
        "index": sample.index,
        "question": sample.question,
        "references": sample.references,
        "options": sample.options,
        "raw": raw,
        "prediction": final_text(raw),
        "thinking": answer.thinking,
        "extracted": extracted,
        **scores,
        **sample.kept,
        "error": error,
        "finish_reason": answer.finish_reason,
        **timing,
        "peak_memory_bytes": probe.peak_bytes(),
        "session": session,
        "thumbnail": None,
    }


def _thumbnail(sample_set: SampleSet, sample: EvalSample) -> tuple[str, bytes] | None:
    """(file name, PNG bytes) of a small copy of the sample's first image; None if it has none."""
    images = sample_set.images(sample)
    if not images:
        return None
    image = images[0].convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample.id) + ".png", encode_png(image)


def _stored_thumbnails(folder: Path | None, rows: list[dict], new: dict[str, bytes]) -> dict[str, bytes]:
    names = [row["thumbnail"] for row in rows if row.get("thumbnail")]
    if folder is None:
        return {name: new[name] for name in names if name in new}
    return {
        name: (folder / THUMBNAIL_DIR / name).read_bytes()
        for name in names
        if (folder / THUMBNAIL_DIR / name).is_file()
    }


# ---- model and settings -------------------------------------------------------------------------


def _is_local(model: Model) -> bool:
    """A local VLM prepares its own prompts; a client sends them to a server."""
    return isinstance(model, LocalModel)


def _check_speed_settings(batch_size: int, concurrency: int) -> None:
    for name, value in (("batch_size", batch_size), ("concurrency", concurrency)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r}: expected an integer >= 1.")


def _call_options(suite: Suite, model: Model, local: bool, adapter: AdapterChoice) -> dict[str, Any]:
    """Keyword arguments of every model call; a local model's adapter is checked now, before any call."""
    gen = {
        key: value
        for key, value in suite.generation_settings().items()
        if value is not None or key == "thinking"
    }
    if local:  # the generation values were checked with the suite (suite_problems)
        if adapter is not DEFAULT_ADAPTER:
            if adapter is not None and adapter not in model.adapters:
                loaded = ", ".join(model.adapters) or "none"
                raise ConfigError(f"adapter={adapter!r}: not loaded on this model (loaded: {loaded}).")
            gen["adapter"] = adapter
    elif adapter is not DEFAULT_ADAPTER:
        gen["adapter"] = adapter  # any model or adapter name the server answers to
    return gen


def describe_model(model: Model, local: bool, adapter: AdapterChoice) -> dict[str, Any]:
    """What config.json records about the model under evaluation."""
    if not local:
        return {
            "kind": "server",
            "name": str(getattr(model, "model", None) or "server"),  # a client's default model name
            "base_url": str(getattr(model, "base_url", "")) or None,
            "adapter": None if adapter is DEFAULT_ADAPTER else adapter,
        }
    active = model.active_adapter if adapter is DEFAULT_ADAPTER else adapter
    return {
        "kind": "local",
        "name": model.name,
        "source": model.source,
        "adapter": active,
        "adapter_path": model.adapters.get(active) if active else None,
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
        "quantized": getattr(model, "quantized", None),
        "max_image_pixels": model.max_image_pixels,
    }


def run_config(
    suite: Suite,
    model: Model,
    local: bool,
    adapter: AdapterChoice,
    name: str | None,
    limit: int | None,
    batch_size: int,
    concurrency: int,
) -> dict[str, Any]:
    """config.json: suite, model, run settings, library versions and the git commit of glmlab."""
    described = describe_model(model, local, adapter)
    label = name or described["name"] + (f"+{described['adapter']}" if described["adapter"] else "")
    pixels = suite.generation.get("max_image_pixels") or described.get("max_image_pixels")
    return {
        "name": label,
        "suite": suite.to_dict(),
        "model": described,
        "settings": {
            "limit": limit,
            "batch_size": batch_size if local else 1,
            "concurrency": 1 if local else concurrency,
            "max_image_pixels": pixels,
            "thinking": suite.prompt.thinking,
            "generation": suite.generation,
            "dtype": described.get("dtype"),
            "device": described.get("device", "server"),
            "memory": MemoryProbe._kind(local),
        },
        "versions": _versions(),
        "git": _git_state(),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _open_run_dir(folder: Path, config: dict[str, Any], resume: bool) -> Path:
    """Create the run folder, or check that the run it holds is this one before resuming it."""
    existing = folder / CONFIG_FILE
    has_rows = bool(read_samples(folder / SAMPLES_FILE))
    if existing.is_file() and has_rows:
        if not resume:
            raise ConfigError(
                f"run_dir {folder}: already holds samples of a run. Pass resume=True (CLI: --resume) to "
                "continue it, or choose another folder."
            )
        previous = read_config(existing)
        changed = [key for key in _RESUME_KEYS if json_row(previous.get(key, {})) != json_row(config[key])]
        if changed:
            raise ConfigError(
                f"run_dir {folder}: holds a run with a different {' and '.join(changed)}; resuming would "
                "mix two runs. Choose another run_dir."
            )
        config["created_at"] = previous.get("created_at", config["created_at"])
    folder.mkdir(parents=True, exist_ok=True)
    write_json(existing, config)
    return folder


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("glmlab", "torch", "transformers", "peft", "datasets", "pandas", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _git_state() -> dict[str, Any]:
    """The commit of the glmlab checkout (None outside a git checkout) and whether it has edits."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}
