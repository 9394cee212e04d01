"""`Batcher`: the server's one generation thread, running waiting requests together as rows of a batch.

Requests that arrive while a batch runs wait here and form the next batch (up to `max_batch_size`
rows, in arrival order, after waiting up to `gather_s` for requests still being decoded, skipping rows whose adapter cannot share the batch: `VLM.can_share_batch`).
`glmlab.rows` makes each row keep its own sampling, limits, stream and stop signal; this module only
decides which rows run together and when. Joining a batch that is already decoding is not done:
transformers' `generate` takes its batch once, at the start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from glmlab.rows import Row

logger = logging.getLogger(__name__)


class Batcher:
    """One daemon thread that takes waiting rows in batches and generates them (`VLM.generate_rows`)."""

    def __init__(
        self,
        get_vlm: Callable[[], Any],
        max_batch_size: int,
        on_batch: Callable[[list[Row]], None] | None = None,
        preparing: Callable[[], int] = lambda: 0,
        gather_s: float = 0.0,
    ) -> None:
        self.get_vlm = get_vlm
        self.max_batch_size = max_batch_size
        self.on_batch = on_batch
        self.preparing = preparing  # requests admitted but not queued yet (their images decoding)
        self.gather_s = gather_s
        self.waiting: list[Row] = []
        self.running: list[Row] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, rows: list[Row]) -> None:
        """Queue one request's rows (several for OpenAI's `n`); they run in the next batch with room."""
        with self._changed:
            self.waiting.extend(rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="glmlab-batcher")
                self._thread.start()
            self._changed.notify()

    def on_start(self, rows: list[Row], callback: Callable[[], None]) -> None:
        """Call `callback` (from the batcher's thread) when the first of `rows` starts; now if it has."""
        with self._changed:
            rows[0].add_start_callback(callback)

    def withdraw(self, rows: list[Row]) -> bool:
        """Take rows that have not started out of the queue; False when they already run."""
        with self._changed:
            if any(row.started.is_set() for row in rows):
                return False
            self.waiting = [row for row in self.waiting if all(row is not mine for mine in rows)]
            return True

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self.waiting:
                    self._changed.wait()
                self._gather()
                batch = self._next_batch()
                for row in batch:
                    row.mark_started()
                self.running = batch
            try:
                if self.on_batch is not None:
                    self.on_batch(batch)
                self.get_vlm().generate_rows(batch)
            except BaseException as error:  # the rows' readers see it; the thread serves on
                logger.exception("a batch of %d rows failed", len(batch))
                for row in batch:
                    if not row.stream.done:
                        row.stream.fail(error)
            finally:
                with self._changed:
                    self.running = []

    def poke(self) -> None:
        """Something the batcher waits on changed (a request stopped preparing without queueing)."""
        with self._changed:
            self._changed.notify()

    def _gather(self) -> None:
        """Before a batch starts, wait (at most `gather_s`) for requests that are admitted but still
        being read and decoded, so requests that arrive together run together; a lone request, with
        nothing else on its way, never waits. Called under the lock."""
        deadline = time.monotonic() + self.gather_s
        while len(self.waiting) < self.max_batch_size and self.preparing() > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.wait(left)

    def _next_batch(self) -> list[Row]:
        """The oldest waiting row and, in arrival order, the rows that may share its batch."""
        vlm = self.get_vlm()
        batch: list[Row] = []
        for row in self.waiting:
            if len(batch) == self.max_batch_size:
                break
            adapters = [member.request.adapter for member in batch] + [row.request.adapter]
            if not batch or vlm.can_share_batch(adapters):
                batch.append(row)
        self.waiting = [row for row in self.waiting if all(row is not member for member in batch)]
        return batch
