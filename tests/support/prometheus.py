"""A real Prometheus (Debian's `prometheus` package) on loopback, scraping the targets a test started every second.

Its configuration and TSDB live in the test's folder; every target's series carry the labels given
(a namespace, as the chart's ServiceMonitors add), and rule files are evaluated every second too.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from plantwatch.mqtt.broker import free_port
from tests.support.process import terminate, wait_http_ready

PROMETHEUS = Path("/usr/bin/prometheus")
T = TypeVar("T")


def wait_until(what: str, condition: Callable[[], T], timeout: float = 90.0) -> T:
    """`condition()`'s first truthy answer, asked every 0.5 s (an unreachable or not-yet-filled API counts as falsy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (urllib.error.URLError, OSError, KeyError):
            result = None
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")


class Prometheus:
    """One prometheus process on 127.0.0.1 (`url`) scraping `targets` (job -> host:port); `get` reads its HTTP API."""

    def __init__(self, work_dir: Path, targets: dict[str, str], labels: dict[str, str], rule_files: Iterable[Path] = ()):
        if not PROMETHEUS.exists():
            raise RuntimeError(f"{PROMETHEUS} is missing: apt-get install prometheus")
        self.jobs = set(targets)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target], "labels": labels}]} for job, target in targets.items()
            ],
        }
        (work_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = work_dir / "prometheus.log"
        args = [str(PROMETHEUS), f"--config.file={work_dir / 'prometheus.yml'}", f"--storage.tsdb.path={work_dir / 'tsdb'}"]
        with open(log, "ab") as f:
            self.proc = subprocess.Popen([*args, f"--web.listen-address=127.0.0.1:{self.port}"], stdout=subprocess.DEVNULL, stderr=f)
        try:
            wait_http_ready(self.proc, self.url + "/-/ready", log)
        except RuntimeError:
            self.stop()
            raise

    def get(self, path: str) -> Any:
        """GET /api/v1/<path> (with its query string): the answer's `data`."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=5) as r:
            return json.loads(r.read())["data"]

    def wait_targets_up(self) -> None:
        """Until every job's target has been scraped successfully."""
        wait_until(
            "every target up",
            lambda: {t["labels"]["job"] for t in self.get("targets")["activeTargets"] if t["health"] == "up"} == self.jobs,
        )

    def stop(self) -> None:
        terminate(self.proc)
