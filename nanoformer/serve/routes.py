"""The API's handlers: check and tokenise a request, queue it for its model, answer in JSON.

Every check that can fail happens here, before a request is queued, so a batch never fails for
one request's mistake. Names of fields in errors are the body's own (`text[2]`, `max_tokens`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import warnings
from collections.abc import AsyncIterator

import numpy as np
import torch
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from nanoformer.errors import UserError
from nanoformer.generation.text import prompt_ids
from nanoformer.generation.translation import encode_sources
from nanoformer.serve import schemas
from nanoformer.serve.batching import Job, ModelQueue
from nanoformer.serve.errors import APIError
from nanoformer.serve.metrics import Metrics
from nanoformer.serve.registry import ServedModel
from nanoformer.serve.settings import ServeSettings
from nanoformer.serve.work import CompletionWork, Sampling, TranslationWork


class Handlers:
    def __init__(self, models: list[ServedModel], queues: dict[str, ModelQueue], settings: ServeSettings,
                 metrics: Metrics) -> None:
        self.models = {m.name: m for m in models}
        self.queues = queues
        self.settings = settings
        self.metrics = metrics

    # ------------------------------------------------------------------ shared steps

    def model(self, name: str, route: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise APIError(404, f"no model {name!r}; this server has {', '.join(sorted(self.models))}",
                           param="model", code="model_not_found")
        if route not in served.routes():
            raise APIError(400, f"model {name!r} is a {served.family} ({served.arch}) and does not answer {route}; "
                           f"it answers {', '.join(served.routes())}", param="model", code="wrong_model_family")
        return served

    async def body(self, request: Request, schema: type[schemas.Request]) -> schemas.Request:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.settings.max_body:
                raise APIError(413, f"the request body is larger than the server's limit of {self.settings.max_body}"
                               " bytes (nanoformer serve --max-body)", code="body_too_large")
            chunks.append(chunk)
        return schemas.parse_body(b"".join(chunks), schema)

    def texts(self, value: schemas.Texts, field: str) -> list[str]:
        texts = schemas.as_list(value)
        if not texts:
            raise APIError(400, f"{field}: give at least one text", param=field, code="invalid_value")
        if len(texts) > self.settings.max_items:
            raise APIError(400, f"{field}: {len(texts)} texts, more than the server's limit of "
                           f"{self.settings.max_items} per request", param=field, code="invalid_value")
        return texts

    def token_limit(self, served: ServedModel, asked: int | None) -> None:
        limit = min(self.settings.max_tokens or served.context, served.context - 1)
        if asked is not None and asked > limit:
            raise APIError(400, f"max_tokens: {asked} is more than model {served.name!r} allows; use 1 to {limit}",
                           param="max_tokens", code="invalid_value")

    def job(self, served: ServedModel, payload, key=None, rows: int = 1, on_piece=None) -> Job:
        job = Job(key, rows, payload, time.monotonic() + self.settings.timeout, on_piece=on_piece)
        job.future.add_done_callback(lambda f: f.cancelled() or f.exception())  # an abandoned error is not lost noise
        return self.queues[served.name].submit(job)

    async def outcome(self, served: ServedModel, job: Job, request: Request):
        """The job's result; 504 past the time limit; a client that leaves cancels it."""
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({job.future, watcher}, timeout=max(0.0, job.deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if job.future.done():
            try:
                return job.future.result()
            except UserError as error:
                raise APIError(400, str(error), code="invalid_value") from None
        job.cancelled = True
        reason = "disconnected" if watcher in done else "timeout"
        self.metrics.cancelled.labels(served.name, reason).inc()
        raise APIError(499 if reason == "disconnected" else 504,
                       "the client closed the connection" if reason == "disconnected" else
                       f"the request took longer than the server's limit of {self.settings.timeout:g} s",
                       code=reason)

    # ------------------------------------------------------------------ /v1/completions

    async def completions(self, request: Request) -> Response:
        body = await self.body(request, schemas.CompletionRequest)
        served = self.model(body.model, "/v1/completions")
        prompts = self.texts(body.prompt, "prompt")
        self.token_limit(served, body.max_tokens)
        room, tok, notes, encoded = served.context - 1, served.tokenizer, [], []
        for i, prompt in enumerate(prompts):
            ids = prompt_ids(tok, prompt)
            if len(ids) > room:
                if not body.truncate:
                    raise APIError(400, f"prompt[{i}]: {len(ids)} tokens, more than the {room} that fit in model "
                                   f"{served.name!r}'s context; shorten it, or drop truncate=false",
                                   param="prompt", code="context_length_exceeded")
                notes.append(f"prompt[{i}] had {len(ids)} tokens; kept its last {room}")
                ids = ids[-room:]
            encoded.append(ids)
        stop = schemas.as_list(body.stop)
        if len(stop) > 4:
            raise APIError(400, f"stop: {len(stop)} strings; give at most 4", param="stop", code="invalid_value")
        if len(prompts) * body.n > self.settings.max_batch:
            raise APIError(400, f"n: {len(prompts)} prompt(s) x n={body.n} is more than the server's batch of "
                           f"{self.settings.max_batch} rows", param="n", code="invalid_value")
        greedy = body.temperature == 0
        sampling = Sampling(not greedy, 1.0 if greedy else body.temperature, None if greedy else body.top_k,
                            None if greedy or body.top_p >= 1.0 else body.top_p, body.repetition_penalty)
        work = CompletionWork(encoded, body.n, body.max_tokens, stop, sampling, body.seed)
        key = ("complete", sampling.do_sample, sampling.temperature, sampling.top_k, sampling.top_p,
               sampling.repetition_penalty)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": served.name}
        prompt_tokens = sum(len(ids) for ids in encoded) * body.n
        if body.stream:
            return self.stream(served, work, key, head, request)
        job = self.job(served, work, key, work.rows())
        rows = await self.outcome(served, job, request)
        generated = sum(len(r.token_ids) for r in rows)
        self.metrics.tokens.labels(served.name).inc(generated)
        answer = {**head, "choices": [{"index": i, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
                                      for i, r in enumerate(rows)],
                  "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                            "total_tokens": prompt_tokens + generated}}
        if notes:
            answer["warnings"] = notes
        return JSONResponse(answer)

    def stream(self, served: ServedModel, work: CompletionWork, key, head: dict, request: Request) -> Response:
        """Server-sent events as OpenAI streams them: a chunk per piece of text, then `data: [DONE]`."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        job = self.job(served, work, key, work.rows(),
                       on_piece=lambda index, text: loop.call_soon_threadsafe(pieces.put_nowait, (index, text)))
        job.future.add_done_callback(lambda f: pieces.put_nowait(None))

        def chunk(index: int, text: str, finish: str | None) -> str:
            data = {**head, "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}]}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                while True:
                    try:
                        item = await asyncio.wait_for(pieces.get(), timeout=max(0.0, job.deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        job.cancelled = True
                        self.metrics.cancelled.labels(served.name, "timeout").inc()
                        error = APIError(504, f"the stream took longer than the server's limit of "
                                         f"{self.settings.timeout:g} s", code="timeout")
                        yield f"data: {json.dumps(error.body())}\n\n"
                        break
                    if item is None:
                        break
                    yield chunk(*item, None)
                if job.future.done() and not job.future.cancelled() and job.future.exception() is None:
                    rows = job.future.result()
                    self.metrics.tokens.labels(served.name).inc(sum(len(r.token_ids) for r in rows))
                    for index, row in enumerate(rows):
                        yield chunk(index, "", row.finish_reason)
                elif job.future.done() and job.future.exception() is not None:
                    error = job.future.exception()
                    shown = error if isinstance(error, APIError) else APIError(500, "the model failed on this request")
                    yield f"data: {json.dumps(shown.body())}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                if not job.future.done():
                    job.cancelled = True  # the client left mid-stream: the batch drops this job's rows
                    self.metrics.cancelled.labels(served.name, "disconnected").inc()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ /v1/translate

    async def translate(self, request: Request) -> Response:
        body = await self.body(request, schemas.TranslateRequest)
        served = self.model(body.model, "/v1/translate")
        texts = self.texts(body.text, "text")
        self.token_limit(served, body.max_tokens)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                sources = encode_sources(texts, served.source_tokenizer, served.context, body.truncate,
                                         where=lambda i: f"text[{i}]")
            except UserError as error:
                raise APIError(400, str(error).replace("(drop --no-truncate)", "(drop truncate=false)"),
                               param="text", code="context_length_exceeded") from None
        attention = (body.attention_layers, body.attention_heads) if body.return_attention else None
        saved = served.generation
        beam_size = body.beam_size if body.beam_size is not None else saved.get("beam_size", 4)
        length_penalty = body.length_penalty if body.length_penalty is not None else saved.get("length_penalty", 1.0)
        work = TranslationWork(texts, sources, beam_size, length_penalty, body.max_tokens, attention)
        rows = sum(1 for s in sources if s)
        key = ("translate", beam_size, length_penalty, body.max_tokens)
        entries = await self.outcome(served, self.job(served, work, key, max(1, rows)), request)
        self.metrics.tokens.labels(served.name).inc(sum(e.pop("tokens") for e in entries))
        answer = {"model": served.name, "translations": entries}
        if caught:
            answer["warnings"] = [str(w.message) for w in caught]
        return JSONResponse(answer)

    # ------------------------------------------------------------------ encoders

    async def fill_mask(self, request: Request) -> Response:
        from nanoformer.evaluation.mlm import fill_mask

        body = await self.body(request, schemas.FillMaskRequest)
        served = self.model(body.model, "/v1/fill-mask")
        texts = self.texts(body.text, "text")

        def run() -> list:
            results = []
            for i, text in enumerate(texts):
                try:
                    masks = fill_mask(served.model, served.tokenizer, text, body.top_k)
                except UserError as error:
                    raise APIError(400, f"text[{i}]: {error}", param=f"text[{i}]", code="invalid_value") from None
                results.append({"text": text, "masks": [[{"token": c.token, "token_id": c.token_id,
                                                           "probability": c.probability, "sequence": c.sequence}
                                                          for c in candidates] for candidates in masks]})
            return results

        results = await self.outcome(served, self.job(served, run), request)
        return JSONResponse({"model": served.name, "results": results})

    def encoded(self, served: ServedModel, texts: list[str], field: str, truncate: bool, notes: list[str],
                pairs: list[str] | None = None) -> list[tuple[list[int], list[int]]]:
        """"[CLS] text [SEP] (pair [SEP])" ids and token types; a cut text is named in `notes`."""
        from nanoformer.data.classification import encode_example

        tok, rows = served.tokenizer, []
        for i, text in enumerate(texts):
            pair = pairs[i] if pairs else None
            try:
                rows.append(encode_example(tok, text, pair, served.context, where=f"{field}[{i}]", truncate=truncate))
            except UserError as error:
                raise APIError(400, str(error).replace("pass --truncate", "drop truncate=false"), param=field,
                               code="context_length_exceeded") from None
            full = len(tok.encode(text)) + (len(tok.encode(pair)) + 1 if pair is not None else 0) + 2
            if full > served.context:
                notes.append(f"{field}[{i}] had {full} tokens with [CLS]/[SEP]; cut to the model's {served.context}")
        return rows

    async def embeddings(self, request: Request) -> Response:
        from nanoformer.data.classification import pad_batch

        body = await self.body(request, schemas.EmbeddingsRequest)
        served = self.model(body.model, "/v1/embeddings")
        texts = self.texts(body.input, "input")
        notes: list[str] = []
        rows = self.encoded(served, texts, "input", body.truncate, notes)

        @torch.inference_mode()
        def run() -> np.ndarray:
            vectors = []
            for start in range(0, len(rows), self.settings.max_batch):
                batch = pad_batch(rows[start : start + self.settings.max_batch], served.tokenizer.pad_id)
                vectors.append(served.model.embed(batch["input_ids"], batch["attention_mask"]).float().cpu())
            return torch.cat(vectors).numpy()

        matrix = await self.outcome(served, self.job(served, run), request)
        tokens = sum(len(ids) for ids, _ in rows)

        def encode(vector: np.ndarray):
            if body.encoding_format == "base64":
                return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            return vector.tolist()

        answer = {"object": "list", "model": served.name,
                  "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(matrix)],
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return JSONResponse({**answer, "warnings": notes} if notes else answer)

    async def classify(self, request: Request) -> Response:
        from nanoformer.data.classification import pad_batch
        from nanoformer.evaluation.classification import predict

        body = await self.body(request, schemas.ClassifyRequest)
        served = self.model(body.model, "/v1/classify")
        texts = self.texts(body.text, "text")
        pairs = schemas.as_list(body.pair) if body.pair is not None else None
        if pairs is not None and len(pairs) != len(texts):
            raise APIError(400, f"pair: {len(pairs)} pair text(s) for {len(texts)} text(s); give one per text",
                           param="pair", code="invalid_value")
        notes: list[str] = []
        rows = self.encoded(served, texts, "text", body.truncate, notes, pairs)
        config = served.model.config
        labels = config.labels or [str(i) for i in range(config.num_labels)]

        def batches():
            for start in range(0, len(rows), self.settings.max_batch):
                batch = pad_batch(rows[start : start + self.settings.max_batch], served.tokenizer.pad_id)
                if config.type_vocab_size == 0:
                    batch.pop("token_type_ids")
                yield batch

        probs, _ = await self.outcome(served, self.job(served, lambda: predict(served.model, batches())), request)
        results = []
        for text, row in zip(texts, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"text": text, "label": labels[best], "probability": row[best],
                            "probabilities": dict(zip(labels, row))})
        answer = {"model": served.name, "results": results}
        return JSONResponse({**answer, "warnings": notes} if notes else answer)

    # ------------------------------------------------------------------ /v1/attention

    async def attention(self, request: Request) -> Response:
        from nanoformer.viz.attention import extract_attention
        from nanoformer.viz.html import render_html

        body = await self.body(request, schemas.AttentionRequest)
        served = self.model(body.model, "/v1/attention")

        def run():
            return extract_attention(served.model, served.tokenizer, body.text, target=body.target,
                                     source_tokenizer=served.source_tokenizer)

        result = await self.outcome(served, self.job(served, run), request)
        if body.format == "html":
            return HTMLResponse(render_html(result, title=f"nanoformer: {served.name}"))
        return JSONResponse({"model": served.name, "arch": result.arch, "text": result.source,
                             "target": result.target, "notes": result.notes,
                             "maps": [{"kind": m.kind, "title": m.title, "query_tokens": m.query_tokens,
                                       "key_tokens": m.key_tokens, "causal": m.causal,
                                       "weights": m.weights.double().tolist()} for m in result.maps]})


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
