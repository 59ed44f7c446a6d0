"""Continuous batching in the server (serve/continuous.py), step by step: requests that arrive while
a beam search runs join it at its next step, are answered when their own sentences end (before the
ones they joined), and get what `translate_ids` gives each sentence alone.

The loop is driven by hand here, one admission or step at a time, so the joins happen where the
test puts them; tests/test_serve.py covers the same loop behind a live server.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from tiny_checkpoints import trained_translator

from nanoformer.generation.translation import encode_sources, translate_ids
from nanoformer.serve import load_models
from nanoformer.serve.batching import Job, ModelQueue
from nanoformer.serve.continuous import ContinuousTranslator
from nanoformer.serve.metrics import Metrics
from nanoformer.serve.work import TranslationWork

REQUESTS = [["groß katze läuft klein hund rot blau geht", "ein mann"], ["hund rot"], ["katze läuft blau", "ein mann geht"],
            ["blau"], ["mann hund katze groß"]]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = trained_translator(tmp_path_factory.mktemp("continuous"))
    torch.set_num_threads(threads)
    return load_models([str(path)], ["translator"])[0]


def alone(served, text: str, beam: int, max_tokens: int | None = None) -> list[int]:
    sources = encode_sources([text], served.source_tokenizer, served.context)
    tok = served.tokenizer
    return translate_ids(served.model, sources, tok.pad_id, tok.eos_id, beam, 1.0, max_new_tokens=max_tokens)[0]


def test_requests_join_the_running_search_and_get_what_they_get_alone(served):
    beam = 4

    async def scenario():
        loop = asyncio.get_running_loop()
        queue = ModelQueue("translator", None, None, Metrics(), max_queue=64, max_batch=32, batch_wait=0.0)
        engine = ContinuousTranslator(served, queue, loop)
        jobs = []

        def submit(texts: list[str], max_tokens: int | None = None) -> Job:
            sources = encode_sources(texts, served.source_tokenizer, served.context)
            work = TranslationWork(texts, sources, beam, 1.0, max_tokens, None)
            job = queue.submit(Job(("translate", beam, 1.0, max_tokens), len(texts), work, loop.time() + 1e9))
            jobs.append(job)
            return job

        sizes, joined_while_running = [], 0
        with served.model.decoding(), torch.no_grad():
            submit(REQUESTS[0])
            engine.admit()
            for step in range(60):
                if step in (1, 2, 4):  # requests arriving while the first ones decode
                    running = engine.group.size
                    submit(REQUESTS[{1: 1, 2: 2, 4: 3}[step]], max_tokens=3 if step == 4 else None)
                    engine.admit()
                    joined_while_running += running > 0 and engine.group.size > running
                if step == 3:
                    await asyncio.sleep(0)  # let the loop settle what has finished
                    assert not jobs[0].future.done(), "the first request should still be running"
                if engine.group is None or engine.group.size == 0:
                    break
                engine.drop_given_up()
                engine.finish(engine.group.step(served.model))
                sizes.append(engine.group.size)
        submit(REQUESTS[4])  # a request for an idle loop, through `run` itself
        await loop.run_in_executor(None, engine.run)
        return jobs, sizes, joined_while_running

    jobs, sizes, joined = asyncio.run(scenario())
    assert joined == 3
    for job, texts in zip(jobs, REQUESTS):
        entries = job.future.result()
        max_tokens = job.payload.max_tokens
        expected = [alone(served, text, beam, max_tokens) for text in texts]
        assert [e["tokens"] for e in entries] == [len(ids) for ids in expected]
        assert [e["text"] for e in entries] == [served.tokenizer.decode(ids) if ids else "" for ids in expected]
    assert max(sizes) >= 4 and len(set(sizes)) >= 3  # sentences came and went


def test_a_given_up_request_leaves_the_group_and_the_others_stay_exact(served):
    async def scenario():
        loop = asyncio.get_running_loop()
        queue = ModelQueue("translator", None, None, Metrics(), max_queue=64, max_batch=32, batch_wait=0.0)
        engine = ContinuousTranslator(served, queue, loop)
        jobs = []
        for texts in REQUESTS[:3]:
            sources = encode_sources(texts, served.source_tokenizer, served.context)
            jobs.append(queue.submit(Job(("translate", 2, 1.0, None), len(texts),
                                         TranslationWork(texts, sources, 2, 1.0, None, None), loop.time() + 1e9)))
        with served.model.decoding(), torch.no_grad():
            engine.admit()
            before = engine.group.size
            jobs[0].cancelled = True  # its client left
            engine.drop_given_up()
            after = engine.group.size
            while engine.group.size:
                engine.finish(engine.group.step(served.model))
        await asyncio.sleep(0)
        return jobs, before, after

    jobs, before, after = asyncio.run(scenario())
    assert before == 5 and after == 3
    with pytest.raises(Exception, match="given up"):
        jobs[0].future.result()
    for job, texts in zip(jobs[1:], REQUESTS[1:3]):
        expected = [served.tokenizer.decode(alone(served, text, 2)) for text in texts]
        assert [e["text"] for e in job.future.result()] == expected


def test_a_failing_step_fails_its_requests_and_the_loop_goes_on(served, monkeypatch):
    from nanoformer.generation.beam_group import BeamGroup

    real_step = BeamGroup.step
    calls = {"n": 0}

    def flaky(self, model):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("a step failed")
        return real_step(self, model)

    monkeypatch.setattr(BeamGroup, "step", flaky)

    async def scenario():
        loop = asyncio.get_running_loop()
        queue = ModelQueue("translator", None, None, Metrics(), max_queue=64, max_batch=32, batch_wait=0.0)
        engine = ContinuousTranslator(served, queue, loop)

        def submit(texts):
            sources = encode_sources(texts, served.source_tokenizer, served.context)
            return queue.submit(Job(("translate", 2, 1.0, None), len(texts),
                                    TranslationWork(texts, sources, 2, 1.0, None, None), loop.time() + 1e9))

        first = submit(REQUESTS[0])
        await loop.run_in_executor(None, engine.run)
        second = submit(REQUESTS[1])
        await loop.run_in_executor(None, engine.run)
        await asyncio.sleep(0)
        return first, second, engine

    first, second, engine = asyncio.run(scenario())
    with pytest.raises(RuntimeError, match="a step failed"):
        first.future.result()
    assert [e["text"] for e in second.future.result()] == [served.tokenizer.decode(alone(served, REQUESTS[1][0], 2))]
    assert engine.group is None and not engine.jobs and not engine.sentences
