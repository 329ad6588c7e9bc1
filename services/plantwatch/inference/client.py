"""A served DetectorModel as a local function: the Open Inference Protocol client the gateway scores through.

`RemoteModel(url, name)(vectors)` sends one infer request with every row of the
batch (the service micro-batches further across gateways) over a kept-alive
HTTP connection, and returns the first output. Its `metadata()` carries the
model card when the service has one, so a StreamScorer can build the same
features the model was trained on.
"""

from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

import numpy as np

from plantwatch.contracts import model_card
from plantwatch.contracts.model_card import ModelCard
from plantwatch.inference.image import frames_request
from plantwatch.inference.stream import ScoringUnavailable


class RemoteModelError(ScoringUnavailable):
    """The inference service did not answer the request; the message says what it said."""


#: The server closed or reset a kept-alive connection between requests: the request never reached it, so it is
#: sent again once on a new connection. A timeout is not among them: the service may be working on it (or hung),
#: and a second attempt would only double the wait of the pipeline that asked.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class RemoteModel:
    """`timeout_s`: for metadata; `score_timeout_s`: for each infer call, short, since the gateway's pipeline waits on it."""

    def __init__(self, url: str, name: str, timeout_s: float = 5.0, score_timeout_s: float = 2.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"inference URL {url!r}: expected http://host:port or https://host:port")
        self.name = name
        self._target = (parts.scheme, parts.hostname, parts.port)
        self.timeout_s = timeout_s
        self.score_timeout_s = score_timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._input: str | None = None

    def _request(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None) -> dict:
        scheme, host, port = self._target
        timeout = self.timeout_s if timeout is None else timeout
        with self._lock:
            while True:
                reused = self._connection is not None
                if self._connection is None:
                    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
                    self._connection = cls(host, port, timeout=timeout)
                self._connection.timeout = timeout
                if self._connection.sock is not None:
                    self._connection.sock.settimeout(timeout)
                try:
                    self._connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
                    response = self._connection.getresponse()
                    data = response.read()
                    break
                except (http.client.HTTPException, OSError) as exc:
                    self._connection.close()
                    self._connection = None
                    if not (reused and isinstance(exc, _STALE_CONNECTION)):  # only a kept-alive one is reopened, once
                        raise RemoteModelError(f"{method} {host}:{port}{path}: {exc or type(exc).__name__}") from None
        if response.status != 200:
            raise RemoteModelError(f"{method} {host}:{port}{path}: HTTP {response.status}: {data[:500].decode(errors='replace')}")
        try:
            return json.loads(data)
        except ValueError:
            raise RemoteModelError(f"{method} {host}:{port}{path}: the reply is not JSON: {data[:200].decode(errors='replace')}") from None

    def metadata(self, timeout: float | None = None) -> dict:
        meta = self._request("GET", f"/v2/models/{self.name}", timeout=timeout)
        inputs = meta.get("inputs") if isinstance(meta, dict) else None
        if inputs and isinstance(inputs[0], dict) and "name" in inputs[0]:
            self._input = inputs[0]["name"]  # the infer calls need it: no second request
        return meta

    def card(self) -> ModelCard | None:
        card = self.metadata().get("parameters", {}).get("model_card")
        return model_card.loads(card) if card else None

    def frames(self, jpegs: list[bytes]) -> dict[str, np.ndarray]:
        """Score JPEG frames with an image model: sent as they came (base64 BYTES), answered with every output by
        name, each [N, ...] (the first [N, K], the scores; the fire detector's second its flame masks)."""
        if self._input is None:
            self._input = self.metadata()["inputs"][0]["name"]
        reply = self._request(
            "POST", f"/v2/models/{self.name}/infer", json.dumps(frames_request(self._input, jpegs)).encode(), self.score_timeout_s
        )
        try:
            outputs = {o["name"]: np.asarray(o["data"], dtype=np.float64) for o in reply["outputs"]}
            scores = next(iter(outputs.values()))
        except (KeyError, IndexError, TypeError, ValueError, StopIteration):
            raise RemoteModelError(f"infer {self.name}: expected outputs[0].data with scores per frame, got {str(reply)[:200]}") from None
        if any(v.size % max(1, len(jpegs)) or v.size == 0 for v in outputs.values()):
            raise RemoteModelError(f"infer {self.name}: {scores.size} scores for {len(jpegs)} frames")
        return {name: v.reshape(len(jpegs), -1) for name, v in outputs.items()}

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._input is None:
            self._input = self.metadata()["inputs"][0]["name"]
        body = json.dumps(
            {"inputs": [{"name": self._input, "shape": list(vectors.shape), "datatype": "FP32", "data": vectors.ravel().tolist()}]}
        ).encode()
        reply = self._request("POST", f"/v2/models/{self.name}/infer", body, self.score_timeout_s)
        try:
            scores = np.asarray(reply["outputs"][0]["data"], dtype=np.float64)
        except (KeyError, IndexError, TypeError, ValueError):
            raise RemoteModelError(f"infer {self.name}: expected outputs[0].data with a score per row, got {str(reply)[:200]}") from None
        if scores.shape != (len(vectors),):
            raise RemoteModelError(f"infer {self.name}: {scores.size} scores for {len(vectors)} rows")
        return scores
