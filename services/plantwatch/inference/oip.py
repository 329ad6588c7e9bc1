"""`plantwatch serve inference`: DetectorModels over the Open Inference Protocol (KServe V2), HTTP/JSON.

Endpoints: GET /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready,
POST /v2/models/{name}/infer, and /metrics. One ONNX Runtime session per model, reused
for every request; concurrent requests to a model are coalesced into one session call
(`batcher.MicroBatcher`), and a changed model file is hot-reloaded once it passes its
checks (`slot.ModelSlot`).

The HTTP side is aiohttp's low-level server (Apache-2.0, already installed for kopf and
the Kubernetes client): its C parser refuses malformed framing (a `Content-Length` of
`abc` or `-1`, smuggling pairs), and a connection is a coroutine, not a thread, so idle
clients cost a few kilobytes each. Infer requests run on a fixed pool of worker threads (small
ones to a fast, unbatched model on the event loop itself: `INLINE_MAX_SECONDS`).
What one client can take is bounded by `Limits`; whatever is refused gets a JSON
`{"error": "..."}` with a 4xx (5xx only for a model that cannot serve, or a bug), never an
empty reply. JSON has no NaN or Infinity: inputs must be finite numbers (400 otherwise),
and an output value that is not finite is sent as `null`, so one row's overflow does not
cost the other rows of its batch their scores.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from plantwatch.contracts import model_card
from plantwatch.inference import image
from plantwatch.inference.models import OIP_TO_NUMPY, LoadedModel, ModelError
from plantwatch.inference.slot import ModelSlot

log = logging.getLogger(__name__)

REQUESTS = Counter("plantwatch_inference_requests_total", "Inference requests, by model and result.", ["model", "result"])
LATENCY = Histogram(
    "plantwatch_inference_seconds",
    "Time to run one inference request.",
    ["model"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5),
)
REFUSED = Counter(
    "plantwatch_inference_refused_total", "HTTP requests and connections refused before reaching a model, by reason.", ["reason"]
)


@dataclass(frozen=True)
class Limits:
    """What clients can take of the service; the defaults fit the operator's 1 GiB pod.

    `max_body_bytes`: a larger declared Content-Length is answered 413 before any of the body
    is read; a chunked body is cut off with 413 once it passes it. `read_timeout_s`: the body
    must arrive within it once the request head has (408 otherwise). `idle_timeout_s`: a
    connection that has not sent a complete request head within it, new or kept alive
    between requests, is closed. `workers`: threads that parse, check and run requests;
    requests beyond them wait as coroutines with their bodies unread, so memory peaks near
    workers x 15 x max body (a body of float rows parses into Python objects about 14 times
    its size: 54 MiB for 4 MiB, measured): 8 x 4 MiB stays near 0.5 GiB. `max_connections`: open connections;
    a request on one more is answered 503 and its connection closed.
    """

    max_body_bytes: int = 4 * 1024 * 1024
    read_timeout_s: float = 10.0
    idle_timeout_s: float = 15.0
    workers: int = 8
    max_connections: int = 512


class InferenceError(ValueError):
    """A request the model cannot answer; the message says what is expected."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def tensor_array(name: str, tensor: dict, datatype: str) -> np.ndarray:
    """One input's `data` as an array of `datatype` in its `shape`, refusing what would not convert faithfully (pure)."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InferenceError(f"input {name}: shape must be a list of non-negative integers, got {_show(shape)}")
    try:
        values = np.asarray(tensor.get("data"))
    except (ValueError, TypeError, RecursionError):  # ragged lists, more than 64 levels of nesting
        values = None
    if values is None or values.dtype.kind not in "biuf":
        raise InferenceError(
            f"input {name}: data must be numbers, a flat list or one nested to the shape (not strings, objects, null or ragged lists)"
        )
    values = values.ravel()
    dtype = np.dtype(OIP_TO_NUMPY[datatype])
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught below, by value, not as a warning
            array = values.astype(dtype)
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise InferenceError(
                f"input {name}: value {values[bad[0]]} at position {bad[0]} is not a finite {datatype} "
                f"(up to {np.finfo(dtype).max:.4g}; JSON has no NaN or Infinity)"
            )
    elif dtype.kind == "b":
        if values.size and not np.isin(values, (0, 1)).all():
            raise InferenceError(f"input {name}: BOOL data must be true/false (or 0/1)")
        array = values.astype(dtype)
    else:
        info = np.iinfo(dtype)
        bad = (
            np.flatnonzero((values != np.floor(values)) | (values < info.min) | (values > info.max))
            if values.dtype.kind == "f"
            else np.flatnonzero((values < info.min) | (values > info.max))
        )
        if bad.size:
            raise InferenceError(
                f"input {name}: value {values[bad[0]]} at position {bad[0]} does not fit {datatype} "
                f"(integers from {info.min} to {info.max})"
            )
        array = values.astype(dtype)
    if array.size != math.prod(shape):
        raise InferenceError(f"input {name}: {array.size} values do not fill shape {shape}")
    return array.reshape(shape)


def parse_request(model: LoadedModel, request: Any) -> dict[str, np.ndarray]:
    """An Open Inference Protocol request's inputs as arrays, checked against the model's signature (pure)."""
    expected = {t.name: t for t in model.inputs}
    feeds: dict[str, np.ndarray] = {}
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list):
        raise InferenceError('the body must be {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise InferenceError('each input must be an object {"name", "shape", "datatype", "data"}')
        name = tensor.get("name")
        if not isinstance(name, str) or name not in expected:
            raise InferenceError(f"unknown input {_show(name)}; the model takes {sorted(expected)}")
        if name in feeds:
            raise InferenceError(f"input {name} is given twice")
        spec = expected[name]
        datatype = tensor.get("datatype", spec.datatype)
        size = image.image_input(spec)
        if datatype == "BYTES" and size is not None:  # JPEG/PNG frames, each decoded, resized and normalised once
            try:
                feeds[name] = image.frames_from_tensor(name, tensor, size)
            except image.FrameError as exc:
                raise InferenceError(str(exc)) from None
            continue
        if not isinstance(datatype, str) or datatype not in OIP_TO_NUMPY:
            raise InferenceError(f"input {name}: datatype {_show(datatype)}; accepted: {sorted(OIP_TO_NUMPY)}")
        feeds[name] = array = tensor_array(name, tensor, datatype)
        if spec.datatype in OIP_TO_NUMPY and spec.datatype != datatype:  # e.g. FP64 sent to an FP32 model
            feeds[name] = tensor_array(name, {"shape": list(array.shape), "data": array}, spec.datatype)
        shape = feeds[name].shape
        if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
            raise InferenceError(f"input {name}: shape {list(shape)}; the model takes {spec.shape} (-1: any size)")
    missing = sorted(set(expected) - set(feeds))
    if missing:
        raise InferenceError(f"missing inputs {missing}")
    return feeds


def output_data(values: np.ndarray) -> list:
    """A tensor's values for JSON, which has no NaN or Infinity: those are sent as null (pure)."""
    data = values.ravel().tolist()
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        data = [v if math.isfinite(v) else None for v in data]
    return data


def response(model: LoadedModel, request: dict, results: list[np.ndarray]) -> dict:
    return {
        "model_name": model.name,
        "model_version": model.sha256[:12],
        "id": request.get("id", ""),
        "outputs": [
            {"name": spec.name, "datatype": spec.datatype, "shape": list(r.shape), "data": output_data(r)}
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
    return {
        "name": slot.name,
        "versions": [model.sha256[:12]],
        "platform": "onnx",
        "inputs": tensors(model.inputs),
        "outputs": tensors(model.outputs),
        "parameters": {
            "sha256": model.sha256,
            "execution_provider": model.active_provider,
            "requested_provider": model.requested_provider,
            "model_valid": slot.verdict.valid,
            "reason": slot.verdict.reason,
            "message": slot.verdict.message,
            **({"model_card": model_card.dumps(slot.card)} if slot.card else {}),
        },
    }


def answer_infer(slot: ModelSlot, body: bytes) -> tuple[int, dict]:
    """The status and JSON reply to an infer request's body (runs on a worker thread: parsing and the model call)."""
    started = time.perf_counter()
    try:
        reply = infer(slot, orjson.loads(body))
    except orjson.JSONDecodeError as exc:  # also: not UTF-8, NaN or Infinity, numbers beyond a double, nesting past 1024
        REQUESTS.labels(slot.name, "bad_request").inc()
        return 400, {"error": f"the body is not JSON (RFC 8259, UTF-8): {exc}"}
    except InferenceError as exc:
        REQUESTS.labels(slot.name, "bad_request").inc()
        return 400, {"error": str(exc)}
    except InvalidArgument as exc:  # a request the signature allows but this model's graph cannot take
        REQUESTS.labels(slot.name, "bad_request").inc()
        return 400, {"error": f"the model refused the inputs: {exc}"}
    except ModelError as exc:
        REQUESTS.labels(slot.name, "unavailable").inc()
        return 503, {"error": str(exc)}
    LATENCY.labels(slot.name).observe(time.perf_counter() - started)
    REQUESTS.labels(slot.name, "ok").inc()
    return 200, reply


def timed_answer(slot: ModelSlot, body: bytes) -> tuple[int, dict, float]:
    """`answer_infer` and the seconds it took, on whichever thread runs it."""
    started = time.perf_counter()
    status, reply = answer_infer(slot, body)
    return status, reply, time.perf_counter() - started


#: An infer request is answered on the event loop itself rather than handed to a worker thread when its
#: model is not micro-batched (a batched call waits for others), its body is small and the model's recent
#: small requests took less than INLINE_MAX_SECONDS: the hand-off to a thread and back costs more than such a
#: request (bench/inference.py, http_server), while a model that turns out slow goes to the workers after one.
INLINE_MAX_BYTES = 64 * 1024
INLINE_MAX_SECONDS = 0.0005


def answer_get(slots: dict[str, ModelSlot], path: str) -> tuple[int, dict]:
    """The status and JSON reply to a GET of an Open Inference Protocol path (pure but for reading the slots)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
        if parts[2] == "live":
            return 200, {"live": True}
        ready = bool(slots) and all(s.model is not None for s in slots.values())
        return (200 if ready else 503), {"ready": ready}
    if parts[:2] == ["v2", "models"] and len(parts) in (3, 4) and parts[3:] in ([], ["ready"]):
        slot = slots.get(parts[2])
        if slot is None:
            return 404, {"error": f"no model {parts[2]!r}; serving {sorted(slots)}"}
        if parts[3:] == ["ready"]:
            return 200, {"name": slot.name, "ready": slot.model is not None}
        if slot.model is None:
            return 503, {"error": f"model {slot.name} is not loaded: {slot.verdict.message}"}
        return 200, metadata(slot)
    return 404, {"error": "not found; see /v2/health/live, /v2/models/{name}, POST /v2/models/{name}/infer, /metrics"}


JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(status: int, obj: Any, close: bool = False) -> web.Response:
    reply = web.Response(status=status, body=orjson.dumps(obj), headers=JSON_HEADERS)
    if close:
        reply.force_close()
    return reply


class _BodyTooLarge(Exception):
    pass


class _Connection(web.RequestHandler):
    """One client connection: counted against `max_connections`, and malformed HTTP answered in JSON."""

    def __init__(self, manager: _Manager, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self.manager = manager
        self.over_capacity = False
        self.head_received = False
        self._first_head: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Answered (503) and closed once its request head is in, so the client reads why rather than a reset.
        self.over_capacity = len(self.manager.connections) > self.manager.limits.max_connections
        # aiohttp's keep-alive timer covers the wait between requests; only its newest releases also start it
        # on connect, so a client that never completes a first request head is timed out here too.
        self._first_head = asyncio.get_running_loop().call_later(self.manager.limits.idle_timeout_s, self._no_first_head)

    def _no_first_head(self) -> None:
        if not self.head_received:
            REFUSED.labels("idle_timeout").inc()
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._first_head is not None:
            self._first_head.cancel()
        super().connection_lost(exc)

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the reply had begun; no error reply can follow it")
        if status >= 500:  # not the client's doing: a bug, worth its traceback
            log.error("inference server: %s %s failed", request.method, request.path, exc_info=exc)
            REFUSED.labels("internal_error").inc()
            return json_response(status, {"error": "internal error; the service log has the details"}, close=True)
        REFUSED.labels("malformed_http").inc()
        why = (getattr(exc, "message", None) or message or str(exc)).strip()
        why = why.splitlines()[0].rstrip(":") if why else "unreadable request"  # the parser's first line names the fault
        return json_response(status, {"error": f"malformed HTTP request: {why}"}, close=True)


class _Manager(web.Server):
    def __init__(self, handler: Any, limits: Limits, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> _Connection:
        return _Connection(self, loop=self._loop, **self._kwargs)


class InferenceServer:
    """Serves model slots by name on `host:port` (port 0 picks a free one) from a background event loop."""

    def __init__(self, slots: dict[str, ModelSlot], port: int, host: str = "127.0.0.1", limits: Limits = Limits()):
        self.slots = slots
        self.limits = limits
        self._socket = socket.create_server((host, port), backlog=128)  # binds now: a busy port fails here
        self.port = self._socket.getsockname()[1]
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix=f"infer-{self.port}")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"http-{self.port}", daemon=True)
        self._manager: _Manager | None = None
        self._server: asyncio.Server | None = None
        self._workers: asyncio.Semaphore | None = None
        self._small_request_s: dict[str, float] = {}  # per model: moving average of a small request's time

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()

    async def _open(self) -> None:
        self._workers = asyncio.Semaphore(self.limits.workers)
        # lingering_time: after refusing a body unread, keep discarding (never storing) what the client
        # still sends for a moment, so it reads the refusal instead of a connection reset.
        self._manager = _Manager(
            self._handle, self.limits, keepalive_timeout=self.limits.idle_timeout_s, lingering_time=2.0, access_log=None
        )
        self._server = await self._loop.create_server(self._manager, sock=self._socket)

    async def _close(self) -> None:
        self._server.close()
        await self._manager.shutdown(5.0)  # kept-alive connections too: a stopped server answers no old client

    def stop(self) -> None:
        if self._thread.is_alive():
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        self._loop.close()
        self._socket.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request.protocol.head_received = True
        if request.protocol.over_capacity:
            REFUSED.labels("too_many_connections").inc()
            return json_response(
                503,
                {
                    "error": f"the service has {self.limits.max_connections} connections open, its "
                    "most (--max-connections); retry, or reuse a kept-alive connection"
                },
                close=True,
            )
        if request.method in ("GET", "HEAD"):
            if request.path == "/metrics":
                return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
            return json_response(*answer_get(self.slots, request.path))
        parts = request.path.strip("/").split("/")
        if request.method != "POST" or parts[:2] != ["v2", "models"] or len(parts) != 4 or parts[3] != "infer":
            return json_response(
                405 if request.method != "POST" else 404,
                {
                    "error": f"{request.method} {request.path}: this service takes GET of /v2/health/live, "
                    "/v2/health/ready, /v2/models/{name}[/ready], /metrics and POST /v2/models/{name}/infer"
                },
            )
        slot = self.slots.get(parts[2])
        if slot is None:
            return json_response(404, {"error": f"no model {parts[2]!r}; serving {sorted(self.slots)}"})
        if request.content_length is not None and request.content_length > self.limits.max_body_bytes:
            return self._too_large(request.content_length)
        async with self._workers:
            if request.headers.get("Expect", "").lower() == "100-continue":  # curl's, for bodies over 1 MiB
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                async with asyncio.timeout(self.limits.read_timeout_s):
                    body = await self._read_body(request)
            except TimeoutError:
                REFUSED.labels("read_timeout").inc()
                return json_response(
                    408, {"error": f"the body did not arrive within {self.limits.read_timeout_s:g} s (--read-timeout)"}, close=True
                )
            except _BodyTooLarge:
                return self._too_large(None)
            except (ConnectionError, asyncio.IncompleteReadError):  # the client hung up before its body was complete
                REFUSED.labels("incomplete_body").inc()
                return json_response(400, {"error": "the connection ended before the body was complete"}, close=True)
            small = len(body) <= INLINE_MAX_BYTES
            cost = self._small_request_s.get(slot.name, 0.0)
            if small and not slot.batched and cost < INLINE_MAX_SECONDS:
                status, reply, took = timed_answer(slot, body)
            else:
                status, reply, took = await self._loop.run_in_executor(self._pool, timed_answer, slot, body)
            if small:
                self._small_request_s[slot.name] = 0.8 * cost + 0.2 * took
        return json_response(status, reply)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        if request.content_length is not None:  # already checked against the limit
            return await request.content.readexactly(request.content_length)
        chunks, size = [], 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, length: int | None) -> web.Response:
        REFUSED.labels("body_too_large").inc()
        got = f"{length} bytes" if length is not None else "longer"
        return json_response(
            413, {"error": f"the body is {got}; this service takes at most {self.limits.max_body_bytes} (--max-body-bytes)"}, close=True
        )
