"""The Starlette app: the routes, the playground page, and errors that are always JSON.

    app = create_app(load_models(["runs/multi30k_de_en"]), ServeSettings())
    uvicorn.run(app, host="127.0.0.1", port=8000)   # what `nanoformer serve` does

The page at `/` and its files come from this package (playground/): the browser fetches nothing
from anywhere else, and the page's Content-Security-Policy forbids it to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nanoformer.serve.batching import ModelQueue
from nanoformer.serve.continuous import ContinuousTranslator
from nanoformer.serve.errors import APIError
from nanoformer.serve.guards import Guard
from nanoformer.serve.metrics import Metrics
from nanoformer.serve.registry import ServedModel
from nanoformer.serve.routes import Handlers
from nanoformer.serve.settings import ServeSettings
from nanoformer.serve.work import run_batch

PLAYGROUND = Path(__file__).parent / "playground"
STATIC_FILES = {"playground.js": "text/javascript", "playground.css": "text/css"}
log = logging.getLogger("nanoformer.serve")


def page_policy() -> str:
    """The page's Content-Security-Policy: only this server, and the attention page's own script
    (it runs inside the page's frame)."""
    from nanoformer.viz.html import script_source

    return ("default-src 'none'; script-src 'self' " + script_source() + "; style-src 'self' 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; frame-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def create_app(models: list[ServedModel], settings: ServeSettings | None = None) -> Guard:
    """An ASGI app serving `models` (wrapped in the key, body-size and metrics guard)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="nanoformer-model")
    queues: dict[str, ModelQueue] = {}
    handlers = Handlers(models, queues, settings, metrics)
    policy = page_policy()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        for served in models:
            queues[served.name] = ModelQueue(served.name, lambda jobs, served=served: run_batch(served, jobs), executor,
                                             metrics, settings.max_queue, settings.max_batch, settings.batch_wait,
                                             settings.workers)
            stepping = None
            if served.family == "translator" and settings.continuous:
                stepping = ContinuousTranslator(served, queues[served.name], asyncio.get_running_loop()).run
            queues[served.name].start(stepping)
        try:
            yield
        finally:
            for queue in queues.values():
                await queue.stop()
            executor.shutdown(wait=True)

    async def page(request: Request) -> Response:
        return Response((PLAYGROUND / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            raise APIError(404, f"no file {name!r}", code="not_found")
        return Response((PLAYGROUND / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": [m.name for m in models]})

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [m.describe() for m in models]})

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def api_error(request: Request, error: APIError) -> Response:
        return error.response()

    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 404:
            return APIError(404, f"no route {request.url.path}; see GET /v1/models and the README's API section",
                            code="not_found").response()
        if error.status_code == 405:
            return APIError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed",
                            headers=dict(error.headers or {})).response()
        return APIError(error.status_code, str(error.detail)).response()

    async def server_error(request: Request, error: Exception) -> Response:
        log.exception("error in %s %s", request.method, request.url.path)  # the traceback stays in the server log
        return APIError(500, "the server failed on this request; its log has the details", code="internal_error").response()

    post = ["POST"]
    routes = [
        Route("/", page, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/completions", handlers.completions, methods=post),
        Route("/v1/translate", handlers.translate, methods=post),
        Route("/v1/fill-mask", handlers.fill_mask, methods=post),
        Route("/v1/embeddings", handlers.embeddings, methods=post),
        Route("/v1/classify", handlers.classify, methods=post),
        Route("/v1/attention", handlers.attention, methods=post),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={APIError: api_error, HTTPException: http_error, Exception: server_error})
    return Guard(app, settings, metrics)
