"""What the operator says, without a cluster: one bounded line per reconcile that wrote something (a thousand
nodes are one line), nothing for one that wrote nothing, a warning per refused object while they are few, and
a failing render said once, not at every retry."""

from __future__ import annotations

import json
import logging
import time

from kubernetes.client.rest import ApiException

from plantwatch_operator.coalesce import Coalescer
from plantwatch_operator.talk import Refusal, Report, Written, failure, reconcile_lines, startup_line


def ready(name: str) -> list[dict[str, str]]:
    return [{"type": "Online", "status": "Unknown", "reason": "NoData"}, {"type": "Ready", "status": "True", "reason": "Rendered"}]


def test_a_reconcile_line_names_the_objects_applied_and_the_statuses_written():
    report = Report("plant-a")
    report.objects += [
        Written("Deployment", "plantwatch-gateway", "updated"),
        Written("ConfigMap", "plantwatch-plant", "updated"),
        Written("HorizontalPodAutoscaler", "plantwatch-detector-bearing", "created"),
    ]
    for name in ("press-01", "press-02"):
        report.status("SensorNode", name, ready(name))
    report.status("AlertRule", "hot", [{"type": "Accepted", "status": "False", "reason": "UnknownReceiver"}])
    info, warnings = reconcile_lines(report)
    assert info == (
        "plant-a: applied 3 objects (Deployment/plantwatch-gateway updated, ConfigMap/plantwatch-plant updated, "
        "HorizontalPodAutoscaler/plantwatch-detector-bearing created); "
        "2 SensorNodes Ready (press-01, press-02), 1 AlertRule Accepted=False UnknownReceiver (hot)"
    )
    assert warnings == []


def test_a_reconcile_that_wrote_nothing_says_nothing():
    assert reconcile_lines(Report("plant-a")) == (None, [])


def test_a_thousand_nodes_coming_up_are_one_line_of_bounded_length():
    report = Report("plant-a")
    report.objects += [Written("ConfigMap", f"plantwatch-plant-nodes-{i}", "created") for i in range(16)]
    for i in range(1000):
        report.status("SensorNode", f"node-{i:04d}", ready(f"node-{i:04d}"))
    info, warnings = reconcile_lines(report)
    assert "\n" not in info and len(info) < 600, info
    assert "1000 SensorNodes Ready (node-0000, node-0001, node-0002 and 997 more)" in info
    assert "applied 16 objects (" in info and "8 ConfigMaps created" in info
    assert warnings == []


def test_a_few_refused_objects_are_a_warning_each_naming_the_reason_and_why():
    report = Report("plant-a")
    report.refusals.append(Refusal("AlertRule", "hot", "Accepted", "False", "UnknownReceiver", "no AlertReceiver 'pager'"))
    report.refusals.append(Refusal("DetectorModel", "bearing", "ModelValid", "False", "SourceNotFound", "ConfigMap 'm' not found"))
    report.refusals.append(Refusal("AlertRule", "hot", "PrometheusRule", "False", "PrometheusOperatorAbsent", "evaluated either way"))
    _, warnings = reconcile_lines(report)
    assert warnings == [
        "plant-a: AlertRule hot Accepted=False UnknownReceiver: no AlertReceiver 'pager'",
        "plant-a: DetectorModel bearing ModelValid=False SourceNotFound: ConfigMap 'm' not found",
    ]


def test_a_thousand_refused_nodes_are_one_warning():
    report = Report("plant-a")
    report.refusals += [Refusal("SensorNode", f"node-{i:04d}", "Ready", "False", "InvalidSpec", f"node-{i:04d}: bad") for i in range(1000)]
    _, warnings = reconcile_lines(report)
    assert warnings == [
        "plant-a: 1000 SensorNodes Ready=False InvalidSpec (node-0000, node-0001, node-0002 and 997 more); node-0000: node-0000: bad"
    ]


def test_the_startup_line_names_version_namespaces_mode_ports_and_settings():
    line = startup_line("0.1.0", ["plant-a", "plant-b"], "plantwatch-operator", "60", 8081, 8080, "plant-a/op", 30, {"image": "x:1"})
    assert line == (
        "plantwatch operator 0.1.0: watching namespaces plant-a, plant-b; peering 'plantwatch-operator' (standby takes over after "
        "60s); metrics and /readyz on :8081; liveness on :8080/healthz; namespace claim as 'plant-a/op' (Lease, 30s); image x:1"
    )
    assert "watching namespaces all; standalone" in startup_line("0.1.0", [], None, "60", None, None, "me", 60, {})


def test_a_forbidden_write_names_what_rbac_refused_and_where_to_grant_it():
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"message": 'deployments.apps "plantwatch-gateway" is forbidden: User "op" cannot patch resource'})
    line, refused = failure("plant-a", exc, 5)
    assert refused
    assert line.startswith('plant-a: the API server refused a request (403 Forbidden): deployments.apps "plantwatch-gateway"')
    assert "cannot patch" in line and "Role or ClusterRole" in line and "retrying every 5s" in line


def test_a_failing_render_is_said_once_not_at_every_retry_and_its_recovery_once(caplog):
    runs: list[str] = []

    def work(key: str) -> None:
        runs.append(key)
        if len(runs) <= 5:
            exc = ApiException(status=403, reason="Forbidden")
            exc.body = json.dumps({"message": "configmaps is forbidden"})
            raise exc

    caplog.set_level(logging.INFO, logger="plantwatch_operator")
    c = Coalescer(work, quiet=0.01, longest=0.02, retry=0.01)
    c.mark("plant-a")
    deadline = time.monotonic() + 10
    while len(runs) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    while c.pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "plantwatch_operator.coalesce"]
    assert len(runs) == 6
    assert said == [
        (
            "WARNING",
            "plant-a: the API server refused a request (403 Forbidden): configmaps is forbidden; retrying every 0.01s. "
            "The operator's RBAC does not allow it: grant it in its Role or ClusterRole (operator/deploy/, or the chart's)",
        ),
        ("INFO", "plant-a: rendered again after the failure above"),
    ]
