"""HTTP for every Plantwatch process: a small threaded server, and /metrics /healthz /readyz.

`HttpServer` runs any `Handler` subclass on its own thread; `HealthServer` is the
one every service serves for Prometheus and the kubelet's probes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class Handler(BaseHTTPRequestHandler):
    """Replies with a body and its length (keep-alive friendly) and logs nothing per request."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, a kept-alive client's delayed ACK
    # holds every reply's body back ~40 ms.
    disable_nagle_algorithm = True

    def send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code: int, obj: Any) -> None:
        self.send(code, json.dumps(obj).encode(), "application/json")

    def send_metrics(self) -> None:
        self.send(200, generate_latest(), CONTENT_TYPE_LATEST)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 resets connections when a few dozen clients
    # (an inference service's callers, a Prometheus with several scrapers) connect at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[Handler]):
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """End kept-alive connections too: a stopped server must not go on answering its old clients."""
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class HttpServer:
    """A ThreadingHTTPServer on a background thread; port 0 picks a free port."""

    def __init__(self, handler: type[Handler], port: int, host: str = "127.0.0.1"):
        self._server = _Server((host, port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"http-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()


class HealthServer(HttpServer):
    """`healthy`: the process works (liveness); `ready`: it can take traffic (readiness)."""

    def __init__(
        self,
        port: int,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "127.0.0.1",
        routes: Mapping[str, Callable[[Handler], None]] | None = None,
    ):
        """`routes`: path prefix → a function that answers every request under it, any method
        (the alerts API at /api/v1/ shares the port the probes and Prometheus already reach)."""
        checks = {"/healthz": healthy, "/readyz": ready}
        mounted = dict(routes or {})

        class HealthHandler(Handler):
            def _mounted(self) -> bool:
                serve = next((f for prefix, f in mounted.items() if self.path.startswith(prefix)), None)
                if serve is not None:
                    serve(self)
                return serve is not None

            def do_POST(self) -> None:  # noqa: N802
                if not self._mounted():
                    self.close_connection = True  # the body is left unread
                    self.send(404, f"nothing to {self.command} at {self.path}\n".encode(), "text/plain")

            do_DELETE = do_POST  # noqa: N815

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self._mounted():
                    return
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self.send_metrics()
                elif path in checks:
                    ok = checks[path]()
                    self.send(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain")
                else:
                    self.send(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

        super().__init__(HealthHandler, port, host)


def probe(url: str, timeout: float = 10.0) -> tuple[bool, str]:
    """GET `url` as a readiness check does (`plantwatch probe`, the chart's `helm test` pod):
    (True, what answered) on 200, else (False, what was wrong)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status == 200, f"{url}: {reply.status} {reply.read(200).decode(errors='replace').strip()}"
    except urllib.error.HTTPError as e:
        return False, f"{url}: {e.code} {e.read(200).decode(errors='replace').strip()} (200 is ready)"
    except (urllib.error.URLError, OSError) as e:
        return False, f"{url}: no answer ({getattr(e, 'reason', e)})"
