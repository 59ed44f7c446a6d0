"""Stopping a run gracefully: Ctrl-C and SIGTERM become a request to stop after the current step.

SIGTERM is what `kill`, `timeout` and cluster schedulers send before they pull the plug: it gets
the same graceful stop as Ctrl-C, so a pre-empted run leaves a resumable checkpoint.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def catch_stop_signals(on_signal: Callable[[str], None]) -> Callable[[], None]:
    """Call `on_signal("Ctrl-C" | "SIGTERM")` on those signals until the returned undo function runs.

    Signal handlers belong to the main thread: elsewhere (a server's worker) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        on_signal("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]
