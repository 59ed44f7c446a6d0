"""The ASGI layer every request crosses before its route: the API key, the body size, the metrics.

It sits outside the app so that even a refused request (401, 413) or an unknown route is counted
and answered in OpenAI's error shape.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time

from nanoformer.serve.errors import APIError
from nanoformer.serve.metrics import Metrics
from nanoformer.serve.settings import ServeSettings

ROUTES = {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/translate", "/v1/fill-mask",
          "/v1/embeddings", "/v1/classify", "/v1/attention"}
PAGE_PREFIXES = ("/static/",)
OPEN_ROUTES = {"/health"}


def route_label(path: str) -> str:
    """The route a path counts under (unknown paths share one label, so metrics stay small)."""
    if path in ROUTES:
        return path
    return "/static" if path.startswith(PAGE_PREFIXES) else "other"


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key of "Authorization: Bearer KEY", or of HTTP Basic (any user, the key as password: a browser
    asks for it when it opens the page)."""
    value = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


class Guard:
    def __init__(self, app, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, started, status = route_label(scope["path"]), time.perf_counter(), [500]

        async def counted_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.requests.labels(route, scope["method"], str(status[0])).inc()
                if status[0] >= 400:
                    self.metrics.errors.labels(route, str(status[0])).inc()
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)

        refusal = self.refusal(scope, route)
        if refusal is not None:
            await refusal.response()(scope, receive, counted_send)
            return
        await self.app(scope, receive, counted_send)

    def refusal(self, scope, route: str) -> APIError | None:
        headers = dict(scope["headers"])
        key = self.settings.api_key
        if key and scope["path"] not in OPEN_ROUTES:
            given = presented_key(headers)
            if given is None or not hmac.compare_digest(given.encode(), key.encode()):
                page = route in ("/", "/static")
                challenge = 'Basic realm="nanoformer", charset="UTF-8"' if page else "Bearer"
                what = "a wrong API key" if given else "no API key"
                return APIError(401, f"{what}: send the server's key as 'Authorization: Bearer KEY'",
                                code="invalid_api_key", headers={"WWW-Authenticate": challenge})
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.settings.max_body:
            return self.too_large()
        return None

    def too_large(self) -> APIError:
        return APIError(413, f"the request body is larger than the server's limit of {self.settings.max_body} "
                        "bytes (nanoformer serve --max-body)", code="body_too_large")
