"""Dynamic batching: one queue per model, and requests that arrive together run as one batch.

A request becomes a `Job`. Jobs with the same `key` (the settings a batch must share, such as the
beam size or the sampling parameters) may run together; a job with key None always runs alone.
The queue's worker takes the oldest job, waits `batch_wait` seconds for others to join it, then
runs every waiting job with that key, up to `max_batch` rows, as one call of `run` in the model
thread. Batching is exact: a padded row decodes as it would alone (tests/test_properties.py).

By default one thread runs every model (torch already spreads one product over the cores), so
batches queue for it in turn. With `--workers N`, N batches of a model may run at once in N
threads: a request that arrives during a batch starts its own instead of waiting for that one to
end (each batch then gets fewer cores; the decoding loops share the model's weights read-only). A full queue refuses new jobs (429), and a job whose
client left or whose time ran out is skipped, or ended at its next token (`cancelled`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from nanoformer.serve.errors import APIError
from nanoformer.serve.metrics import Metrics


@dataclass
class Job:
    key: Hashable | None  # jobs with equal keys may share a batch; None: alone
    rows: int  # batch rows this job fills
    payload: Any
    deadline: float  # time.monotonic() after which the job is given up
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    on_piece: Callable[[int, str], None] | None = None  # streaming: (row, text), called from the model thread
    cancelled: bool = False  # set when the client leaves or time runs out: the batch drops the job

    def given_up(self) -> bool:
        return self.cancelled or time.monotonic() > self.deadline


class ModelQueue:
    """The jobs waiting for one model, and the worker that runs them in batches."""

    def __init__(self, name: str, run: Callable[[list[Job]], list[Any]], executor: Executor, metrics: Metrics,
                 max_queue: int, max_batch: int, batch_wait: float, workers: int = 1) -> None:
        self.name = name
        self.run = run
        self.executor = executor
        self.metrics = metrics
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_wait = batch_wait
        self.workers = workers  # batches of this model that may run at once
        self.pending: deque[Job] = deque()
        self.arrived = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.closing = False  # set by `stop`: a stepping loop takes no more jobs
        self.stepping: Callable[[], None] | None = None  # continuous batching (continuous.py): the model thread's loop

    def submit(self, job: Job) -> Job:
        if len(self.pending) >= self.max_queue:
            raise APIError(429, f"model {self.name!r} has {len(self.pending)} requests waiting, its limit; "
                            "retry after a second", code="queue_full", headers={"Retry-After": "1"})
        self.pending.append(job)
        self.metrics.queue_depth.labels(self.name).set(len(self.pending))
        self.arrived.set()
        return job

    def start(self, stepping: Callable[[], None] | None = None) -> None:
        """Start taking jobs: in batches per call, or, given `stepping`, through that loop (continuous.py)."""
        self.stepping = stepping
        work = self.work() if stepping is None else self.work_stepping()
        self.task = asyncio.get_running_loop().create_task(work, name=f"batcher:{self.name}")

    async def work_stepping(self) -> None:
        """Run the stepping loop in the model thread whenever jobs wait; it takes them from `pending` itself
        (a deque: this thread appends, that one pops, each atomically). An idle model waits `batch_wait`
        for requests arriving together to take their first step together; a busy one takes them in at
        its next step."""
        while True:
            while not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
            first = self.pending[0]
            if first.key is not None and self.batch_wait > 0 and first.rows < self.max_batch:
                await asyncio.sleep(self.batch_wait)
            await asyncio.get_running_loop().run_in_executor(self.executor, self.stepping)

    async def stop(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for job in self.pending:
            if not job.future.done():
                job.future.set_exception(APIError(503, "the server is shutting down", code="shutting_down"))

    async def work(self) -> None:
        """Take batches while fewer than `workers` run; each runs in the model thread pool."""
        running: set[asyncio.Task] = set()
        while True:
            running = {task for task in running if not task.done()}
            while not self.pending or len(running) >= self.workers:
                self.arrived.clear()
                if running and len(running) >= self.workers:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    running = {task for task in running if not task.done()}
                    continue
                await self.arrived.wait()
            first = self.pending[0]
            if first.key is not None and self.batch_wait > 0 and first.rows < self.max_batch:
                await asyncio.sleep(self.batch_wait)  # let requests arriving together join this one
            batch = self.take_batch()
            self.metrics.queue_depth.labels(self.name).set(len(self.pending))
            live = [job for job in batch if not job.given_up()]
            for job in batch:
                if job.given_up() and not job.future.done():
                    job.future.set_exception(APIError(504, "the request was given up before it ran", code="timeout"))
            if live:
                running.add(asyncio.get_running_loop().create_task(self.run_batch(live)))

    async def run_batch(self, live: list[Job]) -> None:
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, live)
        except Exception as error:  # noqa: BLE001 - answered to each job of the batch
            for job in live:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        finally:
            self.metrics.batch_seconds.labels(self.name).observe(time.perf_counter() - started)
        self.metrics.batches.labels(self.name).inc()
        self.metrics.jobs.labels(self.name).inc(len(live))
        self.metrics.batch_rows.labels(self.name).observe(sum(job.rows for job in live))
        for job, result in zip(live, results):
            if not job.future.done():
                job.future.set_result(result)

    def take_batch(self) -> list[Job]:
        """The oldest job and every later one with its key, within max_batch rows (always at least one)."""
        first = self.pending.popleft()
        batch, rows = [first], first.rows
        if first.key is None:
            return batch
        keep: deque[Job] = deque()
        while self.pending:
            job = self.pending.popleft()
            if job.key == first.key and rows + job.rows <= self.max_batch:
                batch.append(job)
                rows += job.rows
            else:
                keep.append(job)
        self.pending = keep
        return batch
