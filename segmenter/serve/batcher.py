"""Dynamic batching for the server: concurrent requests share one forward pass.

A request's documents wait in a queue; one background task takes everything queued (up to
``max_docs`` documents and ``max_units`` units), waiting at most ``wait_s`` after the
oldest arrival for company, and runs one ``Segmenter.predict`` for all of them in a
single worker thread. One thread, because the network is not meant to be called from
several threads at once and two cores gain nothing from it; while it runs, the event
loop keeps accepting and validating requests, which then form the next batch. Under
load the batch fills while the previous one runs, so the wait only matters when the
server is nearly idle.

The queue is bounded (``max_queue_docs``): past it a request is refused at once
(``Overloaded``, 503) rather than waiting behind a backlog it cannot beat. A request
that gives up (its time limit passed, its client left) is skipped if not yet started.
If a batch fails, its requests are retried one by one, so one document that breaks the
model fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from segmenter.core.bounds import Number

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full: the server is behind and refuses new work until it catches up."""


@dataclass
class _Job:
    docs: list[list[str]]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def units(self) -> int:
        return sum(len(d) for d in self.docs)


# The settings' bounds (segmenter.core.bounds; conf/serve.yaml's batching.* reach them here).
SIZE = Number(lo=1)  # max_docs, max_units, max_queue_docs
WAIT_S = Number(lo=0, hi=1, whole=False)


class MicroBatcher:
    """Collects the documents of concurrent ``submit`` calls into batches for ``predict``
    (``segmenter.inference.predict``: a list of documents of units -> one result per document).

    ``start`` and ``stop`` run inside the event loop that serves the requests (the app's
    lifespan); ``predict`` runs in the batcher's own worker thread."""

    def __init__(
        self,
        predict: Any,
        *,
        max_docs: int = 64,
        max_units: int = 4096,
        wait_s: float = 0.002,
        max_queue_docs: int = 1024,
    ) -> None:
        for name, value in (("max_docs", max_docs), ("max_units", max_units), ("max_queue_docs", max_queue_docs)):
            SIZE.check(name, value)
        WAIT_S.check("wait_s", wait_s)
        self.predict = predict
        self.max_docs, self.max_units, self.wait_s, self.max_queue_docs = max_docs, max_units, wait_s, max_queue_docs
        self._queue: deque[_Job] = deque()
        self._queued_docs = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches = 0  # forward passes run (for /health and the tests)
        self.docs_done = 0

    @property
    def queued_docs(self) -> int:
        return self._queued_docs

    # -- lifecycle (inside the serving event loop) ----------------------------------------
    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("MicroBatcher already started")
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmenter-predict")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="segmenter-batcher")

    async def stop(self) -> None:
        """Stop taking batches; requests still queued are refused (Overloaded), the batch
        running finishes in its thread."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(Overloaded("the server is shutting down"))
        self._queued_docs = 0
        self._executor.shutdown(wait=True)

    async def run_in_worker(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the predict thread (the start-up warm-up; nothing else may call
        the network concurrently)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- requests -------------------------------------------------------------------------
    async def submit(self, docs: Sequence[Sequence[str]]) -> list[Any]:
        """The predictions of ``docs`` (each a non-empty list of units), batched with
        whatever else is queued. Raises ``Overloaded`` when the queue is full. Cancelling
        the caller (a time limit) drops the job if it has not started."""
        if self._task is None:
            raise Overloaded("the server is not running (starting up or shutting down)")
        if self._queued_docs + len(docs) > self.max_queue_docs:
            raise Overloaded(
                f"{self._queued_docs} documents are already waiting (limit {self.max_queue_docs}); try again shortly"
            )
        job = _Job([list(d) for d in docs], asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_docs += len(job.docs)
        self._wakeup.set()
        return await job.future

    # -- the batching loop ----------------------------------------------------------------
    def _take(self) -> list[_Job]:
        """Jobs for one forward pass: oldest first, within max_docs and max_units (a job
        larger than that alone runs alone); jobs whose caller gave up are dropped."""
        batch: list[_Job] = []
        docs = units = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # timed out or cancelled while waiting
                self._queue.popleft()
                self._queued_docs -= len(job.docs)
                continue
            if batch and (docs + len(job.docs) > self.max_docs or units + job.units > self.max_units):
                break
            self._queue.popleft()
            self._queued_docs -= len(job.docs)
            batch.append(job)
            docs += len(job.docs)
            units += job.units
        return batch

    def _full(self) -> bool:
        return self._queued_docs >= self.max_docs or sum(j.units for j in self._queue) >= self.max_units

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._queue[0].arrived + self.wait_s - time.monotonic()
            if wait > 0 and not self._full():
                await asyncio.sleep(wait)
            batch = self._take()
            if not batch:
                continue
            error = await self._run(batch)
            if error is None:
                continue
            if len(batch) == 1:
                self._fail(batch[0], error)
                continue
            # Find the job that breaks the batch: the others still get answers.
            log.warning("a batch of %d requests failed (%s); running them one by one", len(batch), error)
            for job in batch:
                if not job.future.done() and (error := await self._run([job])) is not None:
                    self._fail(job, error)

    async def _run(self, jobs: list[_Job]) -> Exception | None:
        """One forward pass over the jobs' documents (in the predict thread); each job gets
        its share of the answers. The exception, if the pass failed (no job is answered)."""
        docs = [d for job in jobs for d in job.docs]
        try:
            preds = await asyncio.get_running_loop().run_in_executor(self._executor, self.predict, docs)
            if len(preds) != len(docs):
                raise RuntimeError(f"predict returned {len(preds)} results for {len(docs)} documents")
        except Exception as e:
            return e
        self.batches += 1
        self.docs_done += len(docs)
        i = 0
        for job in jobs:
            n = len(job.docs)
            if not job.future.done():
                job.future.set_result(preds[i : i + n])
            i += n
        return None

    @staticmethod
    def _fail(job: _Job, error: Exception) -> None:
        log.error("prediction failed for a request of %d documents", len(job.docs), exc_info=error)
        if not job.future.done():
            job.future.set_exception(error)
