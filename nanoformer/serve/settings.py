"""The server's limits, in one place (the `nanoformer serve` options fill it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    api_key: str | None = None  # required as "Authorization: Bearer KEY" on every route but /health
    max_body: int = 1 << 20  # bytes of a request body (413 beyond)
    max_queue: int = 64  # requests waiting per model (429 beyond)
    max_batch: int = 32  # rows (prompts x n, or sentences) in one batch
    batch_wait: float = 0.005  # seconds the first request of a batch waits for others to join it
    timeout: float = 60.0  # seconds a request may take (504 beyond)
    max_tokens: int | None = None  # the most new tokens a request may ask for (default: the model's context)
    max_items: int = 256  # texts (or prompts) in one request
    workers: int = 1  # batches that may run at once (each in its own thread)
    continuous: bool = True  # translators: requests join the running beam search between steps (continuous.py)
