"""`nanoformer serve`: trained models behind an HTTP API and a web playground (nanoformer/serve/).

    nanoformer serve runs/multi30k_de_en runs/shakespeare_char --port 8000
    nanoformer serve runs/gpt --host 0.0.0.0 --api-key "$KEY"   # another host: a key is required
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import socket
import sys

from nanoformer.cli.common import DEVICES, add_load_arguments, check_int8_device, resolve_device
from nanoformer.errors import UserError
from nanoformer.kernels.cpu import bound_onednn_cache

KEY_VARIABLE = "NANOFORMER_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, if the address cannot be bound (uvicorn would log a traceback-like error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use; stop what listens there or pass --port N") from None
            raise UserError(f"cannot listen on {host}:{port} ({error.strerror or error}); check --host and --port") \
                from None


def cmd_serve(args: argparse.Namespace) -> None:
    bound_onednn_cache()  # a server meets every batch shape: keep its memory flat
    try:
        import uvicorn

        from nanoformer.serve import ServeSettings, create_app, load_models
    except ImportError as error:
        raise UserError(f"serving needs the serve extra ({error.name} is missing): pip install 'nanoformer[serve]'") \
            from None
    key = args.api_key or os.environ.get(KEY_VARIABLE) or None
    if not is_loopback(args.host) and not key:
        raise UserError(f"--host {args.host} is reachable from other machines; give --api-key KEY (or set "
                        f"{KEY_VARIABLE}) so that only holders of the key can use the models, or serve on 127.0.0.1")
    for name, value, low in (("--port", args.port, 0), ("--max-body", args.max_body, 1), ("--queue", args.queue, 1),
                             ("--max-batch", args.max_batch, 1), ("--workers", args.workers, 1)):
        if value < low:
            raise UserError(f"{name} {value}: use {low} or more")
    if args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout}: use a positive number of seconds")
    if args.batch_wait < 0:
        raise UserError(f"--batch-wait {args.batch_wait}: use 0 or more milliseconds")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError(f"--max-tokens {args.max_tokens}: use 1 or more (or leave it out: the model's context)")
    check_int8_device(args.int8, args.device)
    check_port(args.host, args.port)
    models = load_models(args.models, args.name, int8=args.int8, device=resolve_device(args.device),
                         verify=not args.no_verify)
    settings = ServeSettings(api_key=key, max_body=args.max_body, max_queue=args.queue, max_batch=args.max_batch,
                             batch_wait=args.batch_wait / 1000, timeout=args.timeout, max_tokens=args.max_tokens,
                             workers=args.workers, continuous=args.batching == "continuous")
    app = create_app(models, settings)
    for served in models:
        print(f"serving {served.name} ({served.family}, {served.path}): {', '.join(served.routes())}", file=sys.stderr)
    print(f"playground: http://{args.host}:{args.port}/   (Ctrl-C or SIGTERM: finish the requests in flight, "
          "then stop)", file=sys.stderr, flush=True)
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again once it has
    # stopped; with this handler that second signal is a no-op, so a graceful stop exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=None,
                access_log=args.log_level in ("debug", "info"))


def args_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="RUN_OR_CKPT", help="run or checkpoint folders, any family")
    parser.add_argument("--name", action="append", help="the API name of each model, in order (default: its folder "
                        "name; repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on every route but /health "
                        f"(default: ${KEY_VARIABLE})")
    parser.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes (default 1 MiB)")
    parser.add_argument("--queue", type=int, default=64, help="requests waiting per model before 429 (default 64)")
    parser.add_argument("--max-batch", type=int, default=32, help="rows per batch: prompts x n, or sentences")
    parser.add_argument("--batch-wait", type=float, default=5.0, help="milliseconds a batch waits for requests to "
                        "join it (default 5)")
    parser.add_argument("--workers", type=int, default=1, help="batches of a model that may run at once, each in "
                        "its own thread (default 1; with 2, a request need not wait for the running batch)")
    parser.add_argument("--batching", default="continuous", choices=["continuous", "call"],
                        help="translators: 'continuous' (default) lets a request join the running beam search at its "
                        "next step; 'call' batches requests that arrive together into one decoding call")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take before 504")
    parser.add_argument("--max-tokens", type=int, default=None, help="the most new tokens a request may ask for "
                        "(default: the model's context)")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_load_arguments(parser)
