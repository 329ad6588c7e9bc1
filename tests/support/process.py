"""Waiting for a launched server to answer over HTTP, or for any condition, and ending a process: what the launchers and tests share."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_http_ready(
    proc: subprocess.Popen, url: str, log: Path, accept: Callable[[bytes], bool] = lambda body: True, timeout: float = 30.0
) -> None:
    """Until GET `url` answers 200 with a body `accept`s; RuntimeError with the tail of `log` if `proc` exits first, or on timeout."""
    name = Path(str(proc.args[0])).name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200 and accept(resp.read()):
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:g}s")


def wait_for(what: str, check: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> object:
    """`check()`'s first truthy answer, asked every `interval` seconds; after `timeout` seconds the test fails
    (pytest.fail) naming `what` and the last answer. The e2e suite's wait_for is this one at its own pace."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def terminate(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds; nothing for a process already gone."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
