"""What `GET /metrics` reports, in Prometheus' text format. Each app has its own registry, so two
servers in one process (tests) count apart."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nanoformer_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.errors = Counter("nanoformer_errors", "HTTP requests answered with an error", ["route", "status"], registry=r)
        self.latency = Histogram("nanoformer_request_seconds", "time from request to response (to the last byte "
                                 "of a stream)", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("nanoformer_queue_depth", "requests waiting for their model", ["model"], registry=r)
        self.jobs = Counter("nanoformer_jobs", "requests run by a model", ["model"], registry=r)
        self.batches = Counter("nanoformer_batches", "batches run by a model (requests that arrived together "
                               "share one)", ["model"], registry=r)
        self.batch_rows = Histogram("nanoformer_batch_rows", "rows (prompts x n, or sentences) in a batch",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("nanoformer_batch_seconds", "time a batch holds its model", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("nanoformer_tokens_generated", "new tokens generated", ["model"], registry=r)
        self.cancelled = Counter("nanoformer_cancelled", "requests given up (client gone or time limit)",
                                 ["model", "reason"], registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)
