"""The Helm chart, rendered by the real helm binary (built by `make tools`)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from plantwatch.plant.load import plant_from_documents
from tests.conftest import EXAMPLE_PLANT, ROOT

HELM = ROOT / ".cache" / "bin" / "helm"
CHART = ROOT / "charts" / "plantwatch"


KUBE_VERSION = "1.36.3"  # the control plane tests/e2e runs (helm template otherwise assumes an old one)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`")
    if args[0] == "template":
        args = (*args, "--kube-version", KUBE_VERSION)
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check)


def sample_values(tmp_path) -> str:
    """The sample plant (examples/plant) as chart values."""
    plant: dict[str, list] = {"sensorNodes": [], "alertRules": [], "detectorModels": []}
    key = {"SensorNode": "sensorNodes", "AlertRule": "alertRules", "DetectorModel": "detectorModels"}
    for f in sorted(EXAMPLE_PLANT.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") in key:
                plant[key[doc["kind"]]].append(
                    {"name": doc["metadata"]["name"], "labels": doc["metadata"].get("labels", {}), "spec": doc["spec"]}
                )
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"plant": plant}))
    return str(path)


def test_lint():
    result = helm("lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in result.stdout


def test_renders_the_sample_plant_that_the_crds_accept(tmp_path):
    out = helm("template", "line1", str(CHART), "-n", "plant-a", "-f", sample_values(tmp_path), "--include-crds").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == 4
    assert kinds.count("SensorNode") == 5 and kinds.count("AlertRule") == 4 and kinds.count("DetectorModel") == 1
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Pod"} <= set(kinds)
    plant = plant_from_documents([(f"doc{i}", d) for i, d in enumerate(docs) if d["apiVersion"].startswith("plantwatch.io/")])
    assert len(plant.nodes) == 5
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "line1-operator")
    env = {e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PLANTWATCH_BROKER_URL"] == "mqtt://line1-broker.plant-a.svc:1883"
    for d in docs:
        if d["kind"] == "Deployment":
            assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_chart_crds_are_the_project_crds():
    assert (CHART / "crds").resolve() == (ROOT / "crds").resolve()


def test_values_schema_rejects_what_the_crd_rejects(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "plant": {
                    "sensorNodes": [
                        {
                            "name": "n1",
                            "spec": {
                                "hardware": "arduino",
                                "payload": {"format": "esp32-json", "topic": "a/b"},
                                "sensors": [{"name": "t", "type": "temperature"}],
                            },
                        }
                    ]
                }
            }
        )
    )
    result = helm("template", "x", str(CHART), "-f", str(bad), check=False)
    assert result.returncode != 0
    assert "/plant/sensorNodes/0/spec/hardware" in result.stderr and "'esp32', 'raspberry-pi'" in result.stderr


def test_external_broker_is_required_without_the_bundled_one(tmp_path):
    result = helm("template", "x", str(CHART), "--set", "broker.enabled=false", check=False)
    assert result.returncode != 0 and "broker.url is required" in result.stderr


def test_chart_rbac_matches_operator_deploy_rbac(tmp_path):
    """One set of operator permissions: the chart's Role grants what operator/deploy/rbac.yaml grants, namespaced."""
    out = helm("template", "line1", str(CHART), "-n", "plant-a").stdout
    role = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Role")
    deploy = next(d for d in yaml.safe_load_all((ROOT / "operator" / "deploy" / "rbac.yaml").read_text()) if d["kind"] == "ClusterRole")
    namespaced = [r for r in deploy["rules"] if r["apiGroups"] != ["apiextensions.k8s.io"]]

    def grants(rules):
        return {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}

    assert grants(role["rules"]) == grants(namespaced)
