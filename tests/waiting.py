"""Polling a condition while a child process runs, with a deadline (tests that kill or signal it)."""
from __future__ import annotations

import subprocess
import time


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0, poll_s: float = 0.005,
             before: str = "the kill") -> None:
    """Return once ``predicate()`` holds; fail if ``proc`` ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"finished before {before}: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(poll_s)
