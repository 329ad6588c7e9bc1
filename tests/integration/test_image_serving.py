"""Image DetectorModels over the Open Inference Protocol: JPEG frames in, scores out, any [N,3,H,W]->[N,K] classifier."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from plantwatch.inference.fire import fire_model
from plantwatch.inference.image import encode_frame, frames_request, preprocess_batch
from plantwatch.inference.oip import InferenceServer
from plantwatch.inference.slot import ModelSlot
from plantwatch.sim.frames import labelled_frames


def _post(port: int, name: str, body: dict) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", f"/v2/models/{name}/infer", json.dumps(body).encode(), {"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def _mean_colour_classifier() -> bytes:
    """Another image model, not the fire graph: [N,3,32,32] -> [N,3] softmax over the mean of each channel x 10."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Mul", ["flat", "ten"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "mean_colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.float32(10.0), "ten")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def test_frames_served_equal_local_scores_and_any_image_classifier_drops_in(tmp_path):
    (tmp_path / "fire.onnx").write_bytes(fire_model())
    (tmp_path / "colour.onnx").write_bytes(_mean_colour_classifier())
    slots = {"fire": ModelSlot("fire", tmp_path / "fire.onnx"), "colour": ModelSlot("colour", tmp_path / "colour.onnx")}
    for slot in slots.values():
        slot.check()
    labelled = labelled_frames(48, seed=3)
    jpegs = [encode_frame(f) for _, _, f in labelled]
    server = InferenceServer(slots, 0)
    server.start()
    try:
        # 12 clients at once, 4 frames each: the service decodes each frame once and batches the model calls.
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda i: _post(server.port, "fire", frames_request("frames", jpegs[i : i + 4])), range(0, 48, 4)))
        assert all(status == 200 for status, _ in replies), replies
        served = np.concatenate([np.asarray(r["outputs"][0]["data"], np.float32) for _, r in replies])
        local = ort.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
        expected = local.run(None, {"frames": preprocess_batch(jpegs, (64, 64))})[0][:, 0]
        np.testing.assert_allclose(served, expected, atol=1e-6)
        assert ((served > 0.5) == np.asarray([fire for _, fire, _ in labelled])).mean() > 0.8

        # The same frames to a different classifier: resized to its 32x32 input, three class scores each.
        status, reply = _post(server.port, "colour", frames_request("image", jpegs[:5]))
        assert status == 200, reply
        assert reply["outputs"][0]["shape"] == [5, 3]
        colour = ort.InferenceSession(_mean_colour_classifier(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(
            np.asarray(reply["outputs"][0]["data"]).reshape(5, 3),
            colour.run(None, {"image": preprocess_batch(jpegs[:5], (32, 32))})[0],
            atol=1e-6,
        )

        status, reply = _post(server.port, "fire", frames_request("frames", [jpegs[0], b"not a picture"]))
        assert status == 400 and "frame 1: not a readable JPEG or PNG image" in reply["error"], reply
        bad = frames_request("frames", jpegs[:1])
        bad["inputs"][0]["data"] = ["%%%"]
        status, reply = _post(server.port, "fire", bad)
        assert status == 400 and "frame 0 is not base64" in reply["error"], reply
    finally:
        server.stop()
        for slot in slots.values():
            slot.close()
