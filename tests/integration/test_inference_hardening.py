"""The inference service against hostile and careless clients: a real `serve inference` on loopback, raw sockets.

Every refusal is a 4xx (or a 503 for capacity) with a JSON `{"error": ...}` body, never an empty
reply or a traceback; bodies, slow clients and idle connections are bounded; threads are too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from plantwatch.inference.zscore import zscore_model
from plantwatch.mqtt.broker import free_port

WORKERS, MAX_CONNECTIONS, MAX_BODY = 4, 60, 64 * 1024
INFER = "/v2/models/m/infer"


def strict_json(body: bytes):
    """JSON as RFC 8259 has it: no NaN or Infinity tokens."""

    def refuse(token: str):
        raise ValueError(f"{token} is not JSON")

    return json.loads(body, parse_constant=refuse)


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, stderr: Path):
        self.proc, self.port, self.stderr = proc, port, stderr

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    (folder / "model.onnx").write_bytes(zscore_model([0.0, 0.0], [1.0, 1.0]))
    port, stderr = free_port(), folder / "stderr.txt"
    with stderr.open("wb") as err:
        # No --host: the default must be loopback (checked below).
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plantwatch.cli",
                "serve",
                "inference",
                "--model-name",
                "m",
                "--model",
                str(folder / "model.onnx"),
                "--http-port",
                str(port),
                "--reload-interval",
                "0",
                "--workers",
                str(WORKERS),
                "--max-connections",
                str(MAX_CONNECTIONS),
                "--max-body-bytes",
                str(MAX_BODY),
                "--read-timeout",
                "1",
                "--idle-timeout",
                "2",
            ],
            stderr=err,
        )
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as r:
                assert json.loads(r.read()) == {"ready": True}
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.time() < deadline and proc.poll() is None, f"the inference service did not start: {stderr.read_text()}"
            time.sleep(0.1)
    yield Server(proc, port, stderr)
    proc.terminate()
    proc.wait(10)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off the socket (status, lower-cased headers, body); (0, {}, b"") if it closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            assert not data, f"the connection closed in the middle of a response head: {data!r}"
            return 0, {}, b""
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:]))
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the middle of a response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed(sock: socket.socket) -> bool:
    """The server has closed the connection (EOF or reset), waiting up to the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def exchange(server: Server, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with server.connect() as sock:
        sock.sendall(raw)
        return read_response(sock)


def post(body: bytes, headers: bytes = b"") -> bytes:
    return (
        b"POST "
        + INFER.encode()
        + b" HTTP/1.1\r\nHost: plantwatch\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def infer_body(data, datatype: str = "FP32", name="features", shape=(1, 2)) -> bytes:
    return json.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}).encode()


MALFORMED = {
    "a body that is not UTF-8": post(b'{"inputs": [{"name": "caf\xe9", "shape": [1, 2], "data": [1, 2]}]}'),
    "Content-Length: abc": b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\nContent-Length: abc\r\n\r\n{}",
    "Content-Length: -1": b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\nContent-Length: -1\r\n\r\n{}",
    "Content-Length with chunked (smuggling)": b"POST "
    + INFER.encode()
    + b" HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "name as a list": post(infer_body([1, 2], name=["features"])),
    "INT64 2^70": post(infer_body([2**70, 1], datatype="INT64")),
    "INT64 as a fraction": post(infer_body([1.5, 1], datatype="INT64")),
    "deeply nested body": post(b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "deeply nested data": post(infer_body(json.loads("[" * 100 + "1" + "]" * 100))),
    "ragged data": post(infer_body([[1, 2], [3]], shape=(2, 2))),
    "strings as data": post(infer_body(["1", "2"])),
    "datatype as a list": post(infer_body([1, 2], datatype=["FP32"])),
    "shape as a string": post(infer_body([1, 2], shape="1,2")),
    "data that does not fill the shape": post(infer_body([1, 2, 3])),
    "a NaN token": post(b'{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [NaN, 1]}]}'),
    "an FP32 overflow": post(infer_body([1e39, 1])),
    "not an object": post(b"[1, 2, 3]"),
    "TLS on the HTTP port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
    "an unknown method": b"PUT " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n",
}


def test_every_malformed_request_gets_a_4xx_with_a_json_error_and_no_traceback(server):
    for case, raw in MALFORMED.items():
        status, headers, body = exchange(server, raw)
        assert 400 <= status < 500, f"{case}: HTTP {status} {body!r}"
        assert headers["content-type"] == "application/json", f"{case}: {headers}"
        error = strict_json(body)["error"]
        assert isinstance(error, str) and error, f"{case}: {body!r}"
    status, _, body = exchange(server, post(infer_body([2**70, 1], datatype="INT64")))
    assert "INT64" in strict_json(body)["error"] and "9223372036854775807" in strict_json(body)["error"]
    # ... and the service is still answering, with nothing alarming in its log
    status, _, body = exchange(server, post(infer_body([3, 4])))
    assert status == 200 and strict_json(body)["outputs"][0]["data"] == [12.5]
    assert "Traceback" not in server.stderr.read_text(), server.stderr.read_text()


def test_non_finite_outputs_are_null_and_the_other_rows_keep_their_scores(server):
    # (1e20)^2 overflows FP32 inside the model; JSON has no Infinity, so that row's score is null.
    status, _, body = exchange(server, post(infer_body([1e20, 1e20, 3, 4], shape=(2, 2))))
    assert status == 200
    assert strict_json(body)["outputs"][0]["data"] == [None, 12.5]


def test_an_oversized_body_is_refused_before_it_is_sent(server):
    too_big = str(100 * 1024 * 1024).encode()
    # Expect: 100-continue: the client waits for a go-ahead, so the refusal comes before any of the body.
    status, headers, body = exchange(
        server, b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\nContent-Length: " + too_big + b"\r\nExpect: 100-continue\r\n\r\n"
    )
    assert status == 413 and str(MAX_BODY) in strict_json(body)["error"]
    # Without it the client sends a first slice; the refusal comes without the server waiting for the rest.
    with server.connect() as sock:
        sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\nContent-Length: " + too_big + b"\r\n\r\n")
        sock.sendall(b"[" * 4096)
        status, headers, body = read_response(sock)
        assert status == 413 and headers.get("connection") == "close" and "error" in strict_json(body)
    # A chunked body has no length to check up front: it is cut off once it passes the limit.
    chunk = b"8000\r\n" + b" " * 0x8000 + b"\r\n"
    status, _, body = exchange(
        server, b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * (MAX_BODY // 0x8000 + 1)
    )
    assert status == 413 and "error" in strict_json(body)


def test_idle_and_slow_clients_are_timed_out(server):
    with server.connect() as silent, server.connect() as half_head, server.connect() as slow_body, server.connect() as kept_alive:
        half_head.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\n")
        slow_body.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\n{")
        kept_alive.sendall(post(infer_body([3, 4])))
        assert read_response(kept_alive)[0] == 200
        status, headers, body = read_response(slow_body)  # --read-timeout 1
        assert status == 408 and "--read-timeout" in strict_json(body)["error"]
        for sock in (silent, half_head, slow_body, kept_alive):  # --idle-timeout 2
            assert closed(sock)
    with server.connect() as cut_short:  # the client stops half-way through its body and hangs up
        cut_short.sendall(b"POST " + INFER.encode() + b' HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\n{"inputs"')
        cut_short.shutdown(socket.SHUT_WR)
        assert closed(cut_short)
    assert exchange(server, post(infer_body([3, 4])))[0] == 200
    assert "Traceback" not in server.stderr.read_text(), server.stderr.read_text()  # an unfinished body is no error of ours


def test_idle_connections_take_no_thread_and_past_the_cap_are_refused_with_503(server):
    assert exchange(server, post(infer_body([3, 4])))[0] == 200
    before = server.threads()  # the pool starts its worker threads as load needs them, up to --workers
    sockets = [server.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in sockets[: MAX_CONNECTIONS // 2]:  # half send a request at once (more than there are workers)
            sock.sendall(post(infer_body([3, 4])))
        for sock in sockets[: MAX_CONNECTIONS // 2]:
            assert read_response(sock)[0] == 200
        assert server.threads() <= before + WORKERS
        with server.connect() as extra:
            extra.sendall(post(infer_body([3, 4])))
            status, headers, body = read_response(extra)
            assert status == 503 and "--max-connections" in strict_json(body)["error"]
            assert headers.get("connection") == "close" and closed(extra)
        assert server.threads() <= before + WORKERS
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.2)  # the server sees the closes
    status, _, _ = exchange(server, post(infer_body([3, 4])))
    assert status == 200


def test_it_listens_on_loopback_unless_told_otherwise(server):
    """The fixture's service was started without --host: its listening socket is 127.0.0.1, not every interface."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) == server.port:  # 0A: LISTEN
            listening.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    assert listening == {"127.0.0.1"}
