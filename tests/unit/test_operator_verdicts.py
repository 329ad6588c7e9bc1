"""The operator's verdicts without a cluster: which nodes and rules go into the gateway's config
(and why the others do not), and whether a DetectorModel's source holds the model it names."""

from __future__ import annotations

import base64
import copy
import hashlib

import yaml

from plantwatch.alerts.promrule import render_prometheus_rule
from plantwatch_operator.verdicts import (
    SourceVerdict,
    Verdict,
    judge_plant,
    prometheus_rule_verdict,
    receiver_verdict,
    referenced_secrets,
    scoring_verdict,
    source_verdict,
)
from tests.conftest import EXAMPLE_PLANT


def listed(kind: str) -> list[dict]:
    """The sample plant's objects of one kind, as the API server lists them in namespace plant-a."""
    docs = [d for f in sorted(EXAMPLE_PLANT.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    return [
        {**d, "metadata": {**d["metadata"], "namespace": "plant-a", "uid": f"uid-{d['metadata']['name']}", "generation": 1}}
        for d in docs
        if d and d.get("kind") == kind
    ]


#: The sample plant's AlertReceivers (its overtemperature rule notifies `andon`).
SAMPLE_RECEIVERS = listed("AlertReceiver")


def verdicts(nodes: list[dict], rules: list[dict], detectors: list[dict]) -> dict[str, tuple[Verdict, int]]:
    return {
        body["metadata"]["name"]: (verdict, matched)
        for body, verdict, matched in judge_plant(nodes, rules, detectors, SAMPLE_RECEIVERS).rules
    }


def test_the_sample_plant_is_accepted_whole():
    nodes, rules, detectors = listed("SensorNode"), listed("AlertRule"), listed("DetectorModel")
    plant = judge_plant(nodes, rules, detectors, SAMPLE_RECEIVERS)
    assert plant.valid_nodes == nodes and plant.accepted_rules == rules and plant.detectors == detectors
    for name, (verdict, matched) in verdicts(nodes, rules, detectors).items():
        assert verdict == ("True", "Loaded", "the rule is part of the gateway's config"), name
        assert matched > 0, name


def test_each_rule_says_whether_prometheus_evaluates_it_too():
    rules = listed("AlertRule")
    jump = copy.deepcopy(rules[0])
    jump["metadata"]["name"] = "jump"
    jump["spec"]["condition"] = {"type": "RateOfChange", "rateOfChange": {"maxPerMinute": "5"}}
    plant = judge_plant(listed("SensorNode"), [*rules, jump], [], SAMPLE_RECEIVERS)  # no DetectorModel: bearing-anomaly is refused
    manifest, rendered = render_prometheus_rule(plant.accepted_plant, "plant-a")
    assert {g["name"] for g in manifest["spec"]["groups"]} == {"machine-overtemperature", "vibration-high", "node-silent"}
    found = {
        body["metadata"]["name"]: prometheus_rule_verdict(verdict, body["metadata"]["name"], rendered, "plantwatch-plant-a-rules")[:2]
        for body, verdict, _ in plant.rules
    }
    assert found == {
        "machine-overtemperature": ("True", "Rendered"),
        "vibration-high": ("True", "Rendered"),
        "node-silent": ("True", "Rendered"),
        "bearing-anomaly": ("False", "NotAccepted"),
        "jump": ("False", "NotExpressible"),
    }
    loaded = Verdict("True", "Loaded", "")
    assert prometheus_rule_verdict(loaded, "jump", rendered, "r").message.startswith("RateOfChange compares each reading")
    absent = prometheus_rule_verdict(loaded, "vibration-high", None, "r")
    assert absent.reason == "PrometheusOperatorAbsent" and "prometheusrules.monitoring.coreos.com" in absent.message


def test_an_anomaly_rule_waits_for_its_detector():
    result = verdicts(listed("SensorNode"), listed("AlertRule"), [])
    verdict, _ = result["bearing-anomaly"]
    assert verdict == (
        "False",
        "DetectorNotFound",
        "condition.anomalyScore.detector 'bearing-wear' names no DetectorModel in this namespace",
    )
    assert all(v.status == "True" for name, (v, _) in result.items() if name != "bearing-anomaly")


def test_a_detector_scores_the_selected_nodes_with_all_its_sensors():
    nodes, detectors = listed("SensorNode"), listed("DetectorModel")
    plant = judge_plant(nodes, listed("AlertRule"), detectors, SAMPLE_RECEIVERS)
    assert plant.scoring == [(detectors[0], Verdict("True", "NodesMatched", "scores 1 SensorNode(s): esp32-press-01"))]
    assert plant.scoring_detectors == detectors


def test_a_detector_naming_a_sensor_no_node_has_scores_nothing_and_stays_out_of_the_config():
    """It would otherwise show ModelValid and Available and never score; the gateway would refuse it."""
    nodes, rules = listed("SensorNode"), listed("AlertRule")
    typo = copy.deepcopy(listed("DetectorModel")[0])
    typo["spec"]["features"]["sensors"] = ["temperature", "vibration", "motor_current"]
    plant = judge_plant(nodes, rules, [typo], SAMPLE_RECEIVERS)
    [(_, verdict)] = plant.scoring
    assert verdict.status == "False" and verdict.reason == "SensorsNotFound"
    assert verdict.message.startswith(
        "spec.features.sensors: no SensorNode its nodeSelector selects has all of temperature, vibration, motor_current"
    )
    assert "esp32-press-01 lacks motor_current" in verdict.message and "rpi-line1-env lacks" in verdict.message
    assert plant.scoring_detectors == []
    refused = {body["metadata"]["name"]: verdict.reason for body, verdict, _ in plant.rules if verdict.status == "False"}
    assert refused == {"bearing-anomaly": "NoMatchingSeries"}  # its detector scores no node

    press = next(n for n in nodes if n["metadata"]["name"] == "esp32-press-01")
    wired = copy.deepcopy(press)
    wired["spec"]["sensors"].append({"name": "motor_current", "type": "current", "unit": "ampere", "field": "motor_current_a"})
    others = [n for n in nodes if n is not press]
    assert scoring_verdict(typo, [*others, wired]) == Verdict("True", "NodesMatched", "scores 1 SensorNode(s): esp32-press-01")


def test_a_detector_whose_selector_selects_no_node_says_which_nodes_exist():
    detector = copy.deepcopy(listed("DetectorModel")[0])
    detector["spec"]["features"]["nodeSelector"] = {"matchLabels": {"plantwatch.io/line": "line-9"}}
    verdict = scoring_verdict(detector, listed("SensorNode"))
    assert verdict[:2] == ("False", "SensorsNotFound")
    assert verdict.message.startswith(
        "spec.features.nodeSelector (plantwatch.io/line=line-9) selects none of the 5 SensorNode(s) (boiler-gateway, "
    )
    assert scoring_verdict(detector, []).message == "there is no SensorNode, so the DetectorModel scores nothing until one has its sensors"


def test_a_rule_with_an_unknown_receiver_is_refused():
    rules = copy.deepcopy(listed("AlertRule"))
    rules[0]["spec"]["receivers"] = ["console", "pager"]
    verdict, matched = verdicts(listed("SensorNode"), rules, listed("DetectorModel"))[rules[0]["metadata"]["name"]]
    assert verdict == (
        "False",
        "UnknownReceiver",
        "spec.receivers: no AlertReceiver named 'pager' in the plant (known: console, andon); "
        "define an AlertReceiver of that name or use one of these",
    )
    assert matched > 0  # still reported: the selector is not what is wrong


def receiver(name: str, spec: dict, **meta) -> dict:
    return {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertReceiver",
        "metadata": {"name": name, "namespace": "plant-a", **meta},
        "spec": spec,
    }


PAGER = receiver("pager", {"type": "Slack", "slack": {"urlSecretRef": {"name": "pager-slack", "key": "url"}}})
HOOKS = receiver(
    "hooks",
    {"type": "Webhook", "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}, "hmacSecretRef": {"name": "hooks", "key": "hmac"}}},
)


def test_a_rule_is_accepted_once_an_alertreceiver_defines_its_receivers():
    rules = copy.deepcopy(listed("AlertRule"))
    rules[0]["spec"]["receivers"] = ["console"]
    rules[0]["spec"]["escalation"] = [{"after": "15m", "receivers": ["pager"]}]
    name = rules[0]["metadata"]["name"]
    verdict, _ = verdicts(listed("SensorNode"), rules, listed("DetectorModel"))[name]
    assert (verdict.reason, "'pager'" in verdict.message) == ("UnknownReceiver", True)  # an escalation tier's receiver counts
    plant = judge_plant(listed("SensorNode"), rules, listed("DetectorModel"), [*SAMPLE_RECEIVERS, PAGER], {"pager-slack": ["url"]})
    assert {b["metadata"]["name"]: v.status for b, v, _ in plant.rules}[name] == "True"
    # a receiver whose Secret is missing still defines the name: the rule stays, the receiver says what is missing
    plant = judge_plant(listed("SensorNode"), rules, listed("DetectorModel"), [*SAMPLE_RECEIVERS, PAGER], {"pager-slack": None})
    assert {b["metadata"]["name"]: v.status for b, v, _ in plant.rules}[name] == "True"
    assert plant.configured_receivers == [*SAMPLE_RECEIVERS, PAGER]
    # one being deleted has left the plant, and the rule with it
    going = receiver("pager", PAGER["spec"], deletionTimestamp="2026-01-01T00:00:00Z")
    plant = judge_plant(listed("SensorNode"), rules, listed("DetectorModel"), [*SAMPLE_RECEIVERS, going], {"pager-slack": ["url"]})
    assert {b["metadata"]["name"]: v.reason for b, v, _ in plant.rules}[name] == "UnknownReceiver"
    assert [b["metadata"]["name"] for b, _ in plant.receivers] == ["andon"]


def test_a_receiver_is_accepted_when_its_secrets_hold_the_keys_it_names():
    assert referenced_secrets([PAGER, HOOKS]) == {"hooks": ("hmac", "url"), "pager-slack": ("url",)}
    assert receiver_verdict(HOOKS, {"hooks": ["hmac", "url", "unused"]}) == (
        "True",
        "Loaded",
        "the receiver is part of the gateway's config; its Secrets hooks are mounted at /etc/plantwatch/secrets/<secret>",
    )


def test_a_missing_secret_or_key_is_secret_not_found_naming_each():
    assert receiver_verdict(PAGER, {"pager-slack": None}) == (
        "False",
        "SecretNotFound",
        "spec.slack.urlSecretRef: Secret 'pager-slack' does not exist in this namespace; "
        "the gateway cannot send to this receiver until they exist",
    )
    verdict = receiver_verdict(HOOKS, {"hooks": ["url"]})
    assert (verdict.reason, verdict.message) == (
        "SecretNotFound",
        "spec.webhook.hmacSecretRef: Secret 'hooks' has no key 'hmac' (keys: url); "
        "the gateway cannot send to this receiver until they exist",
    )


def test_an_invalid_receiver_stays_out_of_the_config():
    bad = receiver("bad", {"type": "Pigeon"})
    plant = judge_plant(
        listed("SensorNode"), listed("AlertRule"), listed("DetectorModel"), [*SAMPLE_RECEIVERS, bad, PAGER], {"pager-slack": ["url"]}
    )
    verdict = dict((b["metadata"]["name"], v) for b, v in plant.receivers)["bad"]
    assert (verdict.status, verdict.reason, "spec.type" in verdict.message) == ("False", "InvalidSpec", True)
    assert plant.configured_receivers == [*SAMPLE_RECEIVERS, PAGER]


def test_a_rule_matching_no_series_is_refused_with_what_exists():
    rules = copy.deepcopy(listed("AlertRule"))
    rules[1]["spec"]["selector"] = {"sensor": "temprature"}
    verdict, matched = verdicts(listed("SensorNode"), rules, listed("DetectorModel"))[rules[1]["metadata"]["name"]]
    assert (verdict.status, verdict.reason, matched) == ("False", "NoMatchingSeries", 0)
    assert verdict.message.startswith(
        "in this namespace: spec.selector matches no sensor of any SensorNode: nothing has sensor 'temprature' (sensors: "
    )


def test_an_invalid_rule_says_which_field():
    rules = copy.deepcopy(listed("AlertRule"))
    rules[0]["spec"]["condition"]["type"] = "Magic"
    verdict, matched = verdicts(listed("SensorNode"), rules, listed("DetectorModel"))[rules[0]["metadata"]["name"]]
    assert (verdict.status, verdict.reason, matched) == ("False", "InvalidSpec", 0)
    assert "spec.condition.type" in verdict.message and '"Magic"' in verdict.message


def test_an_invalid_node_stays_out_with_its_message():
    nodes = copy.deepcopy(listed("SensorNode"))
    nodes[0]["spec"]["sensors"][0]["type"] = "smell"
    plant = judge_plant(nodes, listed("AlertRule"), listed("DetectorModel"), SAMPLE_RECEIVERS)
    (body, message), *rest = plant.nodes
    assert body is nodes[0] and isinstance(message, str) and "spec.sensors[0].type" in message
    assert plant.valid_nodes == nodes[1:] and all(not isinstance(p, str) for _, p in rest)


def test_objects_being_deleted_have_left_the_plant():
    nodes = [{**n, "metadata": {**n["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}} for n in listed("SensorNode")]
    detectors = [{**d, "metadata": {**d["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}} for d in listed("DetectorModel")]
    plant = judge_plant(nodes, listed("AlertRule"), detectors, SAMPLE_RECEIVERS)
    assert plant.nodes == [] and plant.valid_nodes == [] and plant.detectors == []
    assert {name: v.reason for name, (v, _) in verdicts(nodes, listed("AlertRule"), detectors).items()} == {
        "machine-overtemperature": "NoMatchingSeries",
        "vibration-high": "NoMatchingSeries",
        "node-silent": "NoMatchingSeries",
        "bearing-anomaly": "DetectorNotFound",
    }


MODEL = b"\x08\x07onnx-bytes"
DIGEST = hashlib.sha256(MODEL).hexdigest()


def configmap(**keys: bytes) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bearing-wear-model"},
        "binaryData": {k: base64.b64encode(v).decode() for k, v in keys.items()},
    }


def test_a_configmap_source_is_verified_by_its_sha256():
    source = {"configMap": {"name": "bearing-wear-model", "key": "model.onnx"}, "sha256": DIGEST}
    assert source_verdict(source, configmap(**{"model.onnx": MODEL})) == SourceVerdict(
        "True", "SourceVerified", f"ConfigMap bearing-wear-model/model.onnx, {len(MODEL)} bytes, sha256 {DIGEST[:12]}", DIGEST
    )


def test_a_configmap_source_without_sha256_reports_the_digest_it_found():
    source = {"configMap": {"name": "bearing-wear-model"}}  # key defaults to model.onnx
    verdict = source_verdict(source, configmap(**{"model.onnx": MODEL}))
    assert (verdict.status, verdict.reason, verdict.sha256) == ("True", "SourceVerified", DIGEST)


def test_a_text_key_is_hashed_as_utf8():
    source = {"configMap": {"name": "m", "key": "model.onnx"}}
    cm = {"metadata": {"name": "m"}, "data": {"model.onnx": "plain"}}
    assert source_verdict(source, cm).sha256 == hashlib.sha256(b"plain").hexdigest()


def test_a_wrong_model_is_a_checksum_mismatch_naming_both():
    source = {"configMap": {"name": "bearing-wear-model", "key": "model.onnx"}, "sha256": "b" * 64}
    assert source_verdict(source, configmap(**{"model.onnx": MODEL})) == SourceVerdict(
        "False", "ChecksumMismatch", f"the model's sha256 is {DIGEST}, spec.source.sha256 says {'b' * 64}", DIGEST
    )


def test_a_missing_configmap_or_key_is_source_not_found():
    source = {"configMap": {"name": "bearing-wear-model", "key": "model.onnx"}}
    assert source_verdict(source, None) == SourceVerdict("False", "SourceNotFound", "ConfigMap bearing-wear-model does not exist", None)
    assert source_verdict(source, configmap(**{"other.onnx": MODEL})) == SourceVerdict(
        "False", "SourceNotFound", "ConfigMap bearing-wear-model has no key 'model.onnx'", None
    )


def test_url_and_pvc_sources_are_left_to_the_pods():
    url = source_verdict({"url": {"url": "https://models.example/m.onnx", "sha256": "a" * 64}}, None)
    assert (url.status, url.reason, url.sha256) == ("True", "NotVerifiedByOperator", "a" * 64)
    pvc = source_verdict({"pvc": {"claimName": "models", "path": "m.onnx"}}, None)
    assert (pvc.status, pvc.reason, pvc.sha256) == ("True", "NotVerifiedByOperator", None)
    assert source_verdict({"pvc": {"claimName": "models", "path": "m.onnx"}, "sha256": "c" * 64}, None).sha256 == "c" * 64
