"""The Helm chart, rendered by the real helm binary (built by `make tools`)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from plantwatch import cli
from plantwatch.plant.load import plant_from_documents
from plantwatch_operator.config import Config
from plantwatch_operator.render import plant_manifest, render_ingestion
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
    plant: dict[str, list] = {"sensorNodes": [], "alertRules": [], "detectorModels": [], "alertReceivers": []}
    key = {"SensorNode": "sensorNodes", "AlertRule": "alertRules", "DetectorModel": "detectorModels", "AlertReceiver": "alertReceivers"}
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
    assert kinds.count("CustomResourceDefinition") == 6  # our four and kopf's two peering CRDs
    assert kinds.count("SensorNode") == 5 and kinds.count("AlertRule") == 4 and kinds.count("DetectorModel") == 1
    assert kinds.count("AlertReceiver") == 1
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Pod"} <= set(kinds)
    plant = plant_from_documents([(f"doc{i}", d) for i, d in enumerate(docs) if d["apiVersion"].startswith("plantwatch.io/")])
    assert len(plant.nodes) == 5
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "line1-operator")
    env = {e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PLANTWATCH_BROKER_URL"] == "mqtts://line1-broker.plant-a.svc:8883"
    for d in docs:
        if d["kind"] == "Deployment":
            assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_chart_crds_are_the_project_crds_as_real_files():
    # A symlinked crds/ makes every helm command warn; tools/generate.py copies them instead.
    chart_crds = CHART / "crds"
    assert not chart_crds.is_symlink()
    # ours, and kopf's peering CRDs that the chart's operator replicas need (operator/deploy/crds)
    sources = [*(ROOT / "crds").glob("*.yaml"), *(ROOT / "operator" / "deploy" / "crds").glob("*.yaml")]
    project = {f.name: list(yaml.safe_load_all(f.read_text())) for f in sources}
    assert {f.name: list(yaml.safe_load_all(f.read_text())) for f in chart_crds.glob("*.yaml")} == project


def test_helm_commands_do_not_warn_about_the_chart():
    # What a symlinked crds/ printed on every command: "found symbolic link in path: ...".
    assert helm("lint", str(CHART), "--strict").stderr == ""


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


def test_the_broker_operator_deploy_names_is_the_charts_broker_rendered_as_release_plantwatch():
    """The non-Helm path (docs/kubernetes.md, "Install"): operator/deploy's gateways reach the Service the chart's
    broker is, rendered as release plantwatch with the operator off, and that render has no operator or test pod."""
    deploy = next(d for d in yaml.safe_load_all((ROOT / "operator" / "deploy" / "operator.yaml").read_text()) if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    host, port = env["PLANTWATCH_BROKER_URL"].removeprefix("mqtts://").split(":")
    out = helm("template", "plantwatch", str(CHART), "-n", "plant-a", "--skip-tests", "--set", "operator.enabled=false").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert not [d for d in docs if d["kind"] in ("Pod", "ClusterRole") or d["metadata"]["name"].endswith("-operator")]


def test_chart_rbac_matches_operator_deploy_rbac(tmp_path):
    """One set of operator permissions: the chart's Role grants what operator/deploy/rbac.yaml grants, namespaced."""
    out = helm("template", "line1", str(CHART), "-n", "plant-a").stdout
    role = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Role")
    deploy = next(d for d in yaml.safe_load_all((ROOT / "operator" / "deploy" / "rbac.yaml").read_text()) if d["kind"] == "ClusterRole")
    cluster_scoped = ("customresourcedefinitions", "nodes")
    namespaced = [r for r in deploy["rules"] if not set(r["resources"]) <= set(cluster_scoped)]

    def grants(rules):
        return {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}

    assert grants(role["rules"]) == grants(namespaced)
    # the cluster-scoped reads are the chart's ClusterRole's (kopf's discovery, and the GPU nodes' capacity)
    cluster_role = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "ClusterRole")
    assert {g for g in grants(deploy["rules"]) if g[1] in cluster_scoped} <= grants(cluster_role["rules"])


def rendered(tmp_path, values: dict) -> list[dict]:
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump(values))
    out = helm("template", "line1", str(CHART), "-n", "plant-a", "-f", sample_values(tmp_path), "-f", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def operator_env(docs: list[dict]) -> dict[str, str]:
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "line1-operator")
    return {e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_alerts_api_token_secret_reaches_the_gateway_as_a_mounted_reference(tmp_path, monkeypatch):
    """The chart's values become the operator's settings, which render the gateway's flags and mount;
    the token itself is never a value, an environment value or a rendered object."""
    docs = rendered(tmp_path, {"gateway": {"alertsApi": {"tokenSecret": {"name": "plantwatch-api", "key": "token"}, "openReads": True}}})
    # the one Secret the chart makes is the database password it generates (test_store_render.py)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == ["line1-postgres"] and "secretKeyRef" not in json.dumps(docs)
    for name, value in operator_env(docs).items():
        monkeypatch.setenv(name, value)
    config = Config.from_env()
    plant = [plant_manifest(d) for d in docs if d["apiVersion"].startswith("plantwatch.io/") and d["kind"] != "DetectorModel"]
    gateway = next(o for o in render_ingestion("plant-a", plant, config) if o["kind"] == "Deployment")
    pod = gateway["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[args.index("--api-token-secret") + 1] == "plantwatch-api/token" and "--api-open-reads" in args
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "plantwatch-api")
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/plantwatch/secrets/plantwatch-api", True)
    assert "plantwatch-api" not in json.dumps(container["env"])


def test_by_default_the_gateway_gets_no_api_token_and_closed_reads(tmp_path, monkeypatch):
    env = operator_env(rendered(tmp_path, {}))
    assert "PLANTWATCH_GATEWAY_API_TOKEN_SECRET" not in env
    monkeypatch.delenv("PLANTWATCH_GATEWAY_API_TOKEN_SECRET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (Config.from_env().gateway_api_token_secret, Config.from_env().gateway_api_open_reads) == (None, False)


@pytest.mark.parametrize(
    "token_secret, error",
    [
        ({"name": "plantwatch-api"}, "at '/gateway/alertsApi/tokenSecret': properties 'key' required, if 'name' exists"),
        ({"name": "Plantwatch_API", "key": "token"}, "at '/gateway/alertsApi/tokenSecret/name': 'Plantwatch_API' does not match pattern"),
        ({"name": "plantwatch-api", "key": "token", "value": "s3cret"}, "additional properties 'value' not allowed"),
    ],
)
def test_the_values_schema_refuses_a_token_secret_that_names_no_secret_key(tmp_path, token_secret, error):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"gateway": {"alertsApi": {"tokenSecret": token_secret}}}))
    result = helm("template", "x", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0 and error in result.stderr


@pytest.mark.parametrize(
    "value, error",
    [
        ("brokr.enabled=false", "at '': additional properties 'brokr' not allowed"),
        ("image.tg=1.0", "at '/image': additional properties 'tg' not allowed"),
        ("operator.replica=2", "at '/operator': additional properties 'replica' not allowed"),
        ("operator.watchNamespaces={plant-a,Plant_B}", "at '/operator/watchNamespaces/1': 'Plant_B' does not match pattern"),
        ("operator.watchNamespaces={plant-a,plant-a}", "at '/operator/watchNamespaces': items at 0 and 1 are equal"),
    ],
)
def test_the_values_schema_refuses_misspelt_keys_and_bad_namespace_names(value, error):
    result = helm("template", "x", str(CHART), "--set", value, check=False)
    assert result.returncode != 0 and error in result.stderr, result.stderr


def test_the_charts_operator_logs_json_and_watches_the_namespaces_it_is_given(tmp_path):
    """Its args as the image's entrypoint (`plantwatch`) parses them."""
    # (the chart's PostgreSQL serves the release namespace only: refused beside other watched namespaces)
    halls = {"operator": {"watchNamespaces": ["hall-1", "hall-2"]}, "store": {"postgres": {"enabled": False}}}
    for values, namespaces in (({}, ["plant-a"]), (halls, ["hall-1", "hall-2"])):
        operator = next(d for d in rendered(tmp_path, values) if d["kind"] == "Deployment" and d["metadata"]["name"] == "line1-operator")
        args = cli.parser().parse_args(operator["spec"]["template"]["spec"]["containers"][0]["args"])
        assert (args.command, args.log_format, args.namespace) == ("operator", "json", namespaces)


RULE_SPEC = {
    "selector": {"sensorType": "temperature"},
    "condition": {"type": "Threshold", "threshold": {"direction": "Above", "warning": "70", "critical": "80"}},
}
RECEIVERS = [
    {
        "name": "maintenance-hooks",
        "labels": {"team": "maintenance"},
        "spec": {
            "type": "Webhook",
            "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}, "hmacSecretRef": {"name": "hooks", "key": "hmac"}},
            "grouping": {"by": ["node"], "wait": "30s"},
        },
    },
    {"name": "andon", "spec": {"type": "MQTT", "mqtt": {"topic": "andon/{node}", "retain": True}}},
]


def test_alert_receivers_from_values_render_and_the_crd_accepts_them(tmp_path):
    rule = {
        "name": "press-hot",
        "spec": {**RULE_SPEC, "receivers": ["maintenance-hooks"], "escalation": [{"after": "10m", "receivers": ["andon"]}]},
    }
    docs = rendered(tmp_path, {"plant": {"alertReceivers": RECEIVERS, "alertRules": [rule]}})
    receivers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "AlertReceiver"}
    assert set(receivers) == {"maintenance-hooks", "andon"}
    assert receivers["maintenance-hooks"]["spec"] == RECEIVERS[0]["spec"]
    assert receivers["maintenance-hooks"]["metadata"]["labels"]["team"] == "maintenance"
    assert receivers["andon"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "line1"
    plant = plant_from_documents([(f"doc{i}", d) for i, d in enumerate(docs) if d["apiVersion"].startswith("plantwatch.io/")])
    assert {r.name for r in plant.receivers} == {"maintenance-hooks", "andon"}
    assert plant.receivers[[r.name for r in plant.receivers].index("maintenance-hooks")].spec.grouping.wait == "30s"


@pytest.mark.parametrize(
    "spec, error",
    [
        ({"type": "Pager"}, "at '/plant/alertReceivers/0/spec/type': value must be one of 'Slack', 'Webhook'"),
        # secrets are referenced, never given inline: a URL in the values is refused
        (
            {"type": "Webhook", "webhook": {"url": "https://hooks.example/x"}},
            "at '/plant/alertReceivers/0/spec/webhook': additional properties 'url' not allowed",
        ),
    ],
)
def test_values_schema_rejects_a_receiver_the_crd_rejects(tmp_path, spec, error):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"plant": {"alertReceivers": [{"name": "r", "spec": spec}]}}))
    result = helm("template", "x", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0 and error in result.stderr


def test_the_operator_runs_two_replicas_one_active_spread_and_kept_through_a_drain(tmp_path):
    """kopf peering in each watched namespace (the operator creates its KopfPeering; a Role lets it), a
    PodDisruptionBudget that keeps one replica through a drain, spread across nodes where it can be."""
    docs = rendered(tmp_path, {"operator": {"watchNamespaces": ["plant-a", "plant-b"]}, "store": {"postgres": {"enabled": False}}})
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "line1-operator")
    pod = operator["spec"]["template"]["spec"]
    assert operator["spec"]["replicas"] == 2 and "strategy" not in operator["spec"]  # rolling: the new pod waits as a standby
    assert "--peering=line1-operator" in pod["containers"][0]["args"]
    assert {c["readinessProbe"]["httpGet"]["path"] for c in pod["containers"]} == {"/readyz"}
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]
    [pdb] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"] == {"minAvailable": 1, "selector": operator["spec"]["selector"]}
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "line1-operator-peering"]
    assert {d["metadata"]["namespace"] for d in roles} == {"plant-a", "plant-b"}
    rule = {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["get", "list", "watch", "create", "patch"]}
    assert all(d["rules"] == [rule] for d in roles)
    bound = {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "line1-operator-peering"}
    assert bound == {"plant-a", "plant-b"}
    # One replica: no budget, which would forbid every drain of its node.
    single = rendered(tmp_path, {"operator": {"replicas": 1}})
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
