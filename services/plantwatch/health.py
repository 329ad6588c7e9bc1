"""The HTTP endpoints every Plantwatch process serves: /metrics, /healthz, /readyz."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class HealthServer:
    """`healthy`: the process works (liveness); `ready`: it can take traffic (readiness)."""

    def __init__(self, port: int, healthy: Callable[[], bool], ready: Callable[[], bool], host: str = "127.0.0.1"):
        checks = {"/healthz": healthy, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path in checks:
                    ok = checks[path]()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain")
                else:
                    self._reply(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
