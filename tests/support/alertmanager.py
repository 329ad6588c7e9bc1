"""A real Alertmanager (Debian's prometheus-alertmanager) on loopback, with a webhook recorder as its only receiver.

Alertmanager groups by [alertname] with short waits and posts each notification to a
`WebhookRecorder` (an HTTP server on 127.0.0.1 that keeps the JSON bodies); no cluster
gossip, storage in a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from plantwatch.mqtt.broker import free_port
from tests.support.process import terminate, wait_http_ready

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


class WebhookRecorder:
    """Records the JSON body of every POST; `wait_for` blocks until a recorded body satisfies a predicate."""

    def __init__(self):
        self.bodies: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's hook name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with recorder._cond:
                    recorder.bodies.append(body)
                    recorder._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def received(self, predicate: Callable[[dict[str, Any]], bool] = lambda b: True) -> list[dict[str, Any]]:
        with self._cond:
            return [b for b in self.bodies if predicate(b)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The first body satisfying `predicate` (AssertionError with what did arrive after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for body in self.bodies:
                    if predicate(body):
                        return body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching webhook notification within {timeout:g}s; received: {self.bodies}")
                self._cond.wait(left)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _config(webhook_url: str, group_wait: str, group_interval: str) -> str:
    return json.dumps(
        {
            "route": {
                "receiver": "recorder",
                "group_by": ["alertname"],
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "recorder", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
        }
    )


class Alertmanager:
    """One prometheus-alertmanager process on 127.0.0.1 (`url`), notifying `webhook`; stop() ends both."""

    def __init__(self, work_dir: Path, group_wait: str = "2s", group_interval: str = "1s"):
        if not ALERTMANAGER.exists():
            raise RuntimeError(f"{ALERTMANAGER} is missing: apt-get install prometheus-alertmanager")
        self.webhook = WebhookRecorder()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = work_dir / "alertmanager.yml"
        config.write_text(_config(self.webhook.url, group_wait, group_interval))  # JSON is YAML
        self._log = work_dir / "alertmanager.log"
        args = [
            str(ALERTMANAGER),
            f"--config.file={config}",
            f"--storage.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_http_ready(self.proc, self.url + "/-/ready", self._log)
        except RuntimeError:
            self.stop()
            raise

    def api(self, path: str, body: Any = None) -> Any:
        """GET (or POST `body` as JSON to) /api/v2/<path> and return the decoded answer."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/v2/{path}", data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def stop(self) -> None:
        terminate(self.proc)
        self.webhook.stop()
