"""Test-wide settings.

The tests use tiny models, for which one thread is as fast as two, and on a busy machine
two threads per process oversubscribe the cores and make small steps many times slower.
"""

import torch

torch.set_num_threads(1)


# --------------------------------------------------------------------------- skips in CI
# A skipped proof passes silently. In CI (CI=true) every skip fails the run, with its reason
# printed, except the tests of an accelerator the CI machine does not have (tests/test_gpu.py).
import os  # noqa: E402

import pytest  # noqa: E402

ALLOWED_IN_CI = ("needs a cuda device", "needs a mps device")
_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason.removeprefix("Skipped: ")))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    hidden = [(node, reason) for node, reason in _skipped if not reason.startswith(ALLOWED_IN_CI)]
    if _in_ci() and hidden and exitstatus == 0:
        session.exitstatus = 1
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"CI: {len(hidden)} proof(s) skipped, which fails the run (CI=true):", red=True)
        for node, reason in hidden:
            session.config.pluginmanager.get_plugin("terminalreporter").write_line(f"  {node}: {reason}", red=True)
