"""`nanoformer serve` as a process: one-line refusals at start-up (exit 2), and SIGTERM, which lets
the requests in flight finish, refuses new connections and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_bert_cli import one_line_error
from tiny_checkpoints import trained_translator

from nanoformer.cli import main

pytest.importorskip("uvicorn", reason="the serve extra is a dev dependency (pip install -e '.[dev]')")
SERVE = [sys.executable, "-c", "import sys; from nanoformer.cli import main; sys.exit(main())", "serve"]


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    return trained_translator(tmp_path_factory.mktemp("serve-cli"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_startup_refusals_are_one_line(translator, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NANOFORMER_API_KEY", raising=False)
    one_line_error(capsys, main(["serve", str(tmp_path)]), str(tmp_path), "not a checkpoint")
    one_line_error(capsys, main(["serve", str(tmp_path / "missing")]), "missing")
    one_line_error(capsys, main(["serve", str(translator), "--host", "0.0.0.0"]), "--api-key")
    one_line_error(capsys, main(["serve", str(translator), str(translator)]), "--name")
    one_line_error(capsys, main(["serve", str(translator), "--max-tokens", "0"]), "--max-tokens 0")
    one_line_error(capsys, main(["serve", str(translator), "--queue", "0"]), "--queue 0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(capsys, main(["serve", str(translator), "--port", str(port)]), f"port {port}", "in use")


def test_sigterm_finishes_requests_in_flight_then_exits_0(translator):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NANOFORMER_API_KEY": ""}
    process = subprocess.Popen([*SERVE, str(translator), "--port", str(port), "--batch-wait", "1500",
                                "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.1)
        body = {"model": "translator", "text": "ein mann geht", "beam_size": 1}
        with ThreadPoolExecutor(3) as pool:
            flying = [pool.submit(httpx.post, url + "/v1/translate", json=body, timeout=30) for _ in range(3)]
            time.sleep(0.5)  # they wait 1.5 s in the queue for their batch
            process.send_signal(signal.SIGTERM)
            answers = [f.result() for f in flying]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert {a.json()["translations"][0]["text"] for a in answers} == {"a man walks"}
        assert process.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.stderr.read()
    assert "Traceback" not in stderr, stderr
