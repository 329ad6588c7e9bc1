"""The inference service reports its DetectorModel's ModelValid on a real control plane, and the operator leaves it be.

`plantwatch serve inference --status-namespace`, authenticated only by the ServiceAccount the
operator renders for the inference pods, applies ModelValid, activeProvider, modelSha256 and
signature as field manager plantwatch-inference; a model it refuses
(here: not ONNX) turns ModelValid False with the reason while the previous model keeps
serving, and the operator's own reconciliation of the DetectorModel (Available) does not
overwrite the service's verdict; a missing source is still the operator's to report, and once
it is back the service's verdict returns on its status heartbeat.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from plantwatch.inference.models import sha256_of
from plantwatch.inference.zscore import zscore_model
from plantwatch.mqtt.broker import free_port
from tests.e2e.test_operator import conditions, crds, get, operator, wait_for  # noqa: F401 (fixtures)
from tests.integration.test_inference_server import swap_in

#: The service's status heartbeat here (60 s in a cluster).
HEARTBEAT_S = 2

DETECTOR = """
apiVersion: plantwatch.io/v1alpha1
kind: DetectorModel
metadata: {name: press-wear}
spec:
  source: {configMap: {name: press-wear-model}}
  features: {sensors: [temperature, vibration], window: 10, aggregations: [last]}
  executionProvider: cuda
"""


def config_map(model: bytes) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "press-wear-model"},
            "binaryData": {"model.onnx": base64.b64encode(model).decode()},
        }
    )


def infer(port: int) -> float:
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [2, 2]}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/press-wear/infer", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())["outputs"][0]["data"][0]


def as_inference_pod(cluster, namespace: str, tmp_path):
    """A kubeconfig with nothing but the token of the ServiceAccount the operator renders for the inference pods."""
    account = "plantwatch-detector-press-wear"
    wait_for(lambda: get(cluster, "rolebinding", account, "-n", namespace), "the inference pods' RoleBinding")
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


def owner_of_model_valid(cluster, namespace: str) -> list[str]:
    obj = get(cluster, "detectormodel", "press-wear", "-n", namespace, "--show-managed-fields")
    key = 'k:{"type":"ModelValid"}'
    return [
        e["manager"]
        for e in obj["metadata"].get("managedFields", [])
        if key in ((e.get("fieldsV1") or {}).get("f:status") or {}).get("f:conditions", {})
    ]


def test_service_owns_model_valid_and_a_refused_model_keeps_the_old_one_serving(cluster, operator, namespace, tmp_path):
    model = zscore_model([0.0, 0.0], [1.0, 1.0])
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=config_map(model))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DETECTOR)
    # The operator's source check comes first: the ConfigMap exists.
    wait_for(
        lambda: (
            conditions(get(cluster, "detectormodel", "press-wear", "-n", namespace)).get("ModelValid", {}).get("reason") == "SourceVerified"
        ),
        "the operator's ModelValid",
    )

    swap_in(tmp_path, model, sha256_of(model))  # the pod's view of the ConfigMap volume
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "serve",
            "inference",
            "--model-name",
            "press-wear",
            "--model",
            str(tmp_path / "model.onnx"),
            "--provider",
            "cuda",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--reload-interval",
            "0.2",
            "--status-namespace",
            namespace,
        ],
        env={
            **os.environ,
            "KUBECONFIG": str(as_inference_pod(cluster, namespace, tmp_path)),
            "PLANTWATCH_STATUS_HEARTBEAT_S": str(HEARTBEAT_S),
        },
    )
    try:

        def reported(reason: str):
            obj = get(cluster, "detectormodel", "press-wear", "-n", namespace)
            return obj if conditions(obj).get("ModelValid", {}).get("reason") == reason else None

        obj = wait_for(lambda: reported("ModelLoaded"), "ModelValid True from the inference service")
        status = obj["status"]
        assert conditions(obj)["ModelValid"]["status"] == "True"
        assert status["modelSha256"] == sha256_of(model)
        if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
            assert status["activeProvider"] == "cpu"  # the fallback is in status, not only in a log
            assert "requested cuda" in conditions(obj)["ModelValid"]["message"]
        assert status["signature"]["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 2]}]
        assert "plantwatch-inference" in owner_of_model_valid(cluster, namespace)

        swap_in(tmp_path, b"not onnx", sha256_of(b"not onnx"))
        obj = wait_for(lambda: reported("InvalidModel"), "ModelValid False InvalidModel")
        assert conditions(obj)["ModelValid"]["status"] == "False"
        assert obj["status"]["modelSha256"] == sha256_of(model)  # what is served, still the previous model
        assert infer(port) == 4.0

        # The operator reconciles the DetectorModel again (a spec change) and leaves ModelValid alone.
        cluster.kubectl(
            "patch", "detectormodel", "press-wear", "-n", namespace, "--type=merge", "-p", '{"spec": {"autoscaling": {"maxReplicas": 4}}}'
        )
        obj = wait_for(
            lambda: (lambda o: o if conditions(o).get("Available", {}).get("observedGeneration") == 2 else None)(
                get(cluster, "detectormodel", "press-wear", "-n", namespace)
            ),
            "the operator's Available for generation 2",
        )
        assert conditions(obj)["ModelValid"]["reason"] == "InvalidModel"
        assert "plantwatch-inference" in owner_of_model_valid(cluster, namespace)

        # A missing source is the operator's to report (no new pod could start; the service's
        # heartbeat does not overwrite it), and once the source is back the service's own verdict
        # returns on its heartbeat, with the provider it really serves on, rather than the
        # operator's SourceVerified and spec.executionProvider staying.
        cluster.kubectl("delete", "configmap", "press-wear-model", "-n", namespace)
        wait_for(lambda: reported("SourceNotFound"), "the operator's SourceNotFound")
        seen = set()
        for _ in range(int(2.5 * HEARTBEAT_S / 0.25)):  # through more than two of the service's heartbeats
            seen.add(conditions(get(cluster, "detectormodel", "press-wear", "-n", namespace))["ModelValid"]["reason"])
            time.sleep(0.25)
        assert seen == {"SourceNotFound"}
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=config_map(model))
        obj = wait_for(lambda: reported("InvalidModel"), "the service's verdict back once the ConfigMap is back")
        assert obj["status"]["modelSha256"] == sha256_of(model)
        if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
            assert obj["status"]["activeProvider"] == "cpu"
        assert "plantwatch-inference" in owner_of_model_valid(cluster, namespace)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def namespace(cluster):
    from tests.e2e.conftest import namespace as fresh

    yield from fresh.__wrapped__(cluster)
