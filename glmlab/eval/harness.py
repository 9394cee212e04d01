"""`evaluate(suite, model)`: ask a suite's questions, score the answers, time them, keep every row.

The model is a local `VLM` (with or without a LoRA adapter) or a client of a glmlab / OpenAI-style
server with the same `ask`/`chat`/`chat_stream` API. How questions reach it is the one thing that
differs, and `_answers` hides it: a local model gets `vlm.batch` (8 samples per call by default:
throughput is what an evaluation wants; batch_size=1 asks one at a time, for per-request latency),
a server gets `concurrency` requests in flight from a thread pool, each streamed so its time to first token is measured the way `vllm bench serve` measures it.

Everything that can be wrong with the suite (a field, the data, a template placeholder, a metric
option) is found before the first model call. Each finished sample is scored and appended to the
run folder's samples.jsonl at once (`glmlab.eval.run_folder`), so an interrupted run resumes where it
stopped; what config.json records about the run comes from `glmlab.eval.provenance`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from glmlab.errors import ConfigError, GlmlabError, InputError
from glmlab.eval.extract import final_text
from glmlab.eval.latency import MemoryProbe, batch_timing, sample_timing
from glmlab.eval.provenance import run_config
from glmlab.eval.run import (
    SAMPLES_FILE,
    EvalRun,
    read_samples,
    samples_frame,
)
from glmlab.eval.run_folder import RowWriter, open_run_dir, stored_thumbnails
from glmlab.eval.samples import EvalSample, SampleSet, load_samples
from glmlab.eval.scoring import score_answer
from glmlab.eval.suite import Suite
from glmlab.interface import DEFAULT_ADAPTER, AdapterChoice, LocalModel, Model

logger = logging.getLogger(__name__)

__all__ = ["evaluate"]

DEFAULT_BATCH_SIZE = 8  # local models; see benchmark 3 in eval/bench/RESULTS.md


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
    folder = open_run_dir(Path(run_dir), config, resume) if run_dir is not None else None
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
    with RowWriter(sample_set, folder, max(0, max_thumbnails - kept), on_sample) as writer:
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
    run = EvalRun(samples_frame(wanted), config, folder, stored_thumbnails(folder, wanted, writer.thumbnails))
    if folder:
        run.write_summary(folder)
    return run


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
        for sample, answer, timing in zip(chunk, answers, batch_timing(answers, start, end), strict=True):
            yield sample, answer, {**timing, "batch_size": len(chunk), **_wall(start, end)}


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
