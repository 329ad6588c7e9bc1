"""The status the operator writes, without a cluster: the conditions and printer-column fields of
each kind, what it leaves to the gateway and the inference pods, the Events a user sees, and no
write at all when the status already says so."""

from __future__ import annotations

from plantwatch_operator.status import (
    Announcement,
    detector_status,
    node_status,
    owns_condition,
    rule_status,
)
from plantwatch_operator.verdicts import SourceVerdict, Verdict

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
ABSENT = Verdict("False", "PrometheusOperatorAbsent", "the cluster has no CRD prometheusrules.monitoring.coreos.com")
NOT_ACCEPTED = Verdict("False", "NotAccepted", "only Accepted rules are rendered")


def body(kind: str, status: dict | None = None, generation: int = 3, managed: list | None = None, spec: dict | None = None) -> dict:
    meta = {"name": "x", "namespace": "plant-a", "generation": generation, "managedFields": managed or []}
    obj = {"apiVersion": "plantwatch.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec or {}}
    return {**obj, "status": status} if status else obj


def written(obj: dict, status: dict) -> dict:
    """The object after the API server merged the operator's apply into its status."""
    old = obj.get("status", {})
    types = {c["type"] for c in status["conditions"]}
    conditions = sorted([c for c in old.get("conditions", []) if c["type"] not in types] + status["conditions"], key=lambda c: c["type"])
    return {**obj, "status": {**old, **status, "conditions": conditions}}


def test_a_new_node_is_ready_and_online_unknown_until_the_gateway_reports():
    update = node_status(body("SensorNode"), object(), "abc123", T0)
    assert update.status == {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Online",
                "status": "Unknown",
                "reason": "NoData",
                "message": "no data-plane report yet",
                "observedGeneration": 3,
                "lastTransitionTime": T0,
            },
            {
                "type": "Ready",
                "status": "True",
                "reason": "Rendered",
                "message": "in the gateway config abc123",
                "observedGeneration": 3,
                "lastTransitionTime": T0,
            },
        ],
    }
    assert update.events == (Announcement("Normal", "Rendered", "Ready=True: in the gateway config abc123"),)


def test_nothing_is_written_when_the_status_already_says_so():
    node = body("SensorNode")
    node = written(node, node_status(node, object(), "abc123", T0).status)
    assert node_status(node, object(), "abc123", T1) is None
    assert node_status(node, object(), "def456", T1).status["conditions"][1]["lastTransitionTime"] == T0  # still True: no transition


def test_the_gateways_online_condition_is_left_to_it():
    online = {"type": "Online", "status": "True", "reason": "Reporting", "message": "12 readings/min", "lastTransitionTime": T0}
    node = body("SensorNode", status={"conditions": [online]})
    update = node_status(node, object(), "abc123", T1)
    assert [c["type"] for c in update.status["conditions"]] == ["Ready"]


def test_an_invalid_node_is_not_ready_and_says_why():
    update = node_status(body("SensorNode"), "SensorNode x: spec.sensors[0].type: Unsupported value", "abc123", T0)
    [ready] = update.status["conditions"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "InvalidSpec",
        "SensorNode x: spec.sensors[0].type: Unsupported value",
    )
    assert update.events == (Announcement("Warning", "InvalidSpec", "Ready=False: SensorNode x: spec.sensors[0].type: Unsupported value"),)


def test_a_rule_reports_its_verdict_and_matched_series():
    refused = Verdict("False", "UnknownReceiver", "spec.receivers: unknown 'pager' (known: console)")
    update = rule_status(body("AlertRule"), refused, 4, T0, NOT_ACCEPTED)
    assert update.status["matchedSeries"] == 4 and update.status["observedGeneration"] == 3
    assert [(c["type"], c["status"], c["reason"]) for c in update.status["conditions"]] == [
        ("Accepted", "False", "UnknownReceiver"),
        ("PrometheusRule", "False", "NotAccepted"),
    ]
    assert update.events == (
        Announcement("Warning", "UnknownReceiver", "Accepted=False: spec.receivers: unknown 'pager' (known: console)"),
        Announcement("Warning", "NotAccepted", "PrometheusRule=False: only Accepted rules are rendered"),
    )


def test_a_rule_rendered_for_prometheus_once_its_crd_appears_says_so_alone():
    loaded = Verdict("True", "Loaded", "the rule is part of the gateway's config")
    rule = written(body("AlertRule"), rule_status(body("AlertRule"), loaded, 4, T0, ABSENT).status)
    rendered = Verdict("True", "Rendered", "group x of PrometheusRule plantwatch-plant-a-rules")
    update = rule_status(rule, loaded, 4, T1, rendered)
    conditions = {c["type"]: c for c in update.status["conditions"]}
    assert conditions["PrometheusRule"]["reason"] == "Rendered" and conditions["PrometheusRule"]["lastTransitionTime"] == T1
    assert conditions["Accepted"]["lastTransitionTime"] == T0
    assert update.events == (Announcement("Normal", "Rendered", "PrometheusRule=True: group x of PrometheusRule plantwatch-plant-a-rules"),)
    assert rule_status(written(rule, update.status), loaded, 4, T1, rendered) is None


def test_a_new_matched_series_count_is_written_without_an_event():
    loaded = Verdict("True", "Loaded", "the rule is part of the gateway's config")
    rule = written(body("AlertRule"), rule_status(body("AlertRule"), loaded, 4, T0, ABSENT).status)
    assert rule_status(rule, loaded, 4, T1, ABSENT) is None
    update = rule_status(rule, loaded, 5, T1, ABSENT)
    assert update.status["matchedSeries"] == 5 and update.events == ()


def test_a_new_generation_is_written():
    loaded = Verdict("True", "Loaded", "the rule is part of the gateway's config")
    rule = written(body("AlertRule"), rule_status(body("AlertRule"), loaded, 4, T0, ABSENT).status)
    rule["metadata"]["generation"] = 4
    assert rule_status(rule, loaded, 4, T1, ABSENT).status["observedGeneration"] == 4


def managed(manager: str, *fields: str) -> dict:
    """A managedFields entry in which `manager` owns these fields of the ModelValid condition."""
    condition = {".": {}, **{f"f:{f}": {} for f in fields}}
    return {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": "plantwatch.io/v1alpha1",
        "fieldsType": "FieldsV1",
        "subresource": "status",
        "fieldsV1": {"f:status": {"f:conditions": {'k:{"type":"ModelValid"}': condition}}},
    }


def test_who_owns_a_condition_is_who_wrote_its_reason():
    pod = managed("plantwatch-inference", "type", "status", "reason", "message")
    assert owns_condition(body("DetectorModel", managed=[pod]), "plantwatch-inference", "ModelValid")
    assert not owns_condition(body("DetectorModel", managed=[pod]), "plantwatch-inference", "Available")
    assert not owns_condition(body("DetectorModel", managed=[pod]), "plantwatch-operator", "ModelValid")
    # after the operator forced SourceNotFound: the pod still co-owns the entry (its type), not the reason
    co_owner = managed("plantwatch-inference", "type")
    assert not owns_condition(
        body("DetectorModel", managed=[co_owner, managed("plantwatch-operator", "type", "reason")]), "plantwatch-inference", "ModelValid"
    )
    assert not owns_condition(body("DetectorModel"), "plantwatch-inference", "ModelValid")


SPEC = {"source": {"configMap": {"name": "m"}}, "executionProvider": "cuda", "autoscaling": {"minReplicas": 2, "maxReplicas": 3}}
VERIFIED = SourceVerdict("True", "SourceVerified", "ConfigMap m/model.onnx, 9 bytes, sha256 0123456789ab", "0123456789ab" + "0" * 52)
MISSING = SourceVerdict("False", "SourceNotFound", "ConfigMap m does not exist", None)
SCORING = Verdict("True", "NodesMatched", "scores 1 SensorNode(s): press")


def test_a_new_detector_reports_its_source_and_its_replicas():
    update = detector_status(body("DetectorModel", spec=SPEC), VERIFIED, SCORING, {}, T0)
    conditions = {c["type"]: (c["status"], c["reason"], c["message"]) for c in update.status["conditions"]}
    assert conditions == {
        "Available": ("False", "ReplicasNotReady", "0/2 inference pods ready"),
        "ModelValid": VERIFIED[:3],
        "Scoring": tuple(SCORING),
    }
    assert {k: v for k, v in update.status.items() if k != "conditions"} == {
        "observedGeneration": 3,
        "replicas": 0,
        "activeProvider": "cuda",
        "modelSha256": VERIFIED.sha256,
    }
    assert update.events == (
        Announcement("Normal", "SourceVerified", f"ModelValid=True: {VERIFIED.message}"),
        Announcement("Normal", "NodesMatched", f"Scoring=True: {SCORING.message}"),
    )  # Available is not announced


def test_a_detector_is_available_with_its_minimum_replicas_ready():
    update = detector_status(body("DetectorModel", spec=SPEC), VERIFIED, SCORING, {"status": {"readyReplicas": 2}}, T0)
    available = next(c for c in update.status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"], update.status["replicas"]) == ("True", "MinimumReplicasReady", 2)


def test_a_detector_whose_status_already_says_so_is_not_written():
    detector = body("DetectorModel", spec=SPEC)
    detector = written(detector, detector_status(detector, VERIFIED, SCORING, {}, T0).status)
    assert detector_status(detector, VERIFIED, SCORING, {}, T1) is None


def test_once_a_pod_reported_the_operator_leaves_it_model_valid_provider_and_sha256():
    loaded = {"type": "ModelValid", "status": "True", "reason": "ModelLoaded", "message": "served on cpu", "lastTransitionTime": T0}
    detector = body(
        "DetectorModel",
        spec=SPEC,
        managed=[managed("plantwatch-inference", "type", "status", "reason", "message")],
        status={"conditions": [loaded], "activeProvider": "cpu", "modelSha256": "f" * 64},
    )
    update = detector_status(detector, VERIFIED, SCORING, {}, T1)
    assert [c["type"] for c in update.status["conditions"]] == ["Available", "Scoring"]
    assert "activeProvider" not in update.status and "modelSha256" not in update.status
    assert [e.reason for e in update.events] == ["NodesMatched"]  # the operator's own Scoring is still announced


def test_a_detector_that_scores_no_node_is_not_available_however_many_pods_are_ready():
    """Ready pods serving a model whose sensors no node has would look healthy and never score."""
    nothing = Verdict("False", "SensorsNotFound", "spec.features.sensors: no SensorNode has all of temperature, curent")
    detector = body("DetectorModel", spec=SPEC)
    update = detector_status(detector, VERIFIED, nothing, {"status": {"readyReplicas": 2}}, T0)
    conditions = {c["type"]: (c["status"], c["reason"], c["message"]) for c in update.status["conditions"]}
    assert conditions["ModelValid"] == VERIFIED[:3]  # the model file is fine
    assert conditions["Scoring"] == tuple(nothing)
    assert conditions["Available"] == ("False", "NothingToScore", "the model scores no SensorNode (see Scoring); 2/2 inference pods ready")
    assert Announcement("Warning", "SensorsNotFound", f"Scoring=False: {nothing.message}") in update.events

    fixed = written(detector, update.status)
    update = detector_status(fixed, VERIFIED, SCORING, {"status": {"readyReplicas": 2}}, T1)
    available = next(c for c in update.status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"], available["lastTransitionTime"]) == ("True", "MinimumReplicasReady", T1)


def test_a_missing_source_overrides_the_pods_verdict():
    loaded = {"type": "ModelValid", "status": "True", "reason": "ModelLoaded", "message": "served on cpu", "lastTransitionTime": T0}
    detector = body(
        "DetectorModel",
        spec=SPEC,
        managed=[managed("plantwatch-inference", "type", "status", "reason", "message")],
        status={"conditions": [loaded]},
    )
    update = detector_status(detector, MISSING, SCORING, {}, T1)
    model_valid = next(c for c in update.status["conditions"] if c["type"] == "ModelValid")
    assert (model_valid["status"], model_valid["reason"], model_valid["lastTransitionTime"]) == ("False", "SourceNotFound", T1)
    assert "modelSha256" not in update.status and update.status["activeProvider"] == "cuda"
    assert update.events[0] == Announcement("Warning", "SourceNotFound", "ModelValid=False: ConfigMap m does not exist")


def test_a_detector_capped_by_its_gpus_says_so_and_is_available_with_what_they_hold():
    """minReplicas 2 on one GPU: the HPA asks for one pod (autoscale.gpu_bounded_hpa), so one ready pod is Available."""
    why = "maxReplicas 3 capped to 1: 1 nvidia.com/gpu allocatable on matching nodes"
    update = detector_status(body("DetectorModel", spec=SPEC), VERIFIED, SCORING, {"status": {"readyReplicas": 1}}, T0, capped=(1, why))
    available = next(c for c in update.status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"]) == ("True", "MinimumReplicasReady")
    assert available["message"] == f"1/1 inference pods ready; {why}"
