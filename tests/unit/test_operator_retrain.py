"""spec.retrain: the CronJob the operator renders for it, the candidate scored in shadow, and status.retrain."""

from __future__ import annotations

import copy
import json

import pytest

from plantwatch.plant.model import ManifestError, parse_resource
from plantwatch_operator.config import Config
from plantwatch_operator.render import render_detector, render_ingestion, selector
from plantwatch_operator.retrain import (
    render_retrain,
    retrain_status,
    scores_candidate,
    shadow_candidate,
)
from plantwatch_operator.status import detector_status
from plantwatch_operator.verdicts import SourceVerdict, Verdict
from tests.unit.test_no_secrets_in_manifests import restricted_violations
from tests.unit.test_render import sample_docs

CONFIG = Config(
    image="ghcr.io/plantwatch/plantwatch:test", broker_url="mqtts://broker:8883", gateway_api_token_secret=("plantwatch-api", "token")
)


def detector_doc(**retrain) -> dict:
    doc = copy.deepcopy(next(d for d in sample_docs() if d["kind"] == "DetectorModel"))
    doc["metadata"]["namespace"] = "plant-a"
    if retrain:
        doc["spec"]["retrain"] = retrain
    return doc


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def test_a_detector_without_retrain_gets_no_cronjob():
    assert render_retrain(parse_resource(detector_doc()), CONFIG) == []


def test_the_cronjob_runs_retrain_on_the_schedule_one_at_a_time():
    detector = parse_resource(detector_doc(schedule="0 3 * * *", window="36h"))
    objs = by_kind(render_retrain(detector, CONFIG))
    cron = objs["CronJob"]
    assert cron["metadata"]["name"] == "bearing-wear-retrain"
    spec = cron["spec"]
    assert (spec["schedule"], spec["suspend"], spec["concurrencyPolicy"]) == ("0 3 * * *", False, "Forbid")
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "detector",
        "retrain",
        "-f",
        "/etc/plantwatch/plant",
        "--model",
        "bearing-wear",
        "--gateway",
        "http://plantwatch-gateway:8080",
        "--token-file",
        "/etc/plantwatch/secrets/plantwatch-api/token",
        "--window",
        "36h",
        "--out",
        "/tmp/candidate",
        "--to-configmap",
        "bearing-wear-candidate",
        "--namespace",
        "plant-a",
    ]
    assert pod["serviceAccountName"] == "bearing-wear-retrain" and pod["restartPolicy"] == "Never"
    assert restricted_violations(pod) == []
    # The plant as the gateway reads it, and only the token's key of its Secret.
    [gateway] = [o for o in render_ingestion("plant-a", [], CONFIG) if o["kind"] == "Deployment"]
    plant_volume = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "plant")
    assert plant_volume in pod["volumes"]
    secret = next(v["secret"] for v in pod["volumes"] if "secret" in v)
    assert (secret["secretName"], secret["items"]) == ("plantwatch-api", [{"key": "token", "path": "token"}])


def test_suspend_and_the_default_window_reach_the_cronjob():
    cron = by_kind(render_retrain(parse_resource(detector_doc(schedule="@daily", suspend=True)), CONFIG))["CronJob"]
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cron["spec"]["suspend"] is True and args[args.index("--window") + 1] == "7d"


def test_open_reads_need_no_token():
    config = Config(image="x", gateway_api_token_secret=("plantwatch-api", "token"), gateway_api_open_reads=True)
    pod = by_kind(render_retrain(parse_resource(detector_doc(schedule="@daily")), config))["CronJob"]["spec"]["jobTemplate"]["spec"][
        "template"
    ]["spec"]
    assert "--token-file" not in pod["containers"][0]["args"] and not any("secret" in v for v in pod["volumes"])


def test_the_job_may_write_only_configmaps_and_reach_only_the_gateway_and_the_api_server():
    objs = by_kind(render_retrain(parse_resource(detector_doc(schedule="@daily")), CONFIG))
    rules = objs["Role"]["rules"]
    assert {r for rule in rules for r in rule["resources"]} == {"configmaps"}
    assert {g for rule in rules for g in rule["apiGroups"]} == {""}
    named = [r for r in rules if "resourceNames" in r]
    assert named == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["bearing-wear-candidate"], "verbs": ["get", "update", "patch"]}
    ]
    assert [r["verbs"] for r in rules if "resourceNames" not in r] == [["create"]]
    binding = objs["RoleBinding"]
    assert binding["roleRef"]["name"] == "bearing-wear-retrain"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bearing-wear-retrain", "namespace": "plant-a"}]
    policy = objs["NetworkPolicy"]["spec"]
    pod_labels = objs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["ingress"] == [] and set(policy["policyTypes"]) == {"Ingress", "Egress"}
    to_gateway = [e for e in policy["egress"] if "to" in e]
    assert to_gateway == [
        {"to": [{"podSelector": {"matchLabels": selector("gateway", "plant-a")}}], "ports": [{"protocol": "TCP", "port": 8080}]}
    ]
    ports = {p["port"] for e in policy["egress"] if "to" not in e for p in e["ports"]}
    assert ports == {53, 443, 6443}  # DNS and the API server, nothing else


def test_the_candidate_is_scored_in_shadow_while_it_exists_unless_the_spec_names_a_shadow():
    doc = detector_doc(schedule="@daily")
    detector = parse_resource(doc)
    cm = {"metadata": {"name": "bearing-wear-candidate"}}
    assert shadow_candidate(detector, None) is None
    name = shadow_candidate(detector, cm)
    [deployment] = [o for o in render_detector(detector, CONFIG, name) if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shadow-model") + 1] == "/shadow/model.onnx"
    assert {"name": "shadow", "configMap": {"name": "bearing-wear-candidate"}} in deployment["spec"]["template"]["spec"]["volumes"]
    assert scores_candidate(deployment, "bearing-wear")
    # The same as spec.shadow naming that ConfigMap would render.
    named = {**doc, "spec": {**doc["spec"], "shadow": {"configMap": {"name": "bearing-wear-candidate"}}}}
    assert render_detector(parse_resource(named), CONFIG) == render_detector(detector, CONFIG, name)
    # A person's own spec.shadow wins; without spec.retrain a leftover candidate is not scored.
    assert shadow_candidate(parse_resource({**named}), cm) is None
    assert shadow_candidate(parse_resource(detector_doc()), cm) is None
    [plain] = [o for o in render_detector(detector, CONFIG) if o["kind"] == "Deployment"]
    assert not scores_candidate(plain, "bearing-wear")


@pytest.mark.parametrize(
    ("retrain", "message"),
    [
        ({"schedule": "0 25 * * *"}, "retrain.schedule must be a cron expression of five fields"),
        ({"schedule": "daily"}, "retrain.schedule must be a cron expression of five fields"),
        ({"schedule": "0 3 * *"}, "retrain.schedule must be a cron expression of five fields"),
        ({"schedule": "@daily", "window": "1w"}, "retrain.window must be a positive duration"),
        ({"schedule": "@daily", "window": "0d"}, "retrain.window must be a positive duration"),
        ({"window": "7d"}, "spec.retrain.schedule: Required value"),
    ],
)
def test_the_validator_refuses_a_bad_schedule_or_window_saying_what_is_accepted(retrain, message):
    with pytest.raises(ManifestError) as err:
        parse_resource(detector_doc(**retrain))
    assert message in str(err.value)


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/15 * * * *", "30 2 1,15 JAN-MAR MON-FRI", "@weekly", "0 0 ? * 0"])
def test_the_validator_takes_cron_expressions_a_cronjob_takes(schedule):
    assert parse_resource(detector_doc(schedule=schedule)).spec.retrain.schedule == schedule


def candidate(comparison: str | None) -> dict:
    cm = {
        "metadata": {
            "name": "bearing-wear-candidate",
            "creationTimestamp": "2026-11-01T03:00:00Z",
            "managedFields": [{"manager": "a", "time": "2026-11-01T03:00:00Z"}, {"manager": "b", "time": "2026-11-02T03:00:04Z"}],
        },
        "binaryData": {"model.onnx": "AAAA"},
    }
    if comparison is not None:
        cm["data"] = {"comparison.json": comparison, "model-card.json": "{}"}
    return cm


def test_status_retrain_carries_the_last_write_and_the_flat_comparison():
    comparison = {
        "served": {"alarm_rate": 0.1},
        "candidate_alarm_rate": 0.05,
        "disagreement": 0.02,
        "verdict": "better",
        "nan": float("nan"),
    }
    status = retrain_status("bearing-wear", candidate(json.dumps(comparison)))
    assert status == {
        "candidate": "bearing-wear-candidate",
        "lastCandidateTime": "2026-11-02T03:00:04Z",
        "comparison": {"candidate_alarm_rate": 0.05, "disagreement": 0.02, "verdict": "better"},
    }
    assert retrain_status("bearing-wear", None) == {"candidate": "bearing-wear-candidate"}
    assert "comparison" not in retrain_status("bearing-wear", candidate(None))
    broken = retrain_status("bearing-wear", candidate("{not json"))
    assert broken["comparisonError"].startswith("comparison.json in ConfigMap bearing-wear-candidate is not JSON")
    many = retrain_status("bearing-wear", candidate(json.dumps({f"k{i:02}": i for i in range(40)})))
    assert len(many["comparison"]) == 16


def test_status_retrain_is_written_and_dropped_with_spec_retrain():
    body = {**detector_doc(schedule="@daily"), "status": {}}
    body["metadata"]["generation"] = 1
    source, scoring = SourceVerdict("True", "Found", "ok", None), Verdict("True", "NodesScored", "x")
    retrain = retrain_status("bearing-wear", None)
    update = detector_status(body, source, scoring, {}, "2026-11-30T00:00:00Z", retrain)
    assert update.status["retrain"] == {"candidate": "bearing-wear-candidate"}
    written = {**body, "status": update.status}
    assert detector_status(written, source, scoring, {}, "2026-11-30T00:00:00Z", retrain) is None
    dropped = detector_status(written, source, scoring, {}, "2026-11-30T00:00:00Z", None)
    assert dropped is not None and "retrain" not in dropped.status
