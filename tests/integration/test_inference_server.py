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
    proc = subprocess.Popen([sys.executable, "-m", "plantwatch.cli", "serve", "inference", "--model-name", "bearing-wear",
                             "--model", str(model_file), "--host", "127.0.0.1", "--http-port", str(port),
                             "--sha256", sha256_of(model_file.read_bytes())])
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
        reply = post(base + "/v2/models/bearing-wear/infer", {"id": "r1", "inputs": [
            {"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [45, 1.5, 12, 48, 2.1, 12]}]})
        (out,) = reply["outputs"]
        assert reply["id"] == "r1" and out["name"] == "score" and out["shape"] == [2]
        assert out["data"][0] == pytest.approx(0.0) and out["data"][1] == pytest.approx((4 + 4 + 0) / 3, rel=1e-5)
        with pytest.raises(urllib.error.HTTPError) as err:
            post(base + "/v2/models/bearing-wear/infer", {"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
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
