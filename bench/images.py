"""Image benchmark: JPEG frames per second through the inference service on CPU, batched vs unbatched, in one run.

    python bench/images.py [--out bench/results/images.json] [--seconds 1.5]

The shipped fire detector (`plantwatch.inference.fire`, 64x64) served by the
Open Inference Protocol server: 8 kept-alive clients each posting one-frame and
8-frame requests (base64 JPEG in a BYTES tensor, decoded, resized and normalised
once per frame by the service), with the micro-batcher (`--max-batch 64`)
against without it (`--max-batch 1`), ONNX Runtime on one thread, measured in
this process so the ratio compares like with like. Also the detector's
precision and recall on the project's labelled frames and sequences (seed 2, not
tuned on): single frames by colour alone, and sequences per frame and per sequence
with and without the flicker gate (`accuracy`).
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
from plantwatch.inference.frame_scorer import FrameScorer, local_frames  # noqa: E402
from plantwatch.inference.image import encode_frame, frames_request, preprocess_batch  # noqa: E402
from plantwatch.inference.oip import InferenceServer  # noqa: E402
from plantwatch.inference.slot import ModelSlot  # noqa: E402
from plantwatch.readings import Reading  # noqa: E402
from plantwatch.sim.frames import FIRE_KINDS, FPS, SEQUENCE_FRAMES, SEQUENCE_KINDS, labelled_frames, labelled_sequences  # noqa: E402

CLIENTS = 8
#: Held-out sequences: 13 kinds x 20, 12 frames each.
SEQUENCES = 260


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


def _figures(fired: np.ndarray, truth: np.ndarray) -> dict:
    caught = (fired & truth).sum()
    return {"precision": round(float(caught / max(1, fired.sum())), 3), "recall": round(float(caught / truth.sum()), 3)}


def sequence_scores(sequences: list, flicker: bool) -> list[np.ndarray]:
    """Each sequence's frame scores as the gateway makes them: the sequences one after another from one camera, sent
    as stamped JPEGs to a FrameScorer of the fire model (flicker gated), or the colour score alone (`flicker` False)."""
    session = onnxruntime.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
    run = local_frames(session, "frames", (64, 64))
    scorer = FrameScorer("fire", ["cam"], "frame", run if flicker else lambda jpegs: {"fire": run(jpegs)["fire"]})
    out, t = [], 0.0
    for _, _, frames in sequences:
        readings = [(Reading("cam", "frame", "image", 1.0, (t := t + 1 / FPS)), encode_frame(f)) for f in frames]
        out.append(np.asarray([r.value for r in scorer.score_frames(readings)]))
    return out


def accuracy() -> dict:
    """The fire detector on labelled data it was not tuned on: single frames (seed 2), and sequences of seed 2 per frame
    and per sequence (a fire sequence caught: any frame over 0.5; a clear one falsely alarmed: any frame over 0.5)."""
    labelled = labelled_frames(600, seed=2)
    session = onnxruntime.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
    fired = session.run(None, {"frames": preprocess_batch([encode_frame(f) for _, _, f in labelled], (64, 64))})[0][:, 0] > 0.5
    single = {"frames": len(labelled), **_figures(fired, np.asarray([fire for _, fire, _ in labelled]))}
    sequences = labelled_sequences(SEQUENCES, seed=2)
    result = {"single_frames_colour_only": single, "sequences": len(sequences), "frames_per_sequence": SEQUENCE_FRAMES, "fps": FPS}
    kinds = np.asarray([k for k, _, _ in sequences])
    truth = np.asarray([fire for _, fire, _ in sequences])
    for name, flicker in (("colour_only", False), ("colour_and_flicker", True)):
        scores = sequence_scores(sequences, flicker)
        alarmed = np.asarray([(s > 0.5).any() for s in scores])
        frames = np.concatenate(scores) > 0.5
        frame_truth = np.repeat(truth, [len(s) for s in scores])
        result[name] = {
            "per_sequence": _figures(alarmed, truth),
            "per_frame": _figures(frames, frame_truth),
            "clear_sequences_alarmed_by_kind": {
                k: round(float(alarmed[kinds == k].mean()), 2) for k in SEQUENCE_KINDS if k not in FIRE_KINDS
            },
            "fire_sequences_caught_by_kind": {k: round(float(alarmed[kinds == k].mean()), 2) for k in FIRE_KINDS},
        }
    return result


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
        "model": "fire (flame colour and flicker), 64x64, CPU, ONNX Runtime 1 thread",
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
