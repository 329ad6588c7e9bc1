"""Scoring through the inference service over HTTP gives the same anomaly_score readings as scoring in process."""

from __future__ import annotations

import numpy as np
import pytest

from plantwatch.detect import bundle
from plantwatch.detect.publish import manifests
from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe
from plantwatch.inference.client import RemoteModel, RemoteModelError
from plantwatch.inference.oip import InferenceServer
from plantwatch.inference.plant_scorers import DeferredScorer, _remote_scorer, plant_scorers, remote_scorers
from plantwatch.inference.slot import ModelSlot
from plantwatch.plant.load import plant_from_documents
from plantwatch.readings import Reading

NODE = {
    "apiVersion": "plantwatch.io/v1alpha1",
    "kind": "SensorNode",
    "metadata": {"name": "pump-1"},
    "spec": {
        "hardware": "esp32",
        "payload": {"format": "esp32-json", "topic": "sensors/pump-1/data"},
        "sensors": [
            {"name": "temperature", "type": "temperature", "unit": "celsius", "field": "t"},
            {"name": "vibration", "type": "vibration", "unit": "g", "field": "v"},
        ],
    },
}


def test_remote_scores_equal_local_scores(tmp_path):
    rng = np.random.default_rng(0)
    values = np.column_stack([45 + rng.normal(0, 0.3, 600), 1.5 + rng.normal(0, 0.05, 600)])
    values[500:, 1] += 1.0
    bundle.save(tmp_path / "model", fit_recipe(RECIPES[DEFAULT_RECIPE], values[:400]), ("temperature", "vibration"), 400)
    plant = plant_from_documents(
        [("node", NODE)] + [(f"published#{i}", d) for i, d in enumerate(manifests(tmp_path / "model", "pump-wear"))]
    )
    slot = ModelSlot("pump-wear", tmp_path / "model" / "model.onnx")
    slot.check()
    server = InferenceServer({"pump-wear": slot}, 0)
    server.start()
    try:
        (local,), problems = plant_scorers(plant)
        assert problems == []
        (remote,), problems = remote_scorers(plant, f"http://127.0.0.1:{server.port}", wait_s=0)
        assert problems == []
        streams = {"local": [], "remote": []}
        for t, (temperature, vibration) in enumerate(values):
            batch = [
                Reading("pump-1", "temperature", "temperature", temperature, t),
                Reading("pump-1", "vibration", "vibration", vibration, t),
            ]
            streams["local"] += local.score(batch)
            streams["remote"] += remote.score(batch)
    finally:
        server.stop()
        slot.close()
    assert len(streams["remote"]) == len(streams["local"]) > 500
    assert [(r.node, r.sensor, r.ts) for r in streams["remote"]] == [(r.node, r.sensor, r.ts) for r in streams["local"]]
    np.testing.assert_allclose([r.value for r in streams["remote"]], [r.value for r in streams["local"]], rtol=1e-6)


def _published_plant(tmp_path):
    rng = np.random.default_rng(1)
    values = np.column_stack([45 + rng.normal(0, 0.3, 400), 1.5 + rng.normal(0, 0.05, 400)])
    bundle.save(tmp_path / "model", fit_recipe(RECIPES[DEFAULT_RECIPE], values), ("temperature", "vibration"), 400)
    documents = [("node", NODE)] + [(f"published#{i}", d) for i, d in enumerate(manifests(tmp_path / "model", "pump-wear"))]
    return plant_from_documents(documents)


def _readings(t0: int, n: int) -> list[Reading]:
    return [
        r
        for t in range(t0, t0 + n)
        for r in (Reading("pump-1", "temperature", "temperature", 45.0, t), Reading("pump-1", "vibration", "vibration", 1.5, t))
    ]


def test_an_unreachable_service_is_a_problem_not_a_crash():
    from plantwatch.mqtt.broker import free_port

    with pytest.raises(RemoteModelError, match="infer"):
        RemoteModel(f"http://127.0.0.1:{free_port()}", "m")._request("POST", "/v2/models/m/infer", b"{}")
    with pytest.raises(ValueError, match="expected http"):
        RemoteModel("ftp://x", "m")
    plant = plant_from_documents(
        [
            ("node", NODE),
            (
                "detector",
                {
                    "apiVersion": "plantwatch.io/v1alpha1",
                    "kind": "DetectorModel",
                    "metadata": {"name": "gone"},
                    "spec": {"source": {"configMap": {"name": "gone-model"}}, "features": {"sensors": ["temperature"]}},
                },
            ),
        ]
    )
    (deferred,), problems = remote_scorers(plant, f"http://127.0.0.1:{free_port()}/{{name}}", wait_s=0, retry_s=0)
    assert [p.reason for p in problems] == ["ServiceUnavailable"] and "DetectorModel gone" in str(problems[0])
    assert deferred.score(_readings(0, 100)) == [] and deferred.scorer is None  # asked again, still down: no scores, no error


def test_a_service_that_starts_late_is_picked_up_and_one_that_goes_away_skips_scores(tmp_path):
    from plantwatch.mqtt.broker import free_port

    plant = _published_plant(tmp_path)
    port = free_port()
    (deferred,), problems = remote_scorers(plant, f"http://127.0.0.1:{port}", wait_s=0, retry_s=0)
    assert [p.reason for p in problems] == ["ServiceUnavailable"]
    assert deferred.score(_readings(0, 50)) == []
    slot = ModelSlot("pump-wear", tmp_path / "model" / "model.onnx")
    slot.check()
    server = InferenceServer({"pump-wear": slot}, port)
    server.start()
    try:
        scores = deferred.score(_readings(50, 100))
    finally:
        server.stop()
        slot.close()
    assert deferred.scorer is not None and len(scores) > 50
    assert {(s.node, s.sensor, s.type) for s in scores} == {("pump-1", "pump-wear", "anomaly_score")}
    # The service is gone again: the batch's readings are unaffected, its scores are skipped and counted.
    assert deferred.score(_readings(150, 20)) == []
    assert deferred.scorer.skipped == 20


def _swapped_sensors(plant_docs):
    """The published documents with the DetectorModel's sensors in the other order: the served card no longer fits."""
    import copy

    out = []
    for where, doc in plant_docs:
        doc = copy.deepcopy(doc)
        if doc.get("kind") == "DetectorModel":
            doc["spec"]["features"]["sensors"] = list(reversed(doc["spec"]["features"]["sensors"]))
        out.append((where, doc))
    return plant_from_documents(out)


def test_a_late_service_whose_model_does_not_fit_is_given_up_on_not_a_crash(tmp_path):
    from plantwatch.mqtt.broker import free_port

    rng = np.random.default_rng(1)
    values = np.column_stack([45 + rng.normal(0, 0.3, 400), 1.5 + rng.normal(0, 0.05, 400)])
    bundle.save(tmp_path / "model", fit_recipe(RECIPES[DEFAULT_RECIPE], values), ("temperature", "vibration"), 400)
    plant = _swapped_sensors([("node", NODE)] + [(f"published#{i}", d) for i, d in enumerate(manifests(tmp_path / "model", "pump-wear"))])
    port = free_port()
    (deferred,), problems = remote_scorers(plant, f"http://127.0.0.1:{port}", wait_s=0, retry_s=0)
    assert [p.reason for p in problems] == ["ServiceUnavailable"]
    slot = ModelSlot("pump-wear", tmp_path / "model" / "model.onnx")
    slot.check()
    server = InferenceServer({"pump-wear": slot}, port)
    server.start()
    try:
        assert deferred.score(_readings(0, 50)) == []  # the card's channels are not the spec's sensors
        assert deferred.scorer is None and deferred.gave_up.startswith("SignatureMismatch")
        assert deferred.score(_readings(50, 50)) == []  # given up on: not asked again, still no error
        # At start, the same service is a problem of that detector, not a traceback.
        scorers, problems = remote_scorers(plant, f"http://127.0.0.1:{port}", wait_s=0)
        assert scorers == [] and [p.reason for p in problems] == ["SignatureMismatch"]
    finally:
        server.stop()
        slot.close()


class _OddMetadata:
    """A real HTTP server answering every GET with fixed metadata (a service with a malformed card, or odd inputs)."""

    def __init__(self, metadata: dict):
        import http.server
        import json
        import threading

        body = json.dumps(metadata).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "metadata, error",
    [
        ({"inputs": [{"name": "x", "shape": [-1, 2]}], "parameters": {"model_card": "{not json"}}, "JSONDecodeError"),
        ({"inputs": [], "parameters": {}}, "IndexError"),
        ({"parameters": {}}, "KeyError"),
    ],
)
def test_a_service_with_malformed_metadata_is_a_problem_at_start_and_later(metadata, error):
    plant = plant_from_documents(
        [
            ("node", NODE),
            (
                "detector",
                {
                    "apiVersion": "plantwatch.io/v1alpha1",
                    "kind": "DetectorModel",
                    "metadata": {"name": "odd"},
                    "spec": {"source": {"configMap": {"name": "odd-model"}}, "features": {"sensors": ["temperature"]}},
                },
            ),
        ]
    )
    server = _OddMetadata(metadata)
    try:
        scorers, problems = remote_scorers(plant, f"http://127.0.0.1:{server.port}", wait_s=0)
        assert scorers == [] and [p.reason for p in problems] == ["InvalidModel"]
        assert "DetectorModel odd" in str(problems[0]) and error in str(problems[0])
        deferred = DeferredScorer(
            "odd", lambda: _remote_scorer(plant, plant.detectors[0], RemoteModel(f"http://127.0.0.1:{server.port}", "odd")), retry_s=0
        )
        assert deferred.score(_readings(0, 20)) == [] and error in deferred.gave_up
    finally:
        server.close()


class _RawService:
    """A real TCP server speaking just enough HTTP: metadata on GET; on POST either no answer at all (`hang`),
    or an answer after which it closes the kept-alive connection, as a restarting service would."""

    METADATA = b'{"name": "m", "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 1]}]}'

    def __init__(self, hang: bool):
        import socket
        import threading

        self.hang = hang
        self.posts = 0
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = []
        self._released = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        reader = conn.makefile("rb")
        try:
            while True:
                head = [reader.readline()]
                while head[-1] not in (b"\r\n", b""):
                    head.append(reader.readline())
                if head[0] == b"":
                    return
                length = next((int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length")), 0)
                reader.read(length)
                if head[0].startswith(b"POST"):
                    self.posts += 1
                    if self.hang:
                        self._released.wait(30)
                        return
                    body = b'{"outputs": [{"name": "score", "datatype": "FP32", "shape": [1], "data": [7.0]}]}'
                else:
                    body = self.METADATA
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                if head[0].startswith(b"GET") and not self.hang:
                    conn.close()  # kept alive as far as the client knows; closed here, as a restarting server does
                    return
        except OSError:
            return

    def close(self):
        self._released.set()
        self._listener.close()
        for conn in self._open:
            conn.close()


@pytest.mark.timeout(60)  # with the metadata timeout (600 s here) the call would outlast this and fail
def test_a_hung_service_costs_one_short_timeout_and_is_not_asked_twice():
    service = _RawService(hang=True)
    model = RemoteModel(f"http://127.0.0.1:{service.port}", "m", timeout_s=600, score_timeout_s=0.5)
    try:
        model.metadata()
        with pytest.raises(RemoteModelError, match="timed out"):
            model(np.zeros((1, 1)))  # times out: so on the scoring timeout, not the metadata one
    finally:
        service.close()
    assert service.posts == 1  # not sent again after a read timeout


def test_a_kept_alive_connection_the_server_closed_is_reopened_once():
    service = _RawService(hang=False)
    model = RemoteModel(f"http://127.0.0.1:{service.port}", "m")
    try:
        model.metadata()  # the server answers, then closes the connection the client keeps
        # The infer call (the input's name came with the metadata) finds its connection closed, reopens it once.
        np.testing.assert_array_equal(model(np.zeros((1, 1))), [7.0])
    finally:
        service.close()
    assert service.connections == 2 and service.posts == 1


def test_a_reply_that_is_not_scores_skips_the_batch_instead_of_failing_it(tmp_path):
    """A service (or a proxy in front of it) answering infer with something else: no scores, no exception."""
    import http.server
    import threading

    meta = {"name": "m", "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 2]}], "outputs": []}
    replies = iter([b"<html>502 Bad Gateway</html>", b'{"outputs": []}', b'{"outputs": [{"data": [0.1]}]}'])

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._reply(__import__("json").dumps(meta).encode())

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self._reply(next(replies))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = RemoteModel(f"http://127.0.0.1:{server.server_address[1]}", "m")
        rows = np.zeros((3, 2), dtype=np.float32)
        for expected in ("not JSON", "expected outputs", "1 scores for 3 rows"):
            with pytest.raises(RemoteModelError, match=expected):
                model(rows)
    finally:
        server.shutdown()
        server.server_close()
