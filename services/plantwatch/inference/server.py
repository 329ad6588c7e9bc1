"""`plantwatch serve inference`: DetectorModels over the Open Inference Protocol (KServe V2), HTTP/JSON.

Endpoints: GET /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready,
POST /v2/models/{name}/infer, and /metrics. One ONNX Runtime session per model, reused
for every request; concurrent requests to a model are coalesced into one session call
(`batcher.MicroBatcher`), and a changed model file is hot-reloaded once it passes its
checks (`serving.ModelSlot`).
"""

from __future__ import annotations

import json
import time

import numpy as np
from prometheus_client import Counter, Histogram

from plantwatch.health import Handler, HttpServer
from plantwatch.inference.models import OIP_TO_NUMPY, LoadedModel, ModelError
from plantwatch.inference.serving import ModelSlot

REQUESTS = Counter("plantwatch_inference_requests_total", "Inference requests, by model and result.", ["model", "result"])
LATENCY = Histogram("plantwatch_inference_seconds", "Time to run one inference request.", ["model"],
                    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5))


class InferenceError(ValueError):
    """A request the model cannot answer; the message says what is expected."""


def parse_request(model: LoadedModel, request: dict) -> dict[str, np.ndarray]:
    """An Open Inference Protocol request's inputs as arrays, checked against the model's signature (pure)."""
    expected = {t.name: t for t in model.inputs}
    feeds = {}
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list):
        raise InferenceError('the body must be {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise InferenceError('each input must be an object {"name", "shape", "datatype", "data"}')
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
        if OIP_TO_NUMPY.get(spec.datatype) not in (None, dtype):
            feeds[spec.name] = feeds[spec.name].astype(OIP_TO_NUMPY[spec.datatype])
        shape = feeds[spec.name].shape
        if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
            raise InferenceError(f"input {spec.name}: shape {list(shape)}; the model takes {spec.shape} (-1: any size)")
    missing = sorted(set(expected) - set(feeds))
    if missing:
        raise InferenceError(f"missing inputs {missing}")
    return feeds


def response(model: LoadedModel, request: dict, results: list[np.ndarray]) -> dict:
    return {
        "model_name": model.name,
        "model_version": model.sha256[:12],
        "id": request.get("id", ""),
        "outputs": [
            {"name": spec.name, "datatype": spec.datatype, "shape": list(r.shape), "data": r.ravel().tolist()}
            for spec, r in zip(model.outputs, results)
        ],
    }


def infer(slot: ModelSlot, request: dict) -> dict:
    """Run one Open Inference Protocol request on the slot's current model (micro-batched when it can be)."""
    model = slot.model
    if model is None:
        raise ModelError("NotLoaded", f"model {slot.name} is not loaded: {slot.verdict.message}")
    model, results = slot.run(parse_request(model, request))
    return response(model, request, results)


def metadata(slot: ModelSlot) -> dict:
    def tensors(ts):
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in ts]

    model = slot.model
    return {"name": slot.name, "versions": [model.sha256[:12]], "platform": "onnx",
            "inputs": tensors(model.inputs), "outputs": tensors(model.outputs),
            "parameters": {"sha256": model.sha256, "execution_provider": model.active_provider,
                           "requested_provider": model.requested_provider,
                           "model_valid": slot.verdict.valid, "reason": slot.verdict.reason,
                           "message": slot.verdict.message,
                           **({"model_card": json.dumps(slot.card)} if slot.card else {})}}


class InferenceServer(HttpServer):
    """Serves model slots by name."""

    def __init__(self, slots: dict[str, ModelSlot], port: int, host: str = "127.0.0.1"):
        self.slots = slots
        server = self

        def not_found(name: str) -> dict:
            return {"error": f"no model {name!r}; serving {sorted(server.slots)}"}

        class InferenceHandler(Handler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = self.path.strip("/").split("/")
                if self.path == "/metrics":
                    return self.send_metrics()
                if parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
                    if parts[2] == "live":
                        return self.send_json(200, {"live": True})
                    ready = bool(server.slots) and all(s.model is not None for s in server.slots.values())
                    return self.send_json(200 if ready else 503, {"ready": ready})
                if parts[:2] == ["v2", "models"] and len(parts) in (3, 4):
                    slot = server.slots.get(parts[2])
                    if slot is None:
                        return self.send_json(404, not_found(parts[2]))
                    if len(parts) == 4 and parts[3] == "ready":
                        return self.send_json(200, {"name": slot.name, "ready": slot.model is not None})
                    if slot.model is None:
                        return self.send_json(503, {"error": f"model {slot.name} is not loaded: {slot.verdict.message}"})
                    return self.send_json(200, metadata(slot))
                self.send_json(404, {"error": "not found; see /v2/health/live, /v2/models/{name}, /v2/models/{name}/infer"})

            def do_POST(self) -> None:  # noqa: N802
                parts = self.path.strip("/").split("/")
                if parts[:2] != ["v2", "models"] or len(parts) != 4 or parts[3] != "infer":
                    return self.send_json(404, {"error": "POST /v2/models/{name}/infer"})
                slot = server.slots.get(parts[2])
                if slot is None:
                    return self.send_json(404, not_found(parts[2]))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                started = time.perf_counter()
                try:
                    reply = infer(slot, json.loads(body))
                except (InferenceError, json.JSONDecodeError) as exc:
                    REQUESTS.labels(slot.name, "bad_request").inc()
                    return self.send_json(400, {"error": str(exc)})
                except ModelError as exc:
                    REQUESTS.labels(slot.name, "unavailable").inc()
                    return self.send_json(503, {"error": str(exc)})
                LATENCY.labels(slot.name).observe(time.perf_counter() - started)
                REQUESTS.labels(slot.name, "ok").inc()
                self.send_json(200, reply)

        super().__init__(InferenceHandler, port, host)
