"""The inference service speaks the Open Inference Protocol over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from plantwatch.inference.models import ModelError, load_model, sha256_of
from plantwatch.inference.zscore import zscore_model
from plantwatch.mqtt.broker import free_port


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(zscore_model([45.0, 1.5, 12.0], [1.5, 0.3, 1.0]))
    return path


def test_serve_inference_over_http(model_file):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "serve",
            "inference",
            "--model-name",
            "bearing-wear",
            "--model",
            str(model_file),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--sha256",
            sha256_of(model_file.read_bytes()),
        ]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                assert get(base + "/v2/health/ready") == {"ready": True}
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.time() < deadline and proc.poll() is None, "the inference service did not start"
                time.sleep(0.1)
        assert get(base + "/v2/health/live") == {"live": True}
        meta = get(base + "/v2/models/bearing-wear")
        assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
        assert meta["parameters"]["execution_provider"] == "cpu"
        reply = post(
            base + "/v2/models/bearing-wear/infer",
            {"id": "r1", "inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [45, 1.5, 12, 48, 2.1, 12]}]},
        )
        (out,) = reply["outputs"]
        assert reply["id"] == "r1" and out["name"] == "score" and out["shape"] == [2]
        assert out["data"][0] == pytest.approx(0.0) and out["data"][1] == pytest.approx((4 + 4 + 0) / 3, rel=1e-5)
        with pytest.raises(urllib.error.HTTPError) as err:
            post(
                base + "/v2/models/bearing-wear/infer",
                {"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
            )
        assert err.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as err:
            get(base + "/v2/models/nope")
        assert err.value.code == 404
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_models_are_refused_with_a_reason(model_file, tmp_path):
    with pytest.raises(ModelError) as err:
        load_model("m", model_file, expected_sha256="0" * 64)
    assert err.value.reason == "ChecksumMismatch"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError) as err:
        load_model("m", junk)
    assert err.value.reason == "InvalidModel"
    with pytest.raises(ModelError) as err:
        load_model("m", tmp_path / "missing.onnx")
    assert err.value.reason == "SourceNotFound"


def test_gpu_provider_falls_back_to_cpu_and_says_so(model_file):
    import onnxruntime as ort

    model = load_model("m", model_file, provider="cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert model.active_provider == "cuda"
    else:
        assert (model.requested_provider, model.active_provider) == ("cuda", "cpu")


def test_model_url_is_downloaded_and_checked(model_file, tmp_path):
    import functools
    import http.server
    import threading

    from plantwatch.inference.models import fetch_model

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(model_file.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
    try:
        digest = sha256_of(model_file.read_bytes())
        path = fetch_model(url, digest, tmp_path / "fetched.onnx")
        assert load_model("m", path, expected_sha256=digest).sha256 == digest
        with pytest.raises(ModelError) as err:
            fetch_model(url, "1" * 64, tmp_path / "other.onnx")
        assert err.value.reason == "ChecksumMismatch" and not (tmp_path / "other.onnx").exists()
    finally:
        server.shutdown()


def swap_in(folder, model: bytes, card_sha: str | None = None) -> None:
    """Replace the model (and its card) the way the kubelet updates a ConfigMap volume: one atomic rename."""
    import os

    staged = folder / f".staged-{time.monotonic_ns()}"
    staged.mkdir()
    (staged / "model.onnx").write_bytes(model)
    if card_sha is not None:
        (staged / "model-card.json").write_text(json.dumps({"model": {"sha256": card_sha}}))
    link = folder / "..data"
    tmp_link = folder / "..data_tmp"
    os.symlink(staged.name, tmp_link)
    os.replace(tmp_link, link)
    for name in ("model.onnx", "model-card.json"):
        if not (folder / name).is_symlink():
            os.symlink(f"..data/{name}", folder / name)


def test_concurrent_requests_share_model_calls_and_get_their_own_rows(tmp_path):
    import concurrent.futures

    from plantwatch.inference.oip import InferenceServer
    from plantwatch.inference.slot import ModelSlot

    (tmp_path / "model.onnx").write_bytes(zscore_model([0.0, 0.0], [1.0, 1.0]))
    slot = ModelSlot("m", tmp_path / "model.onnx", max_batch=64, max_wait_s=0.005)
    slot.check()
    server = InferenceServer({"m": slot}, 0)
    server.start()
    url = f"http://127.0.0.1:{server.port}/v2/models/m/infer"
    try:

        def ask(i: int) -> float:
            reply = post(url, {"id": str(i), "inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [i, i]}]})
            assert reply["id"] == str(i)
            return reply["outputs"][0]["data"][0]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            scores = list(pool.map(ask, range(200)))
    finally:
        server.stop()
        slot.close()
    assert scores == [float(i * i) for i in range(200)]  # mean of z^2 over two equal channels: each request its own row
    batcher = slot._batcher
    assert batcher.rows == 200 and batcher.batches < 200  # some requests shared a session call


def served_metadata(slot) -> dict:
    """The slot's model metadata as a client of the Open Inference Protocol sees it."""
    from plantwatch.inference.oip import InferenceServer

    server = InferenceServer({slot.name: slot}, 0)
    server.start()
    try:
        return get(f"http://127.0.0.1:{server.port}/v2/models/{slot.name}")
    finally:
        server.stop()


def test_a_changed_model_is_hot_reloaded_and_a_bad_one_refused_while_the_old_one_serves(tmp_path):
    from plantwatch.inference.oip import infer
    from plantwatch.inference.slot import ModelSlot

    first, second = zscore_model([0.0, 0.0], [1.0, 1.0]), zscore_model([1.0, 1.0], [1.0, 1.0])
    swap_in(tmp_path, first, sha256_of(first))
    verdicts = []
    slot = ModelSlot("m", tmp_path / "model.onnx", on_change=lambda s: verdicts.append(s.verdict))
    assert slot.check() and slot.verdict.reason == "ModelLoaded"
    request = {"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [2, 2]}]}

    def served() -> float:
        return infer(slot, request)["outputs"][0]["data"][0]

    assert served() == 4.0
    swap_in(tmp_path, second, sha256_of(second))
    assert slot.check() and served() == 1.0 and slot.model.sha256 == sha256_of(second)

    for bad, card, reason in [
        (first, "0" * 64, "ChecksumMismatch"),  # model and card do not belong together
        (b"not onnx", sha256_of(b"not onnx"), "InvalidModel"),
        (zscore_model([0.0] * 3, [1.0] * 3), None, "SignatureMismatch"),  # 3 features where clients send 2
    ]:
        if card is None:
            card = sha256_of(bad)
        swap_in(tmp_path, bad, card)
        assert not slot.check()
        assert (slot.verdict.valid, slot.verdict.reason) == (False, reason)
        assert served() == 1.0 and "still serving" in slot.verdict.message  # the previous model keeps serving
    assert [v.reason for v in verdicts] == ["ModelLoaded", "ModelLoaded", "ChecksumMismatch", "InvalidModel", "SignatureMismatch"]
    meta = served_metadata(slot)
    assert meta["parameters"]["model_valid"] is False and meta["parameters"]["reason"] == "SignatureMismatch"


def test_a_changed_card_beside_the_same_model_is_served(tmp_path):
    from plantwatch.inference.slot import ModelSlot

    model = zscore_model([0.0, 0.0], [1.0, 1.0])
    (tmp_path / "model.onnx").write_bytes(model)
    card = {"model": {"sha256": sha256_of(model)}, "alarm": {"threshold": 2.0, "ewma_span": 5}}
    (tmp_path / "model-card.json").write_text(json.dumps(card))
    slot = ModelSlot("m", tmp_path / "model.onnx")
    assert slot.check() and slot.card["alarm"]["threshold"] == 2.0
    card["alarm"]["threshold"] = 3.75  # a new threshold for the same model bytes (a new size: not only mtime tells)
    (tmp_path / "model-card.json").write_text(json.dumps(card))
    assert not slot.check()  # no model to swap ...
    assert slot.card["alarm"]["threshold"] == 3.75 and slot.verdict.reason == "ModelLoaded"  # ... but the card is the new one
    meta = served_metadata(slot)
    slot.close()
    assert json.loads(meta["parameters"]["model_card"])["alarm"]["threshold"] == 3.75


def test_serve_inference_watches_the_model_file(tmp_path):
    first, second = zscore_model([0.0, 0.0], [1.0, 1.0]), zscore_model([1.0, 1.0], [1.0, 1.0])
    swap_in(tmp_path, first, sha256_of(first))
    port = free_port()
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
            str(tmp_path / "model.onnx"),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--reload-interval",
            "0.2",
        ]
    )
    base = f"http://127.0.0.1:{port}/v2/models/m"
    try:
        deadline = time.time() + 30
        while True:
            try:
                assert get(base)["parameters"]["sha256"] == sha256_of(first)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.time() < deadline and proc.poll() is None, "the inference service did not start"
                time.sleep(0.1)
        swap_in(tmp_path, second, sha256_of(second))
        while get(base)["parameters"]["sha256"] != sha256_of(second):
            assert time.time() < deadline + 30 and proc.poll() is None, "the new model was never loaded"
            time.sleep(0.1)
        reply = post(base + "/infer", {"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [2, 2]}]})
        assert reply["outputs"][0]["data"] == [1.0]
    finally:
        proc.terminate()
        proc.wait(10)


def test_requests_are_coalesced_on_gpu_providers_by_default_not_on_cpu(tmp_path):
    from plantwatch.inference.slot import ModelSlot, default_max_batch

    (tmp_path / "model.onnx").write_bytes(zscore_model([0.0, 0.0], [1.0, 1.0]))
    assert (default_max_batch("cpu"), default_max_batch("cuda"), default_max_batch("tensorrt")) == (1, 256, 256)
    default, chosen = ModelSlot("m", tmp_path / "model.onnx"), ModelSlot("m", tmp_path / "model.onnx", max_batch=32)
    for slot in (default, chosen):
        slot.check()
    assert (default._batcher is None) == (default.model.active_provider == "cpu")
    assert chosen._batcher is not None and chosen._batcher.max_batch == 32
    for slot in (default, chosen):
        slot.close()
