"""`nanoformer serve` under load on loopback: 1, 8 and 32 concurrent clients, translation and GPT.

The server runs as its own process (`nanoformer serve`, as a user starts it) holding both
models; this process is the load: N clients, each sending its next request as soon as the last
one is answered, for --seconds per level (and at most --max-requests), so the run is bounded in
time and count. Translation requests are single test_2016 sentences (beam --beam); completions
continue a line of Tiny Shakespeare's validation split (--max-tokens new tokens, sampled with a
seed per request). Each model is first warmed up at the heaviest level (--warmup seconds), so
the allocator's pools reach the largest batch before anything is measured. Each line: p50/p99
latency, requests/s, errors, the server's mean batch rows (from /metrics) and its resident memory
before and after the level; a `serve_load_memory` line per model gives the growth over all levels.

    python benchmarks/serve_load.py --translator runs/m30k --gpt runs/shakespeare \\
        --out benchmarks/results/serve_load.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from nanoformer.data.text import find_data_file  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metric_sum(text: str, name: str, model: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def level(url: str, clients: int, make_body, seconds: float, max_requests: int) -> dict:
    """`clients` concurrent clients until `seconds` pass or `max_requests` are sent."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    stop_at = time.perf_counter() + seconds

    async def client(number: int, http: httpx.AsyncClient) -> None:
        nonlocal sent
        rng = random.Random(number)
        while time.perf_counter() < stop_at and sent < max_requests:
            sent += 1
            path, body = make_body(rng)
            start = time.perf_counter()
            try:
                answer = await http.post(url + path, json=body)
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code}: {answer.text[:200]}")
            except httpx.HTTPError as error:
                errors.append(repr(error))
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "seconds": round(elapsed, 2), "requests_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1), "p99_ms": round(1000 * percentile(latencies, 0.99), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--translator", required=True, help="a Multi30k de-en run or checkpoint folder")
    parser.add_argument("--gpt", required=True, help="a Tiny Shakespeare run or checkpoint folder")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds at the heaviest level first, per model")
    parser.add_argument("--max-requests", type=int, default=5000, help="per level")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--batching", default="continuous", choices=["continuous", "call"],
                        help="the server's --batching (translators: join the running search, or batches per call)")
    parser.add_argument("--models", default="translator,gpt", help="which of the two to load (comma-separated)")
    parser.add_argument("--out")
    args = parser.parse_args()

    sources = [s for s in find_data_file("multi30k/test_2016_flickr.de").read_text(encoding="utf-8").splitlines() if s]
    lines = [s for s in find_data_file("tinyshakespeare/input.txt").read_text(encoding="utf-8").splitlines()[-3000:]
             if len(s) > 20]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NANOFORMER_API_KEY": ""}
    server = subprocess.Popen([sys.executable, "-c", "import sys; from nanoformer.cli import main; sys.exit(main())",
                               "serve", args.translator, args.gpt, "--name", "translator", "--name", "gpt",
                               "--port", str(port), "--log-level", "warning", "--max-batch", "32",
                               "--queue", "256", "--workers", str(args.workers), "--batching", args.batching], env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

        def translate(rng: random.Random):
            return "/v1/translate", {"model": "translator", "text": rng.choice(sources), "beam_size": args.beam}

        def complete(rng: random.Random):
            return "/v1/completions", {"model": "gpt", "prompt": rng.choice(lines), "max_tokens": args.max_tokens,
                                       "temperature": 0.8, "top_k": 40, "seed": rng.randrange(1 << 30)}

        levels = [int(c) for c in args.clients.split(",")]
        for model, make in (("translator", translate), ("gpt", complete)):
            if model not in args.models.split(","):
                continue
            # Warm-up at the heaviest level: the allocator's pools grow to the largest batch once;
            # growth after that, over the measured levels, would be a leak.
            asyncio.run(level(url, max(levels), make, args.warmup, 10 * max(levels)))
            rss_start, base_rps = resident_mb(server.pid), None
            for clients in levels:
                before_metrics = httpx.get(url + "/metrics").text
                rss_before = resident_mb(server.pid)
                result = asyncio.run(level(url, clients, make, args.seconds, args.max_requests))
                after_metrics = httpx.get(url + "/metrics").text
                rows = metric_sum(after_metrics, "nanoformer_batch_rows_sum", model) - \
                    metric_sum(before_metrics, "nanoformer_batch_rows_sum", model)
                batches = metric_sum(after_metrics, "nanoformer_batches_total", model) - \
                    metric_sum(before_metrics, "nanoformer_batches_total", model)
                rss_after = resident_mb(server.pid)
                base_rps = base_rps or result["requests_per_s"]
                write_result("serve_load", {
                    "model": model, "checkpoint": args.translator if model == "translator" else args.gpt,
                    "clients": clients, **result, "beam": args.beam if model == "translator" else None,
                    "max_tokens": args.max_tokens if model == "gpt" else None,
                    "mean_batch_rows": round(rows / batches, 2) if batches else None,
                    "throughput_vs_1_client": round(result["requests_per_s"] / base_rps, 2),
                    "p99_over_p50": round(result["p99_ms"] / result["p50_ms"], 2),
                    "server_rss_mb_before": round(rss_before, 1), "server_rss_mb_after": round(rss_after, 1),
                    "server_rss_growth": round(rss_after / rss_before - 1, 4), "server_threads": args.threads,
                    "server_workers": args.workers, "server_batching": args.batching,
                }, args.out)
            rss_end = resident_mb(server.pid)
            write_result("serve_load_memory", {"model": model, "levels": levels, "server_rss_mb_start": round(rss_start, 1),
                                               "server_rss_mb_end": round(rss_end, 1),
                                               "server_rss_growth": round(rss_end / rss_start - 1, 4)}, args.out)
    finally:
        server.terminate()
        code = server.wait(timeout=60)
        print(f"server exited with {code} after SIGTERM", file=sys.stderr)


if __name__ == "__main__":
    main()
