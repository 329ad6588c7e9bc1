"""`plantwatch serve inference`: DetectorModels over the Open Inference Protocol (KServe V2), HTTP/JSON.

Endpoints: GET /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready,
POST /v2/models/{name}/infer, and /metrics. One ONNX Runtime session per model, reused
for every request.
"""

from __future__ import annotations

import json
import time

import numpy as np
from prometheus_client import Counter, Histogram

from plantwatch.health import Handler, HttpServer
from plantwatch.inference.models import OIP_TO_NUMPY, LoadedModel

REQUESTS = Counter("plantwatch_inference_requests_total", "Inference requests, by model and result.", ["model", "result"])
LATENCY = Histogram("plantwatch_inference_seconds", "Time to run one inference request.", ["model"],
                    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5))


class InferenceError(ValueError):
    """A request the model cannot answer; the message says what is expected."""


def infer(model: LoadedModel, request: dict) -> dict:
    """Run one Open Inference Protocol request (pure apart from the session call)."""
    expected = {t.name: t for t in model.inputs}
    feeds = {}
    for tensor in request.get("inputs", []):
        spec = expected.get(tensor.get("name"))
        if spec is None:
            raise InferenceError(f"unknown input {tensor.get('name')!r}; the model takes {sorted(expected)}")
        dtype = OIP_TO_NUMPY.get(tensor.get("datatype", spec.datatype))
        if dtype is None:
            raise InferenceError(f"datatype {tensor.get('datatype')!r}; accepted: {sorted(OIP_TO_NUMPY)}")
        try:
            feeds[spec.name] = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        except (KeyError, ValueError, TypeError) as exc:
            raise InferenceError(f"input {spec.name}: data does not fit shape {tensor.get('shape')}: {exc}") from None
        shape = feeds[spec.name].shape
        if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
            raise InferenceError(f"input {spec.name}: shape {list(shape)}; the model takes {spec.shape} (-1: any size)")
    missing = sorted(set(expected) - set(feeds))
    if missing:
        raise InferenceError(f"missing inputs {missing}")
    results = model.session.run(None, feeds)
    return {
        "model_name": model.name,
        "id": request.get("id", ""),
        "outputs": [
            {"name": spec.name, "datatype": spec.datatype, "shape": list(r.shape), "data": r.ravel().tolist()}
            for spec, r in zip(model.outputs, results)
        ],
    }


def metadata(model: LoadedModel) -> dict:
    def tensors(ts):
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in ts]

    return {"name": model.name, "versions": [model.sha256[:12]], "platform": "onnx",
            "inputs": tensors(model.inputs), "outputs": tensors(model.outputs),
            "parameters": {"sha256": model.sha256, "execution_provider": model.active_provider,
                           "requested_provider": model.requested_provider}}


class InferenceServer(HttpServer):
    """Serves loaded models by name."""

    def __init__(self, models: dict[str, LoadedModel], port: int, host: str = "127.0.0.1"):
        self.models = models
        server = self

        class InferenceHandler(Handler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = self.path.strip("/").split("/")
                if self.path == "/metrics":
                    return self.send_metrics()
                if parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
                    return self.send_json(200, {"live": True} if parts[2] == "live" else {"ready": bool(server.models)})
                if parts[:2] == ["v2", "models"] and len(parts) in (3, 4):
                    model = server.models.get(parts[2])
                    if model is None:
                        return self.send_json(404, {"error": f"no model {parts[2]!r}; serving {sorted(server.models)}"})
                    if len(parts) == 4 and parts[3] == "ready":
                        return self.send_json(200, {"name": model.name, "ready": True})
                    return self.send_json(200, metadata(model))
                self.send_json(404, {"error": "not found; see /v2/health/live, /v2/models/{name}, /v2/models/{name}/infer"})

            def do_POST(self) -> None:  # noqa: N802
                parts = self.path.strip("/").split("/")
                if parts[:2] != ["v2", "models"] or len(parts) != 4 or parts[3] != "infer":
                    return self.send_json(404, {"error": "POST /v2/models/{name}/infer"})
                model = server.models.get(parts[2])
                if model is None:
                    return self.send_json(404, {"error": f"no model {parts[2]!r}; serving {sorted(server.models)}"})
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                started = time.perf_counter()
                try:
                    reply = infer(model, json.loads(body))
                except (InferenceError, json.JSONDecodeError) as exc:
                    REQUESTS.labels(model.name, "bad_request").inc()
                    return self.send_json(400, {"error": str(exc)})
                LATENCY.labels(model.name).observe(time.perf_counter() - started)
                REQUESTS.labels(model.name, "ok").inc()
                self.send_json(200, reply)

        super().__init__(InferenceHandler, port, host)
