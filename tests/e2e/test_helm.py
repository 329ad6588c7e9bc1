"""The chart installed for real with the real helm binary into the control plane `make tools` builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from plantwatch.health import probe
from plantwatch.mqtt.broker import free_port
from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.e2e.conftest import wait_for

HELM = ROOT / ".cache" / "bin" / "helm"
CHART = ROOT / "charts" / "plantwatch"


def helm(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELM), "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True, timeout=120)


def pinned_kubernetes() -> str:
    """The k8s.io/kubernetes version tools/go/cluster/go.mod builds."""
    for line in (ROOT / "tools/go/cluster/go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["k8s.io/kubernetes"]:
            return parts[1]
    raise AssertionError("k8s.io/kubernetes is not pinned in tools/go/cluster/go.mod")


def test_the_control_plane_says_its_version_so_helm_accepts_it(cluster):
    # Built without the release's version stamp, the API server says v0.0.0-master and helm refuses
    # the chart's kubeVersion (>=1.30.0-0).
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == pinned_kubernetes() and server["major"] == "1"


def test_install_and_uninstall_leave_only_what_the_docs_say(cluster):
    release = f"p-{uuid.uuid4().hex[:6]}"
    installed = helm(cluster, "install", release, str(CHART), "-n", release, "--create-namespace")
    assert installed.returncode == 0, installed.stderr
    try:
        deployments = cluster.kubectl("get", "deployments", "-n", release, "-o", "name").stdout.split()
        assert {f"deployment.apps/{release}-broker", f"deployment.apps/{release}-operator"} <= set(deployments)
        status = json.loads(helm(cluster, "status", release, "-n", release, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
    finally:
        uninstalled = helm(cluster, "uninstall", release, "-n", release)
    assert uninstalled.returncode == 0, uninstalled.stderr
    # What docs/kubernetes.md says stays: the broker's volume of QoS 1 sessions, the store's data, its password and
    # its backups (resource-policy keep; the StatefulSet's claim is the database's).
    left = lambda: sorted(  # noqa: E731
        cluster.kubectl(
            "get",
            "deployments,services,configmaps,secrets,networkpolicies,roles,rolebindings,pvc",
            "-n",
            release,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).stdout.split()
    )
    kept = kept_after_uninstall(release)
    wait_for(lambda: left() == kept, f"only the volumes and the store's password left of {release}")
    cluster.kubectl("delete", "namespace", release, "--wait=false", check=False)


def kept_after_uninstall(release: str) -> list[str]:
    """What `helm uninstall` leaves of a release, as docs/kubernetes.md lists it: the volumes and the store's password."""
    return [
        f"persistentvolumeclaim/data-{release}-postgres-0",
        f"persistentvolumeclaim/{release}-backups",
        f"persistentvolumeclaim/{release}-broker-data",
        f"secret/{release}-postgres",
    ]


# --- helm test -----------------------------------------------------------------------------
# kwok runs no container. What is shown where: here, the test pod helm creates is read back
# from the cluster and its own command (`plantwatch probe <gateway>/readyz`) is run on this
# host against a real gateway (`plantwatch up`), the cluster's Service address replaced by
# the gateway's loopback one (this host cannot resolve cluster DNS); its exit status is
# handed to kwok (stage helm-test-pod-exit), which ends the pod with it, and helm reads the
# pod's phase as on a real cluster. That the in-cluster DNS name reaches the gateway Service
# the operator renders is shown by tests/unit/test_chart.py and the operator's e2e tests.


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[str]:
    """A real gateway (`plantwatch up`, the sample plant, simulated) on loopback: its /readyz URL."""
    folder = tmp_path_factory.mktemp("gateway")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantwatch.cli", "up", "-f", str(EXAMPLE_PLANT), "--simulate", "--duration", "600"]
        + ["--http-port", str(port), "--db", str(folder / "plant.db")],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "up.log", "wb"),  # noqa: SIM115 (the process owns it)
    )
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        wait_for(lambda: probe(url, 2)[0], f"plantwatch up's {url}", timeout=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def helm_test(cluster, release: str, gateway_url: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`helm test`, its pod's command run on this host against `gateway_url`: helm's result and that command."""
    running = subprocess.Popen(
        [str(HELM), "--kubeconfig", cluster.kubeconfig, "test", release, "-n", release, "--timeout", "90s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    command = finish_test_pod(cluster, release, release, gateway_url)
    out, err = running.communicate(timeout=120)
    return subprocess.CompletedProcess(running.args, running.returncode, out, err), command


def finish_test_pod(cluster, release: str, namespace: str, gateway_url: str) -> list[str]:
    """While `helm test` waits: its pod's command run on this host against `gateway_url`, the pod ended with
    that command's exit status. The command run."""
    pod = f"{release}-test-gateway-ready"

    def running_pod():
        got = cluster.kubectl("get", "pod", pod, "-n", namespace, "-o", "json", check=False)
        return json.loads(got.stdout) if got.returncode == 0 and json.loads(got.stdout)["status"].get("phase") == "Running" else None

    spec = wait_for(running_pod, f"helm test's pod {pod}")["spec"]["containers"][0]
    in_cluster = f"http://plantwatch-gateway.{namespace}.svc:8080/readyz"
    assert spec["args"] == ["probe", in_cluster] and "command" not in spec  # the image's entrypoint is plantwatch
    command = [sys.executable, "-m", "plantwatch.cli", *(gateway_url if a == in_cluster else a for a in spec["args"])]
    code = subprocess.run(command, capture_output=True, timeout=30).returncode
    cluster.kubectl("annotate", "pod", pod, "-n", namespace, f"plantwatch.io/e2e-exit-code={code}")
    return command


def test_helm_test_passes_against_a_ready_gateway_and_a_failed_test_leaves_nothing(cluster, gateway):
    release = f"t-{uuid.uuid4().hex[:6]}"
    assert helm(cluster, "install", release, str(CHART), "-n", release, "--create-namespace").returncode == 0
    try:
        passed, command = helm_test(cluster, release, gateway)
        assert command[-2:] == ["probe", gateway]
        assert passed.returncode == 0 and "Phase:          Succeeded" in passed.stdout, passed.stdout + passed.stderr
        # Nothing answers here: the same check fails, and so does helm test.
        failed, _ = helm_test(cluster, release, f"http://127.0.0.1:{free_port()}/readyz")
        assert failed.returncode != 0 and "Phase:          Failed" in failed.stdout
        assert f"pod {release}-test-gateway-ready failed" in failed.stderr
        # hook-failed: the failed pod is deleted with the test, so it cannot outlive the release.
        gone = lambda: cluster.kubectl("get", "pods", "-n", release, "-l", "app.kubernetes.io/instance", "-o", "name").stdout.split()  # noqa: E731
        wait_for(lambda: not [p for p in gone() if "test-gateway-ready" in p], "the failed test pod deleted")
    finally:
        helm(cluster, "uninstall", release, "-n", release)
        cluster.kubectl("delete", "namespace", release, "--wait=false", check=False)


# --- helm upgrade ----------------------------------------------------------------------------
NAMESPACED = "deployments,services,configmaps,secrets,networkpolicies,serviceaccounts,roles,rolebindings,pvc"


def release_objects(cluster, release: str) -> dict[str, str]:
    """Every object of the release: what it is now. Deployments by generation and pod template (their
    status changes on its own as pods come and go); volume claims (the StatefulSet's) by what they ask for,
    since the volume controllers annotate them and set their status whenever they get to it; the rest by
    resourceVersion."""
    selector = f"app.kubernetes.io/instance={release}"
    items = json.loads(cluster.kubectl("get", NAMESPACED, "-n", release, "-l", selector, "-o", "json").stdout)["items"]
    items += json.loads(cluster.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "json").stdout)["items"]
    seen = {}
    for o in items:
        key = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Deployment":
            seen[key] = f"{o['metadata']['generation']} {json.dumps(o['spec']['template'], sort_keys=True)}"
        elif o["kind"] == "PersistentVolumeClaim":
            seen[key] = json.dumps({k: v for k, v in o["spec"].items() if k != "volumeName"}, sort_keys=True)
        else:
            seen[key] = o["metadata"]["resourceVersion"]
    return seen


def test_upgrade_with_a_changed_value_rolls_only_what_it_changes(cluster):
    release = f"u-{uuid.uuid4().hex[:6]}"
    assert helm(cluster, "install", release, str(CHART), "-n", release, "--create-namespace").returncode == 0
    try:
        before = release_objects(cluster, release)
        assert f"ConfigMap/{release}-broker" in before and f"Deployment/{release}-operator" in before
        upgraded = helm(cluster, "upgrade", release, str(CHART), "-n", release, "--reuse-values", "--set", "broker.maxConnections=50")
        assert upgraded.returncode == 0, upgraded.stderr
        after = release_objects(cluster, release)
        assert after.keys() == before.keys()
        changed = {k for k in before if before[k] != after[k]}
        # The broker's config and, through its config-hash annotation, its pod template: nothing else.
        assert changed == {f"ConfigMap/{release}-broker", f"Deployment/{release}-broker"}
        config = cluster.kubectl("get", "configmap", f"{release}-broker", "-n", release, "-o", "json").stdout
        assert "max_connections 50" in json.loads(config)["data"]["mosquitto.conf"]
    finally:
        helm(cluster, "uninstall", release, "-n", release)
        cluster.kubectl("delete", "namespace", release, "--wait=false", check=False)


# --- values.schema.json ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, message",
    [
        ("broker.maxConnections=lots", "at '/broker/maxConnections': got string, want integer"),
        ("broker.maxConection=5", "at '/broker': additional properties 'maxConection' not allowed"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
        ("broker.port=70000", "at '/broker/port': maximum: got 70,000, want 65,535"),
    ],
)
def test_install_refuses_bad_values_naming_the_field(cluster, value, message):
    refused = helm(cluster, "install", "bad", str(CHART), "-n", "bad-values", "--set", value)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    assert "values don't meet the specifications of the schema" in refused.stderr
    assert helm(cluster, "status", "bad", "-n", "bad-values").returncode != 0  # nothing was installed


# --- a plant folder as it is -----------------------------------------------------------------
def test_a_plant_folder_installs_as_it_is_through_chart_values(cluster, tmp_path):
    made = subprocess.run(
        [sys.executable, "-m", "plantwatch.cli", "chart-values", "-f", str(EXAMPLE_PLANT)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    # The model's ConfigMap is no chart value: said, not dropped silently.
    assert "ConfigMap/bearing-wear-model (not a chart value: kubectl apply it)" in made.stderr
    (tmp_path / "plant.yaml").write_text(made.stdout)
    release = f"f-{uuid.uuid4().hex[:6]}"
    installed = helm(cluster, "install", release, str(CHART), "-n", release, "--create-namespace", "-f", str(tmp_path / "plant.yaml"))
    assert installed.returncode == 0, installed.stderr
    try:
        folder = {
            (d["kind"], d["metadata"]["name"], json.dumps(d["spec"], sort_keys=True))
            for f in sorted(EXAMPLE_PLANT.glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text())
            if d and d["apiVersion"].startswith("plantwatch.io/")
        }
        got = json.loads(cluster.kubectl("get", "sensornodes,alertrules,detectormodels,alertreceivers", "-n", release, "-o", "json").stdout)
        # Every resource of the folder, with the spec it was written with (the API server's defaults added).
        in_cluster = {(o["kind"], o["metadata"]["name"]): o["spec"] for o in got["items"]}
        assert {(k, n) for k, n, _ in folder} == set(in_cluster)
        for kind, name, spec in folder:
            written = json.loads(spec)
            assert written.keys() <= in_cluster[(kind, name)].keys()
            if kind == "SensorNode":
                assert [x["name"] for x in written["sensors"]] == [x["name"] for x in in_cluster[(kind, name)]["sensors"]]
                assert written["payload"]["topic"] == in_cluster[(kind, name)]["payload"]["topic"]
        assert sum(k == "SensorNode" for k, _ in in_cluster) == 5
    finally:
        helm(cluster, "uninstall", release, "-n", release)
        cluster.kubectl("delete", "namespace", release, "--wait=false", check=False)


# --- the chart's operator, run as its Deployment says ---------------------------------------
# kwok runs no container: the operator Deployment the release made is read back from the cluster
# and its own args and environment are run on this host (`plantwatch` is the image's entrypoint),
# its ports moved to free ones (several run side by side here) and the cluster reached through the
# test's kubeconfig instead of the pod's ServiceAccount.


@contextmanager
def chart_operator(cluster, release: str, namespace: str, log: Path) -> Iterator[subprocess.Popen]:
    """The release's operator Deployment run on this host; stopped (SIGTERM) on leaving."""
    deployment = json.loads(cluster.kubectl("get", "deployment", f"{release}-operator", "-n", namespace, "-o", "json").stdout)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {"--liveness-port": free_port(), "--metrics-port": free_port()}
    args = [f"{a.split('=')[0]}={ports[a.split('=')[0]]}" if a.split("=")[0] in ports else a for a in container["args"]]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantwatch.cli", *args],
            env={**os.environ, **env, "KUBECONFIG": cluster.kubeconfig},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lease_holder(cluster, namespace: str) -> str | None:
    got = cluster.kubectl("get", "lease", "plantwatch-operator", "-n", namespace, "-o", "json", check=False)
    return json.loads(got.stdout)["spec"].get("holderIdentity") if got.returncode == 0 else None


def plant_nodes(cluster, namespace: str) -> set[str]:
    """The SensorNodes the gateway of `namespace` was rendered with (ConfigMap plantwatch-plant)."""
    got = cluster.kubectl("get", "configmap", "plantwatch-plant", "-n", namespace, "-o", "json", check=False)
    if got.returncode != 0:
        return set()
    docs = yaml.safe_load_all(json.loads(got.stdout)["data"].get("plant.yaml", ""))
    return {d["metadata"]["name"] for d in docs if d and d.get("kind") == "SensorNode"}


def chart_values(folder: Path, out: Path) -> Path:
    command = [sys.executable, "-m", "plantwatch.cli", "chart-values", "-f", str(folder)]
    made = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    out.write_text(made.stdout)
    return out


def test_two_plants_in_two_namespaces_side_by_side(cluster, tmp_path):
    run = uuid.uuid4().hex[:6]
    a, b = f"pa-{run}", f"pb-{run}"
    # Plant b: one node of its own, so whose plant a gateway was rendered with shows in its config.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "nodes.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "plantwatch.io/v1alpha1",
                "kind": "SensorNode",
                "metadata": {"name": "kiln-1", "labels": {"plantwatch.io/line": "kilns"}},
                "spec": {
                    "hardware": "esp32",
                    "payload": {"format": "esp32-json", "topic": "sensors/hall-9/kiln-1/data"},
                    "sensors": [{"name": "temperature", "type": "temperature", "unit": "celsius", "field": "temperature_c"}],
                },
            }
        )
    )
    values = {a: chart_values(EXAMPLE_PLANT, tmp_path / "a.yaml"), b: chart_values(tmp_path / "b", tmp_path / "b.yaml")}
    for release in (a, b):
        installed = helm(cluster, "install", release, str(CHART), "-n", release, "--create-namespace", "-f", str(values[release]))
        assert installed.returncode == 0, installed.stderr
    try:
        sample = {d["metadata"]["name"] for d in yaml.safe_load_all((EXAMPLE_PLANT / "nodes.yaml").read_text()) if d}
        # Each plant's resources in its own namespace only.
        nodes = lambda ns: set(cluster.kubectl("get", "sensornodes", "-n", ns, "-o", "name").stdout.split())  # noqa: E731
        assert nodes(a) == {f"sensornode.plantwatch.io/{n}" for n in sample} and nodes(b) == {"sensornode.plantwatch.io/kiln-1"}
        for release, other in ((a, b), (b, a)):
            assert not cluster.kubectl("get", NAMESPACED, "-n", other, "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout
        with chart_operator(cluster, a, a, tmp_path / "a.log"), chart_operator(cluster, b, b, tmp_path / "b.log"):
            # Each install claims its own namespace, named by release, and renders only its own plant there.
            for release, want in ((a, sample), (b, {"kiln-1"})):
                log = tmp_path / f"{'a' if release == a else 'b'}.log"
                wait_for(lambda r=release, w=want: plant_nodes(cluster, r) == w, f"{release}'s gateway config\n{log.read_text()[-3000:]}")
                assert lease_holder(cluster, release) == f"{release}/{release}-operator"
            ready = lambda: all(  # noqa: E731
                any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
                for ns in (a, b)
                for n in json.loads(cluster.kubectl("get", "sensornodes", "-n", ns, "-o", "json").stdout)["items"]
            )
            wait_for(ready, "every SensorNode of both plants Ready")
        # Uninstalling a leaves b as it was: its release's objects, its plant, its rendered gateway, its claim.
        before = release_objects(cluster, b)
        uninstalled = helm(cluster, "uninstall", a, "-n", a)
        assert uninstalled.returncode == 0, uninstalled.stderr
        wait_for(lambda: not release_objects(cluster, a).get(f"Deployment/{a}-operator"), f"{a}'s operator gone")
        assert release_objects(cluster, b) == before
        assert nodes(b) == {"sensornode.plantwatch.io/kiln-1"} and plant_nodes(cluster, b) == {"kiln-1"}
        assert lease_holder(cluster, b) == f"{b}/{b}-operator"
        assert helm(cluster, "status", b, "-n", b).returncode == 0
    finally:
        for release in (a, b):
            helm(cluster, "uninstall", release, "-n", release)
            cluster.kubectl("delete", "namespace", release, "--wait=false", check=False)
