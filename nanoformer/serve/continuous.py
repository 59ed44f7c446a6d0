"""Continuous batching for translators: requests join the running beam search between its steps.

With batching per call (batching.py), a request that arrives while a batch decodes waits for
that batch's longest sentence to end, then rides in the next batch: its latency is between
one and two batch times, and the tail doubles (docs/benchmarks.md, "Serve"). Here one loop in
the model thread owns a `BeamGroup` (generation/beam_group.py). Between two steps it takes the
waiting translation jobs with the group's search settings, runs their encoder, and merges
their sentences in, to take their first step with the others; each job is answered as soon as
its last sentence ends.
A sentence decodes as it would alone, so the answers equal `nanoformer translate`'s.

What the loop does not step: greedy requests (beam 1; `greedy_decode`, batched as in
batching.py, with the jobs waiting beside them) and other calls (a job whose payload is a
function) run between two steps, in the same thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import torch

from nanoformer.generation.beam import length_penalty_fn, search_rule
from nanoformer.generation.beam_group import BeamGroup, Finished, SearchRule
from nanoformer.generation.limits import length_limits
from nanoformer.generation.translation import DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B
from nanoformer.kernels.gemm import frozen_weights
from nanoformer.serve.batching import Job, ModelQueue
from nanoformer.serve.errors import APIError
from nanoformer.serve.registry import ServedModel
from nanoformer.serve.work import TranslationWork, run_batch, translation_entries


class ContinuousTranslator:
    """The stepping loop of one translator; `run` works until nothing runs or waits."""

    def __init__(self, served: ServedModel, queue: ModelQueue, loop: asyncio.AbstractEventLoop) -> None:
        self.served = served
        self.queue = queue
        self.loop = loop
        self.group: BeamGroup | None = None
        self.key: tuple | None = None  # (beam size, length penalty) of the running group
        self.jobs: dict[int, list] = {}  # id(job) -> [job, outputs by sentence, sentences left]
        self.sentences: dict[int, tuple[Job, int]] = {}  # owner number -> (job, its sentence), while it runs
        self.owned = 0  # owner numbers handed out
        self.rules: dict[tuple, SearchRule] = {}  # one per search setting: groups merge only under one

    def run(self) -> None:
        """Called in the model thread; returns when no sentence runs and no job waits."""
        try:
            with frozen_weights(), self.served.model.decoding(), torch.no_grad():
                while True:
                    self.admit()
                    if self.group is None or self.group.size == 0:
                        if not self.queue.pending or self.queue.closing:
                            self.group, self.key = None, None
                            return
                        continue
                    self.drop_given_up()
                    if self.group.size:
                        self.finish(self.group.step(self.served.model))
        except Exception as error:  # noqa: BLE001 - a failed step fails the requests in it, not the server
            for job, _, _ in list(self.jobs.values()):
                self.answer(job, error)
            self.jobs.clear()
            self.sentences.clear()
            self.group, self.key = None, None

    # ------------------------------------------------------------------ taking jobs in

    def admit(self) -> None:
        """Take the waiting jobs that can join now, oldest first, within the batch's rows."""
        queue, started = self.queue, []
        running = self.group.size if self.group is not None else 0
        while queue.pending and not queue.closing:
            job = queue.pending[0]
            work = job.payload
            if job.given_up():
                queue.pending.popleft()
                self.answer(job, APIError(504, "the request was given up before it ran", code="timeout"))
                continue
            if not isinstance(work, TranslationWork) or work.beam_size == 1:
                if running or started:
                    break  # it runs alone, once the group is empty
                self.run_static(queue.pending.popleft())
                continue
            key = (work.beam_size, work.length_penalty)
            if (running or started) and (key != self.key or running + job.rows > queue.max_batch):
                break
            queue.pending.popleft()
            self.key = key
            started.append(job)
            running += job.rows
        queue.metrics.queue_depth.labels(queue.name).set(len(queue.pending))
        if started:
            self.start(started)

    def run_static(self, job: Job) -> None:
        """A job the loop does not step: with the greedy jobs waiting behind it, as one batch of batching.py."""
        jobs, rows, pending = [job], job.rows, self.queue.pending
        while job.key is not None and pending and pending[0].key == job.key and rows + pending[0].rows <= self.queue.max_batch:
            rows += pending[0].rows
            jobs.append(pending.popleft())
        started = time.perf_counter()
        try:
            results = run_batch(self.served, jobs)
        except Exception as error:  # noqa: BLE001 - answered to each job
            for one in jobs:
                self.answer(one, error)
            return
        self.count_batch(jobs, rows, time.perf_counter() - started)
        for one, result in zip(jobs, results):
            self.answer(one, result)

    def start(self, jobs: list[Job]) -> None:
        """The sentences of `jobs` join the group (or, into an empty server, take its first step)."""
        started = time.perf_counter()
        model, tok = self.served.model, self.served.tokenizer
        saved = self.served.generation
        first: TranslationWork = jobs[0].payload
        owners, sources, caps = [], [], []
        for job in jobs:
            work: TranslationWork = job.payload
            self.jobs[id(job)] = [job, [[] for _ in work.sources], 0]
            for index, ids in enumerate(work.sources):
                if ids:
                    owners.append(self.owned)
                    self.sentences[self.owned] = (job, index)
                    self.owned += 1
                    sources.append(ids)
                    caps.append(min(model.config.max_positions - 1, work.max_tokens or model.config.max_positions))
                    self.jobs[id(job)][2] += 1
        empty = [job for job in jobs if self.jobs[id(job)][2] == 0]
        for job in empty:
            self.complete(job)
        if not sources:
            return
        width = max(len(ids) for ids in sources)
        src = torch.full((len(sources), width), tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sources), width), dtype=torch.bool)
        for row, ids in enumerate(sources):
            src[row, : len(ids)] = torch.as_tensor(ids)
            mask[row, : len(ids)] = True
        mask_or_none = None if bool(mask.all()) else mask
        a, b = saved.get("max_len_a", DEFAULT_MAX_LEN_A), saved.get("max_len_b", DEFAULT_MAX_LEN_B)
        limits = torch.cat([length_limits(model.config, src[r : r + 1], mask[r : r + 1], caps[r], a, b)
                            for r in range(len(sources))])
        key = (first.beam_size, first.length_penalty)
        if key not in self.rules:
            self.rules[key] = search_rule(model.config, first.beam_size, length_penalty_fn("hf", float(first.length_penalty)),
                                          False, first.length_penalty, saved.get("bad_ids") or None,
                                          bool(saved.get("force_eos")), 1, src.device)
        rule = self.rules[key]
        group = BeamGroup(model, rule, src, mask_or_none, limits, torch.tensor(owners))
        if self.group is None or self.group.size == 0:
            self.finish(group.step(model))
            self.group = group
        else:
            group.prime(model)  # its first step is the group's next one
            self.group.merge(group)
        self.count_batch(jobs, self.group.size, time.perf_counter() - started)

    def count_batch(self, jobs: list[Job], rows: int, seconds: float) -> None:
        metrics, name = self.queue.metrics, self.queue.name
        metrics.batches.labels(name).inc()
        metrics.jobs.labels(name).inc(len(jobs))
        metrics.batch_rows.labels(name).observe(rows)
        metrics.batch_seconds.labels(name).observe(seconds)

    # ------------------------------------------------------------------ answering

    def finish(self, done: list[Finished]) -> None:
        eos = self.served.tokenizer.eos_id
        for sentence in done:
            job, index = self.sentences.pop(sentence.owner)
            entry = self.jobs.get(id(job))
            if entry is None:
                continue  # its job was given up
            tokens = sentence.sequences[0, 1:].tolist()
            entry[1][index] = tokens[: tokens.index(eos)] if eos in tokens else tokens
            entry[2] -= 1
            if entry[2] == 0:
                self.complete(job)

    def complete(self, job: Job) -> None:
        _, outputs, _ = self.jobs.pop(id(job))
        try:
            result: Any = translation_entries(self.served, job.payload, outputs)
        except Exception as error:  # noqa: BLE001 - answered to the job
            result = error
        self.answer(job, result)

    def drop_given_up(self) -> None:
        """Sentences of jobs whose client left or whose time ran out leave the group."""
        given_up = {id(job) for job, _, _ in self.jobs.values() if job.given_up()}
        if not given_up:
            return
        owners = self.group.owners.tolist()
        keep = [i for i, owner in enumerate(owners) if id(self.sentences[owner][0]) not in given_up]
        for owner in owners:
            if id(self.sentences[owner][0]) in given_up:
                del self.sentences[owner]
        for key in given_up:
            job = self.jobs.pop(key)[0]
            self.answer(job, APIError(504, "the request was given up", code="timeout"))
        self.group.keep_sentences(torch.tensor(keep, dtype=torch.long))

    def answer(self, job: Job, result: Any) -> None:
        """Hand a result (or an error) to the job's waiting request, in the event loop's thread."""
        self.loop.call_soon_threadsafe(_settle, job, result)


def _settle(job: Job, result: Any) -> None:
    if job.future.done():
        return
    if isinstance(result, BaseException):
        job.future.set_exception(result)
    else:
        job.future.set_result(result)

