"""The operator on a real control plane: the sample plant becomes workloads, status and events."""

from __future__ import annotations

import base64
import copy
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from plantwatch.mqtt.broker import free_port
from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.e2e.conftest import wait_for as poll

PLANT_KINDS = ("sensornodes", "alertrules", "detectormodels")
API_TOKEN_SECRET = "plantwatch-api"
#: The running operator's log, so that every timeout shows what the operator was doing.
_operator_log: list[Path] = []


def wait_for(check, what: str, timeout: float = 90.0):
    """Poll as conftest's wait_for does; a timeout also shows the operator's log tail."""
    try:
        return poll(check, what, timeout)
    except pytest.fail.Exception as exc:
        failure = str(exc)
    tail = _operator_log[-1].read_text()[-4000:] if _operator_log else "(no operator running)"
    pytest.fail(f"{failure}\n--- operator log (tail) ---\n{tail}", pytrace=False)


@pytest.fixture(scope="module")
def crds(cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for f in sorted((ROOT / "crds").glob("*.yaml")):
        name = yaml.safe_load(f.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="module")
def operator(cluster, crds, tmp_path_factory) -> Iterator[Path]:
    """The operator as a real process, watching every namespace."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": cluster.kubeconfig,
        "PLANTWATCH_DETECTOR_CHECK_INTERVAL": "2",
        "PLANTWATCH_RECEIVER_CHECK_INTERVAL": "2",
        # As the chart sets it from gateway.alertsApi.tokenSecret: every gateway reads its API token from this Secret.
        "PLANTWATCH_GATEWAY_API_TOKEN_SECRET": f"{API_TOKEN_SECRET}/token",
        # On a real cluster the pods really run: give it an image it can pull (see README).
        "PLANTWATCH_IMAGE": os.environ.get("PLANTWATCH_E2E_IMAGE", "ghcr.io/plantwatch/plantwatch:0.1.0"),
    }
    with open(log, "wb") as out:
        metrics_port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantwatch.cli", "--log-level", "INFO", "operator", "--metrics-port", str(metrics_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        proc.wait(3)
        pytest.fail(f"the operator exited at start-up:\n{log.read_text()[-4000:]}")
    except subprocess.TimeoutExpired:
        pass
    _operator_log.append(log)
    try:
        yield OperatorProcess(log, metrics_port)
    finally:
        _operator_log.remove(log)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, -15):
            print(log.read_text()[-4000:])


@dataclass
class OperatorProcess:
    log: Path
    metrics_port: int

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()


def get(cluster, *args: str) -> dict | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def conditions(obj: dict | None) -> dict[str, dict]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}


def all_true(obj: dict | None, *types: str) -> bool:
    """Every named condition is True and computed for the current generation."""
    conds = conditions(obj)
    gen = (obj or {}).get("metadata", {}).get("generation")
    return (
        all(t in conds and conds[t]["status"] == "True" and conds[t].get("observedGeneration") == gen for t in types)
        and obj["status"].get("observedGeneration") == gen
    )


BROKER = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: plantwatch-broker}
spec:
  selector: {matchLabels: {app: plantwatch-broker}}
  template:
    metadata: {labels: {app: plantwatch-broker}}
    spec:
      containers:
        - name: mosquitto
          image: eclipse-mosquitto:2.0
          command: [mosquitto, -c, /mosquitto-no-auth.conf]
          ports: [{containerPort: 1883}]
---
apiVersion: v1
kind: Service
metadata: {name: plantwatch-broker}
spec:
  selector: {app: plantwatch-broker}
  ports: [{port: 1883}]
"""


@pytest.fixture
def plant(cluster, operator, namespace) -> str:
    """The sample plant, the broker its gateway connects to and its alerts API token (where pods really
    run, the gateway needs both)."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=BROKER)
    cluster.kubectl("create", "secret", "generic", API_TOKEN_SECRET, "-n", namespace, f"--from-literal=token={secrets.token_hex(16)}")
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT))
    return namespace


def running_pods(cluster, namespace: str, selector: str) -> list[dict]:
    pods = (get(cluster, "pods", "-n", namespace, "-l", selector) or {"items": []})["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def test_sample_plant_becomes_workloads_with_status(cluster, plant, operator):
    ns = plant
    nodes = sorted(["esp32-press-01", "rpi-line1-env", "boiler-gateway", "jetson-cell-01", "coldroom-feed"])

    def settled():
        """The gateway rendered from the whole plant: kubectl apply creates the objects one by one, and
        the operator re-renders the config (and its hash on the pod template) as each arrives."""
        deployment = get(cluster, "deployment", "plantwatch-gateway", "-n", ns)
        config = get(cluster, "configmap", "plantwatch-plant", "-n", ns)
        if not deployment or not config:
            return None
        docs = list(yaml.safe_load_all(config["data"]["plant.yaml"]))
        whole = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "SensorNode") == nodes
        digest = config["metadata"]["annotations"]["plantwatch.io/config-hash"]
        rolled = deployment["spec"]["template"]["metadata"]["annotations"]["plantwatch.io/config-hash"] == digest
        return deployment if whole and rolled else None

    deployment = wait_for(settled, "the gateway Deployment carrying the whole plant's config hash")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:6] == ["--log-format", "json", "serve", "ingest", "-f", "/etc/plantwatch/plant"]
    for kind in ("deployment", "service", "hpa"):
        wait_for(lambda: get(cluster, kind, "plantwatch-detector-bearing-wear", "-n", ns), f"the detector's {kind}")
    hpa = get(cluster, "hpa", "plantwatch-detector-bearing-wear", "-n", ns)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)

    wait_for(lambda: running_pods(cluster, ns, "app.kubernetes.io/component=gateway"), "a Running gateway pod")
    wait_for(lambda: running_pods(cluster, ns, "app.kubernetes.io/component=inference"), "a Running inference pod")

    for name in ("esp32-press-01", "rpi-line1-env", "boiler-gateway", "jetson-cell-01", "coldroom-feed"):
        node = wait_for(
            lambda: (lambda o: o if all_true(o, "Ready") else None)(get(cluster, "sensornode", name, "-n", ns)), f"SensorNode {name} Ready"
        )
        assert conditions(node)["Online"]["status"] == "Unknown"
    for name in ("machine-overtemperature", "vibration-high", "node-silent", "bearing-anomaly"):
        wait_for(lambda: all_true(get(cluster, "alertrule", name, "-n", ns), "Accepted"), f"AlertRule {name} Accepted")
    rule = get(cluster, "alertrule", "machine-overtemperature", "-n", ns)
    assert rule["status"]["matchedSeries"] == 2  # line-1 temperature sensors: the press and the Pi's air
    model = wait_for(
        lambda: (lambda o: o if all_true(o, "ModelValid", "Available") else None)(get(cluster, "detectormodel", "bearing-wear", "-n", ns)),
        "DetectorModel ModelValid and Available",
    )
    assert model["status"]["replicas"] >= 1 and len(model["status"]["modelSha256"]) == 64

    # what `kubectl get plantwatch` shows: the category and printer columns
    table = cluster.kubectl("get", "plantwatch", "-n", ns).stdout
    assert "esp32-press-01" in table and "machine-overtemperature" in table and "bearing-wear" in table
    text = operator.metrics()
    assert 'plantwatch_operator_reconciles_total{result="ok",target="plant"}' in text
    assert 'plantwatch_operator_reconciles_total{result="ok",target="detector"}' in text
    wait_for(
        lambda: "Rendered" in cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=DetectorModel").stdout,
        "the operator's Rendered event on the DetectorModel",
        timeout=30,
    )


def test_the_gateway_reads_its_alerts_api_token_from_the_mounted_secret(cluster, plant):
    """The operator's token setting becomes the gateway's --api-token-secret and a read-only mount of
    that Secret where the gateway reads Secrets; the token never appears in the Deployment."""
    ns = plant
    deployment = wait_for(lambda: get(cluster, "deployment", "plantwatch-gateway", "-n", ns), "the gateway Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[args.index("--api-token-secret") + 1] == f"{API_TOKEN_SECRET}/token" and "--api-open-reads" not in args
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == API_TOKEN_SECRET)
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}] and volume["secret"]["defaultMode"] == 0o400
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert (mount["mountPath"], mount["readOnly"]) == (f"/etc/plantwatch/secrets/{API_TOKEN_SECRET}", True)
    token = base64.b64decode(get(cluster, "secret", API_TOKEN_SECRET, "-n", ns)["data"]["token"]).decode()
    assert token not in json.dumps(deployment) and API_TOKEN_SECRET not in json.dumps(container.get("env", []))
    wait_for(lambda: running_pods(cluster, ns, "app.kubernetes.io/component=gateway"), "a Running gateway pod with the mount")


def test_changing_a_sensor_node_rolls_the_gateway(cluster, plant):
    ns = plant
    wait_for(lambda: all_true(get(cluster, "sensornode", "esp32-press-01", "-n", ns), "Ready"), "the node Ready")
    before = get(cluster, "deployment", "plantwatch-gateway", "-n", ns)["spec"]["template"]["metadata"]["annotations"][
        "plantwatch.io/config-hash"
    ]
    cluster.kubectl(
        "patch", "sensornode", "esp32-press-01", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"heartbeat": {"interval": "5s"}}})
    )
    node = get(cluster, "sensornode", "esp32-press-01", "-n", ns)
    assert node["metadata"]["generation"] == 2

    def rolled() -> str | None:
        d = get(cluster, "deployment", "plantwatch-gateway", "-n", ns)
        h = d["spec"]["template"]["metadata"]["annotations"]["plantwatch.io/config-hash"]
        return h if h != before else None

    after = wait_for(rolled, "a new config hash on the gateway's pod template")
    wait_for(lambda: all_true(get(cluster, "sensornode", "esp32-press-01", "-n", ns), "Ready"), "Ready for generation 2")
    replicasets = get(cluster, "replicasets", "-n", ns, "-l", "app.kubernetes.io/component=gateway")["items"]
    hashes = {rs["spec"]["template"]["metadata"]["annotations"]["plantwatch.io/config-hash"] for rs in replicasets}
    assert {before, after} <= hashes
    assert "interval: 5s" in get(cluster, "configmap", "plantwatch-plant", "-n", ns)["data"]["plant.yaml"]
    wait_for(
        lambda: (
            after
            in cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=esp32-press-01,reason=Rendered").stdout
        ),
        f"an Event on the node naming the new gateway config {after}",
        timeout=30,
    )


def test_a_rule_naming_a_missing_detector_is_not_accepted_until_it_exists(cluster, operator, namespace):
    for f in ("nodes.yaml", "receivers.yaml", "rules.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / f))

    def accepted(status: str) -> dict | None:
        rule = get(cluster, "alertrule", "bearing-anomaly", "-n", namespace)
        c = conditions(rule).get("Accepted", {})
        gen = (rule or {}).get("metadata", {}).get("generation")
        return rule if c.get("status") == status and c.get("observedGeneration") == gen else None

    rule = wait_for(lambda: accepted("False"), "AlertRule bearing-anomaly Accepted=False")
    assert conditions(rule)["Accepted"]["reason"] == "DetectorNotFound"
    assert "bearing-wear" in conditions(rule)["Accepted"]["message"]
    assert all_true(get(cluster, "alertrule", "machine-overtemperature", "-n", namespace), "Accepted")
    wait_for(
        lambda: (
            "DetectorNotFound"
            in cluster.kubectl(
                "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=bearing-anomaly,type=Warning"
            ).stdout
        ),
        "a Warning Event on the refused rule",
        timeout=30,
    )
    docs = [d for d in yaml.safe_load_all(get(cluster, "configmap", "plantwatch-plant", "-n", namespace)["data"]["plant.yaml"])]
    assert "bearing-anomaly" not in {d["metadata"]["name"] for d in docs}  # the gateway never sees it

    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / "detectors.yaml"))
    wait_for(lambda: accepted("True"), "AlertRule bearing-anomaly Accepted once its DetectorModel exists")


SLACK_RECEIVER = """
apiVersion: plantwatch.io/v1alpha1
kind: AlertReceiver
metadata: {name: line-1-slack}
spec:
  type: Slack
  slack: {urlSecretRef: {name: line-1-slack, key: webhook-url}}
"""
ANDON_RECEIVER = """
apiVersion: plantwatch.io/v1alpha1
kind: AlertReceiver
metadata: {name: andon}
spec:
  type: MQTT
  mqtt: {topic: "andon/{node}"}
"""


def test_receivers_wait_for_their_secrets_and_rules_for_their_receivers(cluster, operator, namespace):
    """An AlertReceiver is Accepted once its Secret exists, which the gateway then mounts (never as
    environment values); a rule naming a receiver no AlertReceiver defines is refused until one does."""
    for f in ("nodes.yaml", "rules.yaml"):  # not receivers.yaml: andon is applied below
        cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / f))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=SLACK_RECEIVER)

    def accepted(kind: str, name: str, status: str) -> dict | None:
        obj = get(cluster, kind, name, "-n", namespace)
        c = conditions(obj).get("Accepted", {})
        return obj if c.get("status") == status and c.get("observedGeneration") == obj["metadata"]["generation"] else None

    receiver = wait_for(lambda: accepted("alertreceiver", "line-1-slack", "False"), "AlertReceiver Accepted=False")
    assert conditions(receiver)["Accepted"]["reason"] == "SecretNotFound"
    assert conditions(receiver)["Accepted"]["message"].startswith(
        "spec.slack.urlSecretRef: Secret 'line-1-slack' does not exist in this namespace"
    )
    cluster.kubectl("create", "secret", "generic", "line-1-slack", "-n", namespace, "--from-literal=webhook-url=https://hooks.invalid/x")
    receiver = wait_for(lambda: accepted("alertreceiver", "line-1-slack", "True"), "AlertReceiver Accepted once its Secret exists")
    assert "line-1-slack" in cluster.kubectl("get", "alertreceivers", "-n", namespace).stdout  # the printer columns

    pod = get(cluster, "deployment", "plantwatch-gateway", "-n", namespace)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "line-1-slack")
    assert volume["secret"]["items"] == [{"key": "webhook-url", "path": "webhook-url"}] and volume["secret"]["defaultMode"] == 0o400
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/plantwatch/secrets/line-1-slack", True)
    assert "webhook-url" not in json.dumps(container.get("env", []))  # never as an environment value
    assert "line-1-slack" in get(cluster, "configmap", "plantwatch-plant", "-n", namespace)["data"]["plant.yaml"]

    escalating = {"spec": {"receivers": ["console", "line-1-slack"], "escalation": [{"after": "10m", "receivers": ["andon"]}]}}
    cluster.kubectl("patch", "alertrule", "machine-overtemperature", "-n", namespace, "--type=merge", "-p", json.dumps(escalating))
    rule = wait_for(lambda: accepted("alertrule", "machine-overtemperature", "False"), "the rule refused for its unknown receiver")
    assert conditions(rule)["Accepted"]["reason"] == "UnknownReceiver"
    assert "no AlertReceiver named 'andon'" in conditions(rule)["Accepted"]["message"]
    docs = yaml.safe_load_all(get(cluster, "configmap", "plantwatch-plant", "-n", namespace)["data"]["plant.yaml"])
    assert "machine-overtemperature" not in {d["metadata"]["name"] for d in docs}  # the gateway never sees it
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=ANDON_RECEIVER)
    wait_for(lambda: accepted("alertrule", "machine-overtemperature", "True"), "the rule Accepted once AlertReceiver andon exists")
    wait_for(lambda: accepted("alertreceiver", "andon", "True"), "a receiver without Secrets Accepted")


def test_gpu_detector_runs_on_the_jetson_and_deleting_it_removes_its_children(cluster, operator, namespace):
    gpu_nodes = get(cluster, "nodes", "-l", "plantwatch.io/accelerator=nvidia")["items"]
    if not gpu_nodes:
        pytest.skip("this cluster has no node labelled plantwatch.io/accelerator=nvidia (see edge/k3s/nodes.yaml)")
    detector = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    gpu = copy.deepcopy(detector)
    gpu["metadata"]["name"] = "spindle-wear"
    gpu["spec"]["executionProvider"] = "tensorrt"
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / "nodes.yaml"))  # what it scores
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / "bearing-wear-model.yaml"))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(gpu))
    pods = wait_for(lambda: running_pods(cluster, namespace, "plantwatch.io/detector=spindle-wear"), "the GPU inference pod")
    assert pods[0]["spec"]["nodeName"] in {n["metadata"]["name"] for n in gpu_nodes}
    limits = pods[0]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    wait_for(
        lambda: all_true(get(cluster, "detectormodel", "spindle-wear", "-n", namespace), "ModelValid", "Available"),
        "the GPU detector Available",
    )

    cluster.kubectl("delete", "detectormodel", "spindle-wear", "-n", namespace)
    for kind in ("deployment", "service", "hpa"):
        wait_for(
            lambda: get(cluster, kind, "plantwatch-detector-spindle-wear", "-n", namespace) is None,
            f"the garbage collector to remove the detector's {kind}",
        )


def test_missing_model_sets_model_valid_false(cluster, operator, namespace):
    detector = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(detector))
    model = wait_for(
        lambda: (lambda o: o if conditions(o).get("ModelValid", {}).get("status") == "False" else None)(
            get(cluster, "detectormodel", "bearing-wear", "-n", namespace)
        ),
        "ModelValid False",
    )
    assert conditions(model)["ModelValid"]["reason"] == "SourceNotFound"
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / "bearing-wear-model.yaml"))
    wait_for(
        lambda: conditions(get(cluster, "detectormodel", "bearing-wear", "-n", namespace)).get("ModelValid", {}).get("status") == "True",
        "ModelValid True once the ConfigMap exists",
    )


def test_a_detector_naming_a_sensor_no_node_has_is_not_available_until_a_node_has_it(cluster, operator, namespace):
    """Healthy-looking pods serving a model that no node feeds would never score: Scoring says why,
    Available is False, and the gateway's config leaves the detector out until a node has the sensor."""
    detector = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    detector["spec"]["features"]["sensors"] = ["temperature", "vibration", "motor_current"]
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / "nodes.yaml"))
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / "bearing-wear-model.yaml"))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(detector))

    def scoring(status: str) -> dict | None:
        model = get(cluster, "detectormodel", "bearing-wear", "-n", namespace)
        return model if conditions(model).get("Scoring", {}).get("status") == status else None

    model = wait_for(lambda: scoring("False"), "Scoring=False on the DetectorModel")
    found = conditions(model)
    assert found["Scoring"]["reason"] == "SensorsNotFound"
    assert "esp32-press-01 lacks motor_current" in found["Scoring"]["message"]
    assert (found["Available"]["status"], found["Available"]["reason"]) == ("False", "NothingToScore")
    assert found["ModelValid"]["status"] == "True"  # the model itself is fine
    wait_for(
        lambda: (
            "SensorsNotFound"
            in cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=bearing-wear").stdout
        ),
        "a Warning Event on the DetectorModel",
        timeout=30,
    )
    plant = get(cluster, "configmap", "plantwatch-plant", "-n", namespace)["data"]["plant.yaml"]
    assert "bearing-wear" not in {d["metadata"]["name"] for d in yaml.safe_load_all(plant)}  # the gateway would refuse it

    sensor = {"name": "motor_current", "type": "current", "unit": "ampere", "field": "motor_current_a"}
    patch = [{"op": "add", "path": "/spec/sensors/-", "value": sensor}]
    cluster.kubectl("patch", "sensornode", "esp32-press-01", "-n", namespace, "--type=json", "-p", json.dumps(patch))
    model = wait_for(lambda: scoring("True"), "Scoring=True once a node has every sensor")
    assert conditions(model)["Scoring"]["message"] == "scores 1 SensorNode(s): esp32-press-01"
    wait_for(lambda: all_true(get(cluster, "detectormodel", "bearing-wear", "-n", namespace), "ModelValid", "Available"), "Available")
    wait_for(
        lambda: "bearing-wear" in get(cluster, "configmap", "plantwatch-plant", "-n", namespace)["data"]["plant.yaml"],
        "the detector in the gateway's config",
    )


def _apply_invalid(cluster, namespace: str, doc: dict) -> str:
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0, f"the API server accepted an invalid {doc['kind']}"
    return result.stderr


def test_the_api_server_rejects_invalid_manifests_naming_the_field(cluster, crds, namespace):
    node = list(yaml.safe_load_all((EXAMPLE_PLANT / "nodes.yaml").read_text()))[0]
    node["spec"]["sensors"][0]["type"] = "smell"
    err = _apply_invalid(cluster, namespace, node)
    assert 'spec.sensors[0].type: Unsupported value: "smell"' in err

    rule = list(yaml.safe_load_all((EXAMPLE_PLANT / "rules.yaml").read_text()))[0]
    rule["spec"]["condition"]["threshold"]["warning"] = "90"
    err = _apply_invalid(cluster, namespace, rule)
    assert "spec.condition.threshold.warning" in err and "less severe than the critical level" in err

    model = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    del model["spec"]["source"]
    err = _apply_invalid(cluster, namespace, model)
    assert "spec.source: Required value" in err


def test_local_validation_agrees_with_the_api_server(cluster, crds, namespace):
    """The same CRD files judge both runtimes: what `plantwatch validate` rejects, the API server rejects."""
    from plantwatch.plant.model import ManifestError, parse_resource

    node = list(yaml.safe_load_all((EXAMPLE_PLANT / "nodes.yaml").read_text()))[0]
    cases = []
    for mutate in (
        lambda d: d["spec"]["sensors"][1].update(range={"min": "9", "max": "1"}),
        lambda d: d["spec"]["payload"].update(topic="sensors/+/x"),
        lambda d: d["spec"].update(maintenanceWindows=[{"name": "w", "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}]),
        lambda d: d["spec"]["heartbeat"].update(missedBeats=0),
    ):
        doc = copy.deepcopy(node)
        mutate(doc)
        cases.append(doc)
    for doc in cases:
        with pytest.raises(ManifestError) as local:
            parse_resource(doc)
        remote = _apply_invalid(cluster, namespace, doc)
        for error in local.value.errors:
            assert error.path in remote, (error.path, remote)


def test_the_gateway_reports_online_beside_the_operators_ready(cluster, plant, tmp_path):
    """A gateway (run here, against a local mosquitto) writes Online; the operator's Ready stays."""
    import threading
    import time

    from plantwatch.ingest.formats import encode
    from plantwatch.mqtt.broker import free_port, start_mosquitto
    from plantwatch.mqtt.publisher import Publisher

    ns = plant
    wait_for(lambda: all_true(get(cluster, "sensornode", "esp32-press-01", "-n", ns), "Ready"), "the node Ready")
    broker = start_mosquitto()
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "serve",
            "ingest",
            "-f",
            str(EXAMPLE_PLANT),
            "--broker",
            broker.url,
            "--db",
            str(tmp_path / "g.db"),
            "--http-port",
            str(free_port()),
            "--report-status",
            "--status-namespace",
            ns,
        ],
        env=env,
    )
    stop = threading.Event()

    def press() -> None:
        pub = Publisher(broker.url)
        pub.start()
        while not stop.is_set():
            pub.publish("sensors/hall-1/esp32-press-01/data", encode("esp32-json", "esp32-press-01", time.time(), {"temperature_c": 45.0}))
            stop.wait(0.5)
        pub.stop()

    sender = threading.Thread(target=press)
    sender.start()
    try:

        def online(name: str, status: str):
            node = get(cluster, "sensornode", name, "-n", ns)
            return node if conditions(node).get("Online", {}).get("status") == status else None

        node = wait_for(lambda: online("esp32-press-01", "True"), "esp32-press-01 Online=True from the gateway", timeout=60)
        assert conditions(node)["Online"]["reason"] == "Reporting" and node["status"]["lastSeen"]
        assert conditions(node)["Ready"]["status"] == "True"  # the operator's condition is untouched
        quiet = wait_for(lambda: online("coldroom-feed", "False"), "a node that never published Online=False")
        assert conditions(quiet)["Online"]["reason"] == "NeverSeen"
        stop.set()
        sender.join()
        node = wait_for(lambda: online("esp32-press-01", "False"), "esp32-press-01 Offline after its heartbeat", timeout=60)
        assert conditions(node)["Online"]["reason"] == "Silent"
        # the operator reconciling the node again does not take Online back
        cluster.kubectl(
            "patch", "sensornode", "esp32-press-01", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"equipment": "press-1b"}})
        )
        wait_for(lambda: all_true(get(cluster, "sensornode", "esp32-press-01", "-n", ns), "Ready"), "Ready for generation 2")
        assert conditions(get(cluster, "sensornode", "esp32-press-01", "-n", ns))["Online"]["reason"] == "Silent"
    finally:
        stop.set()
        gateway.terminate()
        gateway.wait(20)
        broker.stop()


PROMETHEUS_RULE_CRD = Path(__file__).parent / "prometheusrules-crd.yaml"


def test_rules_become_a_prometheus_rule_once_the_prometheus_operators_crd_exists(cluster, operator, namespace):
    crd = "prometheusrules.monitoring.coreos.com"
    ours = get(cluster, "crd", crd) is None  # a cluster with the Prometheus Operator keeps its own
    jump = {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": "spindle-jump"},
        "spec": {"selector": {"sensor": "spindle-speed"}, "condition": {"type": "RateOfChange", "rateOfChange": {"maxPerMinute": "100"}}},
    }
    for f in ("nodes.yaml", "receivers.yaml", "rules.yaml"):  # no DetectorModel: bearing-anomaly stays unaccepted
        cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / f))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(jump))

    def reason(rule: str, expected: str):
        return conditions(get(cluster, "alertrule", rule, "-n", namespace)).get("PrometheusRule", {}).get("reason") == expected

    try:
        if ours:
            wait_for(lambda: reason("vibration-high", "PrometheusOperatorAbsent"), "PrometheusRule=False PrometheusOperatorAbsent")
            cluster.kubectl("apply", "--server-side", "-f", str(PROMETHEUS_RULE_CRD))
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        name = f"plantwatch-{namespace}-rules"
        rendered = wait_for(lambda: get(cluster, crd, name, "-n", namespace), f"PrometheusRule {name} once its CRD exists")
        assert {g["name"] for g in rendered["spec"]["groups"]} == {"machine-overtemperature", "vibration-high", "node-silent"}
        assert {o["kind"] for o in rendered["metadata"]["ownerReferences"]} == {"AlertRule"}
        wait_for(lambda: reason("machine-overtemperature", "Rendered"), "machine-overtemperature PrometheusRule=True Rendered")
        wait_for(lambda: reason("spindle-jump", "NotExpressible"), "spindle-jump PrometheusRule=False NotExpressible")
        wait_for(lambda: reason("bearing-anomaly", "NotAccepted"), "bearing-anomaly PrometheusRule=False NotAccepted")
        message = conditions(get(cluster, "alertrule", "spindle-jump", "-n", namespace))["PrometheusRule"]["message"]
        assert "consecutive readings" in message
    finally:
        if ours:
            cluster.kubectl("delete", "crd", crd, "--wait=false", check=False)
