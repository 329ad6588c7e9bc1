"""Image benchmark: JPEG frames per second through the inference service on CPU, batched vs unbatched, in one run.

    python bench/images.py [--out bench/results/images.json] [--seconds 1.5]

The shipped fire detector (`plantwatch.inference.fire`, 64x64) served by the
Open Inference Protocol server: 8 kept-alive clients each posting one-frame and
8-frame requests (base64 JPEG in a BYTES tensor, decoded, resized and normalised
once per frame by the service), with the micro-batcher (`--max-batch 64`)
against without it (`--max-batch 1`), ONNX Runtime on one thread, measured in
this process so the ratio compares like with like. Also the detector's
precision and recall on the project's labelled frames (seed 2, not tuned on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
from inference import http_rate  # noqa: E402

from plantwatch.inference.fire import fire_model  # noqa: E402
from plantwatch.inference.image import encode_frame, frames_request, preprocess_batch  # noqa: E402
from plantwatch.inference.oip import InferenceServer  # noqa: E402
from plantwatch.inference.slot import ModelSlot  # noqa: E402
from plantwatch.sim.frames import labelled_frames  # noqa: E402

CLIENTS = 8


def frames_per_s(path: Path, max_batch: int, jpegs: list[bytes], per_request: int, seconds: float) -> float:
    slot = ModelSlot("fire", path, threads=1, max_batch=max_batch)
    slot.check()
    server = InferenceServer({"fire": slot}, 0)
    server.start()
    try:
        bodies = [json.dumps(frames_request("frames", jpegs[k * per_request : (k + 1) * per_request])).encode() for k in range(CLIENTS)]
        return http_rate(server.port, "/v2/models/fire/infer", bodies, seconds) * per_request
    finally:
        server.stop()
        slot.close()


def accuracy() -> dict:
    labelled = labelled_frames(600, seed=2)
    session = onnxruntime.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
    fired = session.run(None, {"frames": preprocess_batch([encode_frame(f) for _, _, f in labelled], (64, 64))})[0][:, 0] > 0.5
    truth = np.asarray([fire for _, fire, _ in labelled])
    return {
        "frames": len(labelled),
        "precision": round(float((fired & truth).sum() / fired.sum()), 3),
        "recall": round(float((fired & truth).sum() / truth.sum()), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "images.json"))
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measured rate")
    args = parser.parse_args()
    jpegs = [encode_frame(f) for _, _, f in labelled_frames(CLIENTS * 8, seed=4)]
    with tempfile.TemporaryDirectory(prefix="plantwatch-bench-") as tmp:
        path = Path(tmp) / "fire.onnx"
        path.write_bytes(fire_model())
        rates = {}
        for per_request in (1, 8):
            batched = frames_per_s(path, 64, jpegs, per_request, args.seconds)
            unbatched = frames_per_s(path, 1, jpegs, per_request, args.seconds)
            rates[f"{per_request}_frame_requests"] = {
                "batched_frames_per_s": round(batched),
                "unbatched_frames_per_s": round(unbatched),
                "ratio_batched_vs_unbatched": round(batched / unbatched, 2),
            }
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "model": "fire (flame colour), 64x64, CPU, ONNX Runtime 1 thread",
        "clients": CLIENTS,
        "http": rates,
        "fire_detector": accuracy(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
