"""The operator's rendering is pure: pinned by golden files, and its rules checked directly.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import base64
import copy
import datetime
import os
import socket
import ssl
import threading
from pathlib import Path

import pytest
import yaml

from plantwatch.plant.model import parse_resource
from plantwatch_operator import broker, certs
from plantwatch_operator.config import Config
from plantwatch_operator.render import PlainDumper, plant_manifest, render_detector, render_ingestion
from tests.conftest import EXAMPLE_PLANT

GOLDEN = Path(__file__).parent / "golden"
CONFIG = Config(image="ghcr.io/plantwatch/plantwatch:test", broker_url="mqtts://broker:8883")


def sample_docs() -> list[dict]:
    docs = []
    for f in sorted(EXAMPLE_PLANT.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d and d["apiVersion"].startswith("plantwatch.io/")]
    return docs


def golden(name: str, objects: list[dict]) -> None:
    text = yaml.dump_all(objects, Dumper=PlainDumper, sort_keys=True)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"rendering changed; if intended, UPDATE_GOLDEN=1 and review the diff of {path}"


def test_ingestion_golden():
    golden("ingestion.yaml", render_ingestion("plant-a", [plant_manifest(d) for d in sample_docs()], CONFIG))


def test_detector_golden():
    detector = next(d for d in sample_docs() if d["kind"] == "DetectorModel")
    golden(
        "detector.yaml", render_detector(parse_resource({**detector, "metadata": {**detector["metadata"], "namespace": "plant-a"}}), CONFIG)
    )


def config_hash(docs: list[dict]) -> str:
    cm = render_ingestion("plant-a", [plant_manifest(d) for d in docs], CONFIG)[0]
    return cm["metadata"]["annotations"]["plantwatch.io/config-hash"]


def test_config_hash_follows_content_not_order():
    docs = sample_docs()
    assert config_hash(docs) == config_hash(list(reversed(docs)))
    changed = copy.deepcopy(docs)
    node = next(d for d in changed if d["kind"] == "SensorNode")
    node["spec"]["heartbeat"]["interval"] = "7s"
    assert config_hash(changed) != config_hash(docs)
    status_only = copy.deepcopy(docs)
    status_only[0]["status"] = {"conditions": []}
    status_only[0]["metadata"]["resourceVersion"] = "42"
    assert config_hash(status_only) == config_hash(docs)


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_detectors_request_a_gpu_on_the_jetson(provider):
    doc = next(d for d in sample_docs() if d["kind"] == "DetectorModel")
    doc = copy.deepcopy(doc)
    doc["spec"]["executionProvider"] = provider
    doc["spec"]["placement"] = {"nodeSelector": {"plantwatch.io/area": "hall-1"}}
    deployment = render_detector(parse_resource(doc), CONFIG)[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"plantwatch.io/accelerator": "nvidia", "plantwatch.io/area": "hall-1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "--provider" in pod["containers"][0]["args"] and provider in pod["containers"][0]["args"]


def test_cpu_detector_has_no_gpu_and_hpa_owns_replicas():
    doc = next(d for d in sample_docs() if d["kind"] == "DetectorModel")
    deployment, _service, hpa, *_identity = render_detector(parse_resource(doc), CONFIG)
    assert "replicas" not in deployment["spec"]
    assert "nvidia.com/gpu" not in deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)


def test_url_source_is_downloaded_with_its_checksum():
    doc = copy.deepcopy(next(d for d in sample_docs() if d["kind"] == "DetectorModel"))
    doc["spec"]["source"] = {"url": {"url": "https://models.example/bearing.onnx", "sha256": "a" * 64}}
    args = render_detector(parse_resource(doc), CONFIG)[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--model-url") + 1] == "https://models.example/bearing.onnx"
    assert args[args.index("--sha256") + 1] == "a" * 64


def test_a_shadow_model_is_mounted_beside_the_served_one_and_passed_as_the_candidate():
    doc = copy.deepcopy(next(d for d in sample_docs() if d["kind"] == "DetectorModel"))
    served = render_detector(parse_resource(doc), CONFIG)[0]["spec"]["template"]["spec"]
    assert "--shadow-model" not in served["containers"][0]["args"]
    doc["spec"]["shadow"] = {"configMap": {"name": "bearing-wear-candidate"}}
    pod = render_detector(parse_resource(doc), CONFIG)[0]["spec"]["template"]["spec"]
    args, mounts = pod["containers"][0]["args"], pod["containers"][0]["volumeMounts"]
    assert args[args.index("--shadow-model") + 1] == "/shadow/model.onnx"
    assert args[args.index("--model") + 1] == served["containers"][0]["args"][served["containers"][0]["args"].index("--model") + 1]
    assert {"name": "shadow", "configMap": {"name": "bearing-wear-candidate"}} in pod["volumes"]
    assert {"name": "shadow", "mountPath": "/shadow", "readOnly": True} in mounts
    assert [v for v in pod["volumes"] if v["name"] == "model"] == served["volumes"]
    doc["spec"]["shadow"] = {"pvc": {"claimName": "models", "path": "/candidates/bearing.onnx"}}
    pod = render_detector(parse_resource(doc), CONFIG)[0]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--shadow-model") + 1] == "/shadow/candidates/bearing.onnx"
    assert {"name": "shadow", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]


def test_workloads_are_restricted():
    objs = render_ingestion("p", [plant_manifest(d) for d in sample_docs()], CONFIG)
    objs += render_detector(parse_resource(next(d for d in sample_docs() if d["kind"] == "DetectorModel")), CONFIG)
    for d in (o for o in objs if o["kind"] == "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            assert c["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            assert c["resources"]["requests"]["cpu"]


def test_gateway_may_only_report_status_and_post_events():
    objs = render_ingestion("p", [plant_manifest(d) for d in sample_docs()], CONFIG)
    role = next(o for o in objs if o["kind"] == "Role")
    assert role["rules"] == [
        {"apiGroups": ["plantwatch.io"], "resources": ["sensornodes/status", "alertrules/status"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "plantwatch-gateway"
    assert "--report-status" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


RECEIVERS = [
    {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertReceiver",
        "metadata": {"name": "maintenance-hooks"},
        "spec": {
            "type": "Webhook",
            "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}, "hmacSecretRef": {"name": "hooks", "key": "hmac"}},
        },
    },
    {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertReceiver",
        "metadata": {"name": "line-1-slack"},
        "spec": {"type": "Slack", "slack": {"urlSecretRef": {"name": "slack.line-1", "key": "webhook-url"}}},
    },
]


def test_the_gateway_mounts_each_referenced_secret_read_only_and_no_more():
    objs = render_ingestion("p", [plant_manifest(d) for d in [*sample_docs(), *RECEIVERS]], CONFIG)
    pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"] if m["name"] in secrets}
    assert set(mounts) == {"/etc/plantwatch/secrets/hooks", "/etc/plantwatch/secrets/slack.line-1", *BROKER_MOUNTS}
    assert all(m["readOnly"] for m in mounts.values())
    by_secret = {secrets[m["name"]]["secretName"]: secrets[m["name"]] for m in mounts.values()}
    assert by_secret["hooks"]["items"] == [{"key": "hmac", "path": "hmac"}, {"key": "url", "path": "url"}]
    assert by_secret["slack.line-1"]["items"] == [{"key": "webhook-url", "path": "webhook-url"}]
    assert all(s["defaultMode"] == 0o400 and s["optional"] for s in secrets.values())
    assert not any("secretKeyRef" in str(e) for e in container["env"])  # never as environment values
    # the plant is read from beside the Secrets, never from above them
    args = container["args"]
    assert args[args.index("-f") + 1] == "/etc/plantwatch/plant"
    plant = next(m for m in container["volumeMounts"] if m["name"] == "plant")
    assert plant["mountPath"] == "/etc/plantwatch/plant"
    configmap = objs[0]["data"]["plant.yaml"]
    assert "kind: AlertReceiver" in configmap and "line-1-slack" in configmap


#: What every gateway mounts to reach the broker: its own MQTT password and the CA it pins.
BROKER_MOUNTS = ("/etc/plantwatch/secrets/plantwatch-gateway-mqtt", "/etc/plantwatch/secrets/plantwatch-broker-tls")


def test_a_plant_without_receivers_mounts_only_the_broker_identity_and_ca():
    pod = next(o for o in render_ingestion("p", [plant_manifest(d) for d in sample_docs()], CONFIG) if o["kind"] == "Deployment")
    secrets = {v["secret"]["secretName"]: v["secret"]["items"] for v in pod["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert secrets == {
        "plantwatch-gateway-mqtt": [{"key": "password", "path": "password"}],
        "plantwatch-broker-tls": [{"key": "ca.crt", "path": "ca.crt"}],
    }


def test_the_gateway_reaches_the_broker_by_url_identity_and_pinned_ca_with_no_secret_in_its_args():
    [container] = gateway_pod(sample_docs(), CONFIG)["containers"]
    args = container["args"]
    flags = {f: args[args.index(f) + 1] for f in ("--broker", "--broker-username", "--broker-password-file", "--broker-ca")}
    assert flags == {
        "--broker": "mqtts://broker:8883",
        "--broker-username": "plantwatch-gateway",
        "--broker-password-file": "/etc/plantwatch/secrets/plantwatch-gateway-mqtt/password",
        "--broker-ca": "/etc/plantwatch/secrets/plantwatch-broker-tls/ca.crt",
    }
    assert [e["name"] for e in container["env"]] == ["POD_NAMESPACE"]
    plain = Config(image=CONFIG.image, broker_url="mqtt://broker:1883")  # a broker without TLS: no CA to pin
    assert "--broker-ca" not in gateway_pod(sample_docs(), plain)["containers"][0]["args"]


@pytest.mark.parametrize(
    "url, error",
    [
        ("mqtts://gw:s3cret@broker:8883", "the URL carries credentials"),
        ("http://broker:8883", "expected mqtts://host:port"),
    ],
)
def test_a_broker_url_with_credentials_or_another_scheme_stops_the_operator(monkeypatch, url, error):
    monkeypatch.setenv("PLANTWATCH_BROKER_URL", url)
    with pytest.raises(ValueError, match=error) as exc:
        Config.from_env()
    assert "s3cret" not in str(exc.value)


def test_network_policies_allow_the_data_path_only():
    objs = render_ingestion("p", [plant_manifest(d) for d in sample_docs()], CONFIG)
    [policy] = [o for o in objs if o["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "gateway", "app.kubernetes.io/instance": "p"}
    assert spec["policyTypes"] == ["Ingress", "Egress"]  # everything not listed is denied both ways
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert 8883 in egress_ports and 1883 not in egress_ports
    doc = next(d for d in sample_docs() if d["kind"] == "DetectorModel")
    detector = parse_resource({**doc, "metadata": {"name": "bw", "namespace": "p"}})
    [served] = [o for o in render_detector(detector, CONFIG) if o["kind"] == "NetworkPolicy"]
    [ingress] = served["spec"]["ingress"]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}}]
    assert {p["port"] for rule in served["spec"]["egress"] for p in rule["ports"]} == {53, 443, 6443}  # no model URL: no download


def test_inference_pods_may_only_report_their_own_detector_status():
    detector = parse_resource(
        {**next(d for d in sample_docs() if d["kind"] == "DetectorModel"), "metadata": {"name": "bearing-wear", "namespace": "p"}}
    )
    objs = render_detector(detector, CONFIG)
    role = next(o for o in objs if o["kind"] == "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["plantwatch.io"],
            "resources": ["detectormodels/status"],
            "resourceNames": ["bearing-wear"],
            "verbs": ["get", "patch"],
        }
    ]
    pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == role["metadata"]["name"] == "plantwatch-detector-bearing-wear"
    args = pod["containers"][0]["args"]
    assert args[args.index("--status-namespace") + 1] == "$(POD_NAMESPACE)"


API = Config(
    image=CONFIG.image, broker_url=CONFIG.broker_url, gateway_api_token_secret=("plantwatch-api", "token"), gateway_api_open_reads=True
)


def gateway_pod(docs: list[dict], config: Config) -> dict:
    return next(o for o in render_ingestion("p", [plant_manifest(d) for d in docs], config) if o["kind"] == "Deployment")["spec"][
        "template"
    ]["spec"]


def test_the_gateway_reads_its_api_token_from_a_mounted_secret_never_the_environment():
    pod = gateway_pod(sample_docs(), API)
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("--api-token-secret") + 1] == "plantwatch-api/token" and "--api-open-reads" in args
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "plantwatch-api"]
    assert volume["secret"] == {
        "secretName": "plantwatch-api",
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o400,
        "optional": True,
    }
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/plantwatch/secrets/plantwatch-api", True)
    assert "plantwatch-api" not in str(container["env"])


def test_without_the_setting_the_gateway_has_no_api_token_and_closed_reads():
    args = gateway_pod(sample_docs(), CONFIG)["containers"][0]["args"]
    assert "--api-token-secret" not in args and "--api-open-reads" not in args
    closed = Config(image=CONFIG.image, broker_url=CONFIG.broker_url, gateway_api_token_secret=("plantwatch-api", "token"))
    assert "--api-open-reads" not in gateway_pod(sample_docs(), closed)["containers"][0]["args"]


def test_a_secret_shared_by_the_api_token_and_a_receiver_is_mounted_once_with_both_keys():
    config = Config(image=CONFIG.image, broker_url=CONFIG.broker_url, gateway_api_token_secret=("hooks", "api-token"))
    pod = gateway_pod([*sample_docs(), *RECEIVERS], config)
    secrets = {v["secret"]["secretName"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert secrets["hooks"]["items"] == [{"key": k, "path": k} for k in ("api-token", "hmac", "url")]
    paths = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
    assert len(paths) == len(set(paths)) and "/etc/plantwatch/secrets/hooks" in paths


def test_the_api_settings_are_read_from_the_environment_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.setenv("PLANTWATCH_GATEWAY_API_TOKEN_SECRET", "plantwatch-api/token")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_API_OPEN_READS", "true")
    config = Config.from_env()
    assert (config.gateway_api_token_secret, config.gateway_api_open_reads) == (("plantwatch-api", "token"), True)
    monkeypatch.setenv("PLANTWATCH_GATEWAY_API_TOKEN_SECRET", "")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_API_OPEN_READS", "false")
    assert (Config.from_env().gateway_api_token_secret, Config.from_env().gateway_api_open_reads) == (None, False)
    for bad in ("plantwatch-api", "Plantwatch_API/token", "plantwatch-api/", "plantwatch-api/a/b"):
        monkeypatch.setenv("PLANTWATCH_GATEWAY_API_TOKEN_SECRET", bad)
        with pytest.raises(ValueError, match=f"PLANTWATCH_GATEWAY_API_TOKEN_SECRET='{bad}': expected a Secret and its key as NAME/KEY"):
            Config.from_env()
    monkeypatch.setenv("PLANTWATCH_GATEWAY_API_TOKEN_SECRET", "")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_API_OPEN_READS", "yes")
    with pytest.raises(ValueError, match="PLANTWATCH_GATEWAY_API_OPEN_READS='yes': expected true or false"):
        Config.from_env()


# --- the broker's certificates (broker.py, certs.py) ------------------------------------

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
LIFETIME = datetime.timedelta(days=90)
HOSTS = certs.broker_hosts("mqtts://line1-broker.plant-a.svc:8883")


def secret_values(manifest: dict) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in manifest["data"].items()}


def written(ca, server, now=NOW, hosts=HOSTS) -> dict[str, dict[str, bytes]]:
    return {m["metadata"]["name"]: secret_values(m) for m in broker.tls_secrets("plant-a", {}, ca, server, hosts, now, LIFETIME)}


def handshake(tmp_path: Path, server: dict[str, bytes], host: str) -> str:
    """A TLS handshake (OpenSSL, as mosquitto and the gateway do it) against `server`'s certificate, the client pinning
    its ca.crt and checking `host`; the negotiated version."""
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(server[name])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    a, b = socket.socketpair()
    with a, b:
        accepted: list[Exception | None] = []

        def serve() -> None:
            try:
                with server_ctx.wrap_socket(a, server_side=True):
                    accepted.append(None)
            except (ssl.SSLError, OSError) as exc:
                accepted.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with client_ctx.wrap_socket(b, server_hostname=host) as tls:
                return tls.version() or ""
        finally:
            b.close()
            thread.join(10)


def test_the_generated_certificate_is_trusted_by_its_ca_for_every_broker_name_and_no_other(tmp_path):
    assert HOSTS == (
        "line1-broker.plant-a.svc",
        "line1-broker",
        "line1-broker.plant-a",
        "line1-broker.plant-a.svc.cluster.local",
    )
    server = written(None, None, now=datetime.datetime.now(datetime.UTC))["plantwatch-broker-tls"]
    for host in HOSTS:
        assert handshake(tmp_path, server, host) in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(tmp_path, server, "evil.example")


def test_certificates_are_written_once_and_renewed_with_a_third_of_their_lifetime_left():
    first = written(None, None)
    assert set(first) == {"plantwatch-broker-ca", "plantwatch-broker-tls"}
    ca, server = first["plantwatch-broker-ca"], first["plantwatch-broker-tls"]
    assert server["ca.crt"] == ca["tls.crt"] and certs.signed_by(server["tls.crt"], ca["tls.crt"])
    assert written(ca, server) == {}  # nothing to do: no write, no broker restart
    assert written(ca, server, now=NOW + LIFETIME * 0.6) == {}
    renewed = written(ca, server, now=NOW + LIFETIME * 0.7)
    assert set(renewed) == {"plantwatch-broker-tls"}  # the CA the nodes pin stays
    assert renewed["plantwatch-broker-tls"]["ca.crt"] == ca["tls.crt"] and renewed["plantwatch-broker-tls"]["tls.crt"] != server["tls.crt"]
    assert set(written(ca, server, hosts=("other-broker",))) == {"plantwatch-broker-tls"}  # the broker moved
    new_ca = written(ca, server, now=NOW + LIFETIME * certs.CA_LIFETIMES * 0.7)
    assert set(new_ca) == {"plantwatch-broker-ca", "plantwatch-broker-tls"}
    assert certs.signed_by(new_ca["plantwatch-broker-tls"]["tls.crt"], new_ca["plantwatch-broker-ca"]["tls.crt"])
    assert not certs.signed_by(new_ca["plantwatch-broker-tls"]["tls.crt"], ca["tls.crt"])
    # a server certificate another CA signed (a CA Secret restored from a backup, say) is replaced
    assert set(written(new_ca["plantwatch-broker-ca"], server)) == {"plantwatch-broker-tls"}


def test_with_cert_manager_the_plant_gets_its_own_ca_chain_or_the_configured_issuer():
    chain = broker.cert_manager_objects("plant-a", {}, HOSTS, LIFETIME, None)
    assert [(o["kind"], o["metadata"]["name"]) for o in chain] == [
        ("Issuer", "plantwatch-broker-selfsigned"),
        ("Certificate", "plantwatch-broker-ca"),
        ("Issuer", "plantwatch-broker-ca"),
        ("Certificate", "plantwatch-broker-tls"),
    ]
    server = chain[-1]["spec"]
    assert (server["secretName"], server["dnsNames"], server["duration"], server["renewBefore"]) == (
        "plantwatch-broker-tls",
        list(HOSTS),
        "7776000s",
        "2592000s",
    )
    assert server["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "plantwatch-broker-ca"}
    [only] = broker.cert_manager_objects("plant-a", {}, HOSTS, LIFETIME, ("ClusterIssuer", "plant-ca"))
    assert only["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "plant-ca"}


@pytest.mark.parametrize(
    "variable, value, error",
    [
        ("PLANTWATCH_BROKER_CERT_LIFETIME", "30", "expected seconds, at least 60"),
        ("PLANTWATCH_BROKER_ISSUER", "plant-ca", "expected Issuer/NAME or ClusterIssuer/NAME"),
    ],
)
def test_bad_certificate_settings_stop_the_operator_at_start_up(monkeypatch, variable, value, error):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}='{value}': {error}"):
        Config.from_env()
