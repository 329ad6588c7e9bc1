"""Inference benchmark: the served ONNX path against scikit-learn on the same fitted models, in one run.

    python bench/inference.py [--out bench/results/inference.json] [--seconds 1.0]

Every figure is single-threaded on both sides (ONNX Runtime intra- and inter-op
threads 1; scikit-learn's score_samples runs its trees sequentially; BLAS/OpenMP
pinned to one thread before numpy loads), measured in this process, so the
ratios compare like with like. Absolute rates move with the machine's load
(a shared 2-core box), the ratios much less.

1. IsolationForest recipe (the seed's model: 100 trees): rows/s through the
   served path (`ModelSlot.run`: the checked ONNX Runtime session behind the
   micro-batcher; the graph also scales and clips the raw features) against
   `IsolationForest.score_samples` on the already scaled features, per batch
   size. `ratio_vs_sklearn` is taken at the service's batch size (`--max-batch`,
   256): a served call never holds more rows than that.
2. The default recipe: served rows/s at the service's batch size, and the
   single-row latency (p50/p99) of one request through the served path.
3. For contrast, the seed's pattern: one scikit-learn call per reading.
4. Micro-batching: 8 threads sending one-row requests, through the batcher
   against each thread calling the session itself; and the same over HTTP (the
   Open Inference Protocol server, kept-alive connections), `--max-batch 256`
   against `--max-batch 1`.
5. The HTTP server itself: requests/s of 8 kept-alive clients sending one-row (and
   64-row) requests (default recipe, CPU, no micro-batching) against a trivial
   standard-library HTTP/1.1 echo server fed the same bodies by the same clients in the
   same run (`ratio_vs_stdlib_echo`).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy: scikit-learn and numpy get one thread, like ONNX Runtime

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

import onnxruntime  # noqa: E402
import sklearn  # noqa: E402

from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe  # noqa: E402
from plantwatch.features import window_features  # noqa: E402
from plantwatch.inference.oip import InferenceServer, Limits  # noqa: E402
from plantwatch.inference.slot import ModelSlot  # noqa: E402

CHANNELS = 9
BATCH_SIZES = (1, 16, 256, 4096)


def recording(rows: int, seed: int = 0) -> np.ndarray:
    """A 1 Hz multichannel pump recording: correlated channels, drift, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    base = np.sin(t / 90.0)[:, None] * rng.uniform(0.5, 2.0, CHANNELS)
    return 50 + base + 0.02 * t[:, None] * rng.uniform(0, 1, CHANNELS) / 100 + rng.normal(0, 0.3, (rows, CHANNELS))


def rate(call, rows_per_call: int, seconds: float) -> float:
    """Rows per second of `call`, best of three timed stretches of about `seconds` / 3 each."""
    call()  # warm caches and lazy initialisation
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3 or n == 0:
            call()
            n += 1
        best = max(best, n * rows_per_call / elapsed)
    return best


def served_slot(fitted, name: str, folder: Path, max_batch: int) -> ModelSlot:
    path = folder / f"{name}.onnx"
    path.write_bytes(fitted.to_onnx())
    slot = ModelSlot(name, path, threads=1, max_batch=max_batch)
    slot.check()
    if slot.model is None:
        raise SystemExit(f"bench: the {name} model does not load: {slot.verdict.message}")
    return slot


def isolation_forest(features: np.ndarray, folder: Path, seconds: float, max_batch: int) -> dict:
    fitted = fit_recipe(RECIPES["iforest"], VALUES[:400])
    forest = fitted.detector.forest
    slot = served_slot(fitted, "iforest", folder, max_batch)
    z = fitted.scaler.transform(features).astype(np.float32)
    x = features.astype(np.float32)
    served_scores = slot.run({"features": x[:2000]})[1][0]
    agreement = float(np.abs(served_scores - -forest.score_samples(z[:2000])).max())
    per_batch = {}
    for size in BATCH_SIZES:
        xb, zb = x[:size], z[:size]
        served = rate(lambda: slot.run({"features": xb}), size, seconds)
        sk = rate(lambda: forest.score_samples(zb), size, seconds)
        per_batch[str(size)] = {
            "served_rows_per_s": round(served),
            "sklearn_rows_per_s": round(sk),
            "ratio_vs_sklearn": round(served / sk, 2),
        }
    seed_rate = rate(lambda: [forest.score_samples(zb[i : i + 1]) for i in range(16)], 16, seconds)
    contention = batching_effect(slot, x, seconds)
    slot.close()
    headline = per_batch[str(max_batch)] if str(max_batch) in per_batch else None
    return {
        "model": f"sklearn IsolationForest, {len(forest.estimators_)} trees, max_samples {forest.max_samples_}, "
        f"{forest.n_features_in_} features; ONNX: one ai.onnx.ml TreeEnsembleRegressor (detect/iforest_onnx.py)",
        "max_abs_difference_vs_score_samples": agreement,
        "batch_size": max_batch,
        "ratio_vs_sklearn": headline["ratio_vs_sklearn"] if headline else None,
        "served_rows_per_s": headline["served_rows_per_s"] if headline else None,
        "sklearn_rows_per_s": headline["sklearn_rows_per_s"] if headline else None,
        "target": ">= 3",
        "by_batch_size": per_batch,
        "seed_one_sklearn_call_per_reading_rows_per_s": round(seed_rate),
        "served_at_batch_vs_seed_per_reading": round(headline["served_rows_per_s"] / seed_rate, 1) if headline else None,
        "micro_batching": contention,
    }


def default_recipe(features: np.ndarray, folder: Path, seconds: float, max_batch: int) -> dict:
    fitted = fit_recipe(RECIPES[DEFAULT_RECIPE], VALUES[:400])
    slot = served_slot(fitted, DEFAULT_RECIPE, folder, max_batch)
    x = features.astype(np.float32)
    batch = x[:max_batch]
    served = rate(lambda: slot.run({"features": batch}), len(batch), seconds)
    latencies = []
    one = x[:1]
    for _ in range(3000):
        start = time.perf_counter()
        slot.run({"features": one})
        latencies.append(time.perf_counter() - start)
    latencies = np.array(latencies[200:]) * 1000  # the first calls warm caches
    contention = batching_effect(slot, x, seconds)
    slot.close()
    return {
        "recipe": DEFAULT_RECIPE,
        "served_rows_per_s_at_batch": round(served),
        "batch_size": max_batch,
        "single_row_latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 4),
            "p99": round(float(np.percentile(latencies, 99)), 4),
            "calls": len(latencies),
        },
        "single_row_p99_target_ms": 0.5,
        "micro_batching": contention,
    }


def concurrent_rate(clients: int, seconds: float, request: Callable[[int], None]) -> float:
    """Requests/s of `clients` threads, thread k calling `request(k)` back to back for `seconds`."""
    done = [0] * clients
    stop = threading.Event()

    def client(k: int) -> None:
        while not stop.is_set():
            request(k)
            done[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def batching_effect(slot: ModelSlot, x: np.ndarray, seconds: float, clients: int = 8) -> dict:
    """Clients each sending one-row requests: through the micro-batcher, and each calling the session itself."""
    session, name = slot.model.session, slot.model.inputs[0].name
    before_batches, before_rows = slot._batcher.batches, slot._batcher.rows
    batched = concurrent_rate(clients, seconds, lambda k: slot.run({name: x[k : k + 1]}))
    batches, rows = slot._batcher.batches - before_batches, slot._batcher.rows - before_rows
    direct = concurrent_rate(clients, seconds, lambda k: session.run(None, {name: x[k : k + 1]}))
    unbatched_slot = ModelSlot(slot.name, slot.path, threads=1, max_batch=1)
    unbatched_slot.check()
    http_batched, http_direct = http_load(slot, x, seconds, clients), http_load(unbatched_slot, x, seconds, clients)
    unbatched_slot.close()
    return {
        "clients": clients,
        "in_process": {
            "batched_requests_per_s": round(batched),
            "unbatched_requests_per_s": round(direct),
            "ratio_batched_vs_unbatched": round(batched / direct, 2),
            "mean_rows_per_model_call": round(rows / max(batches, 1), 1),
        },
        "http": {
            "batched_requests_per_s": round(http_batched),
            "unbatched_requests_per_s": round(http_direct),
            "ratio_batched_vs_unbatched": round(http_batched / http_direct, 2),
        },
    }


def http_rate(port: int, path: str, bodies: list[bytes], seconds: float) -> float:
    """Requests/s of one thread per body, each posting its body to `path` over its own kept-alive HTTP connection."""
    import http.client

    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in bodies]

    def post(k: int) -> None:
        connections[k].request("POST", path, bodies[k], {"Content-Type": "application/json"})
        response = connections[k].getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"bench: HTTP {response.status} from {path}")

    try:
        return concurrent_rate(len(bodies), seconds, post)
    finally:
        for connection in connections:
            connection.close()


def infer_bodies(x: np.ndarray, clients: int, rows: int = 1) -> list[bytes]:
    return [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [rows, x.shape[1]],
                        "datatype": "FP32",
                        "data": x[k * rows : (k + 1) * rows].ravel().tolist(),
                    }
                ]
            }
        ).encode()
        for k in range(clients)
    ]


def http_load(slot: ModelSlot, x: np.ndarray, seconds: float, clients: int) -> float:
    """Requests/s of `clients` threads posting one-row infer requests to a served slot over kept-alive HTTP."""
    server = InferenceServer({slot.name: slot}, 0)
    server.start()
    try:
        return http_rate(server.port, f"/v2/models/{slot.name}/infer", infer_bodies(x, clients), seconds)
    finally:
        server.stop()


class EchoHandler(BaseHTTPRequestHandler):
    """The least an HTTP/1.1 JSON server does per request: read the body, answer it back, keep the connection."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def http_server(x: np.ndarray, folder: Path, seconds: float, clients: int = 8) -> dict:
    """The inference server's request rate against a trivial standard-library echo server, same clients, same run.

    Requests of one row, then of 64, to the default recipe on the CPU (no micro-batching): the
    one-row figure is the server's own cost per request (HTTP, JSON, validation, the hop to a
    worker thread, one tiny model call); at 64 rows the rows' JSON and checks weigh more. The
    clients share this process (and its GIL) with either server alike.
    """
    import aiohttp

    fitted = fit_recipe(RECIPES[DEFAULT_RECIPE], VALUES[:400])
    slot = served_slot(fitted, "http", folder, 1)
    echo = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    server = InferenceServer({slot.name: slot}, 0)
    server.start()
    by_rows = {}
    try:
        for rows in (1, 64):
            bodies = infer_bodies(x, clients, rows)
            echo_rate = http_rate(echo.server_address[1], "/", bodies, seconds)
            served = http_rate(server.port, f"/v2/models/{slot.name}/infer", bodies, seconds)
            by_rows[str(rows)] = {
                "body_bytes": len(bodies[0]),
                "served_requests_per_s": round(served),
                "stdlib_echo_requests_per_s": round(echo_rate),
                "ratio_vs_stdlib_echo": round(served / echo_rate, 2),
            }
    finally:
        echo.shutdown()
        echo.server_close()
        server.stop()
        slot.close()
    return {
        "clients": clients,
        "request": f"rows of {x.shape[1]} features, kept-alive connections",
        "server": f"aiohttp {aiohttp.__version__} low-level server, {Limits().workers} worker threads (inference/oip.py)",
        "ratio_vs_stdlib_echo": by_rows["1"]["ratio_vs_stdlib_echo"],
        "by_rows_per_request": by_rows,
    }


VALUES = recording(5000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "inference.json"))
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measured rate")
    parser.add_argument("--max-batch", type=int, default=256, help="the service's --max-batch")
    args = parser.parse_args()
    features = window_features(VALUES, RECIPES[DEFAULT_RECIPE].features)[400:]
    with tempfile.TemporaryDirectory(prefix="plantwatch-bench-") as tmp:
        result = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "onnxruntime": onnxruntime.__version__,
                "scikit_learn": sklearn.__version__,
            },
            "threads": {
                "onnxruntime_intra_op": 1,
                "onnxruntime_inter_op": 1,
                "sklearn": "sequential trees (n_jobs None)",
                "blas_openmp": 1,
            },
            "isolation_forest": isolation_forest(features, Path(tmp), args.seconds, args.max_batch),
            "default_recipe": default_recipe(features, Path(tmp), args.seconds, args.max_batch),
            "http_server": http_server(features.astype(np.float32), Path(tmp), args.seconds),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
