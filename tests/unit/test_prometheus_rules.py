"""The chart's platform-health alerts (charts/plantwatch/files/prometheus-rules.yaml) in the real promtool:
`check rules` accepts them and `test rules` shows each alert firing on the series that should fire it
and staying quiet beside it (a healthy namespace, or still inside its `for`)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT
from tests.unit.test_chart import CHART, helm

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = ROOT / "charts" / "plantwatch" / "files" / "prometheus-rules.yaml"
DOC = ROOT / "docs" / "monitoring.md"


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def series(name: str, values: str, **labels: str) -> dict:
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}", "values": values}


def case(alert: str, inputs: list[dict], eval_time: str, firing: list[tuple[dict, str]], quiet_at: str) -> dict:
    """One promtool test: at `eval_time` exactly `firing` fire, each (its labels beside alertname and
    severity, its summary as the user reads it), and at `quiet_at` (inside the alert's `for`) nothing does."""
    rule = next(a for a in alerts() if a["alert"] == alert)
    fixed = {k: rule["annotations"][k] for k in ("description", "runbook_url")}
    expected = [
        {"exp_labels": {**f, "severity": rule["labels"]["severity"]}, "exp_annotations": {**fixed, "summary": s}} for f, s in firing
    ]
    return {
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [
            {"eval_time": eval_time, "alertname": alert, "exp_alerts": expected},
            {"eval_time": quiet_at, "alertname": alert, "exp_alerts": []},
        ],
    }


GW = {"job": "gateway", "pod": "gw-0"}
CASES = {
    "PlantwatchGatewayDown": case(
        "PlantwatchGatewayDown",
        [series("up", "0x10", namespace="p", **GW), series("up", "1x10", namespace="q", **GW)],
        "3m",
        [({"namespace": "p", **GW}, "Plantwatch gateway p/gw-0 cannot be scraped")],
        "1m",
    ),
    "PlantwatchDeadLettersRising": case(
        "PlantwatchDeadLettersRising",
        [
            *(series("plantwatch_messages_total", "0+100x40", namespace=ns, result="accepted", **GW) for ns in ("p", "q")),
            series("plantwatch_messages_total", "0+10x40", namespace="p", result="rejected", **GW),  # 9%
            series("plantwatch_messages_total", "0+2x40", namespace="q", result="partial", **GW),  # 2%
        ],
        "25m",
        [({"namespace": "p"}, "9.091% of the messages in p are dead-lettered")],
        "5m",
    ),
    "PlantwatchSpoolFilling": case(
        "PlantwatchSpoolFilling",
        [
            series("plantwatch_store_spool", "0+1000x40", namespace="p", unit="bytes", **GW),
            series("plantwatch_store_spool", "5000x40", namespace="q", unit="bytes", **GW),  # full but not growing
        ],
        "25m",
        [({"namespace": "p", "unit": "bytes", **GW}, "The InfluxDB spool of p holds 24.41kiB and grows")],
        "8m",
    ),
    "PlantwatchNodeSilent": case(
        "PlantwatchNodeSilent",
        [
            series("plantwatch_node_last_seen_timestamp_seconds", "0x20", namespace="p", node="a", **GW),
            series("plantwatch_node_last_seen_timestamp_seconds", "0+60x20", namespace="p", node="b", **GW),  # reports every minute
        ],
        "12m",
        [({"namespace": "p", "node": "a", **GW}, "Sensor node p/a has been silent for 12m 0s")],
        "8m",
    ),
    "PlantwatchInferenceUnavailable": case(
        "PlantwatchInferenceUnavailable",
        [
            series("up", "0x10", namespace="p", job="inference", pod="m-0"),
            series("up", "1x10", namespace="r", job="inference", pod="m-0"),
            series("plantwatch_anomaly_scores_skipped_total", "0+5x10", namespace="q", detector="d", **GW),
            series("plantwatch_anomaly_scores_skipped_total", "3x10", namespace="r", detector="d", **GW),  # skipped long ago
        ],
        "7m",
        [
            ({"namespace": "p", "job": "inference", "pod": "m-0"}, "Anomaly detection in p is unavailable"),
            ({"namespace": "q"}, "Anomaly detection in q is unavailable"),
        ],
        "3m",
    ),
    "PlantwatchInferenceLatencyHigh": case(
        "PlantwatchInferenceLatencyHigh",
        [
            *(
                series("plantwatch_inference_seconds_bucket", v, namespace="p", model="slow", le=le, job="inference", pod="m-0")
                for le, v in (("0.1", "0x30"), ("0.5", "0+10x30"), ("+Inf", "0+10x30"))
            ),
            *(
                series("plantwatch_inference_seconds_bucket", "0+10x30", namespace="p", model="fast", le=le, job="inference", pod="m-0")
                for le in ("0.1", "0.5", "+Inf")
            ),
        ],
        "20m",
        [({"namespace": "p", "model": "slow"}, "Model slow in p takes 496ms at the 99th percentile")],
        "8m",
    ),
    "PlantwatchOperatorDown": case(
        "PlantwatchOperatorDown",
        [series("up", "0x10", namespace="p", job="operator", pod="op-0"), series("up", "1x10", namespace="q", job="operator", pod="op-0")],
        "7m",
        [({"namespace": "p", "job": "operator", "pod": "op-0"}, "The Plantwatch operator in p cannot be scraped")],
        "3m",
    ),
    "PlantwatchBrokerExporterDown": case(
        "PlantwatchBrokerExporterDown",
        [
            *(
                series("plantwatch_broker_up", v, namespace=ns, job="broker-exporter", pod="bx-0")
                for ns, v in (("p", "0x10"), ("q", "1x10"))
            ),
            series("up", "0x10", namespace="r", job="broker-exporter", pod="bx-0"),
        ],
        "7m",
        [({"namespace": ns, "job": "broker-exporter", "pod": "bx-0"}, f"The broker exporter of {ns} sees no broker") for ns in ("p", "r")],
        "3m",
    ),
    "PlantwatchBrokerMessagesDropped": case(
        "PlantwatchBrokerMessagesDropped",
        [
            series("plantwatch_broker_publish_messages_dropped_total", "0+3x10", namespace="p", job="broker-exporter", pod="bx-0"),
            series("plantwatch_broker_publish_messages_dropped_total", "7x10", namespace="q", job="broker-exporter", pod="bx-0"),
        ],
        "7m",
        [({"namespace": "p"}, "The broker of p dropped 15 messages in 5 minutes")],
        "3m",
    ),
    "PlantwatchBrokerSaturated": case(
        "PlantwatchBrokerSaturated",
        [
            series("plantwatch_broker_stored_messages", "2000+10x40", namespace="p", job="broker-exporter", pod="bx-0"),
            series("plantwatch_broker_stored_messages", "5000x40", namespace="q", job="broker-exporter", pod="bx-0"),  # steady
            series("plantwatch_broker_stored_messages", "0+10x40", namespace="r", job="broker-exporter", pod="bx-0"),  # few
        ],
        "35m",
        [({"namespace": "p", "job": "broker-exporter", "pod": "bx-0"}, "The broker of p holds 2.35k queued messages and more keep coming")],
        "10m",
    ),
}


def test_promtool_checks_the_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_every_alert_has_a_case_for_severity_summary_and_a_documented_runbook():
    assert set(CASES) == {a["alert"] for a in alerts()}
    doc = DOC.read_text()
    for a in alerts():
        assert a.get("for") and a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        assert {"summary", "description", "runbook_url"} <= set(a["annotations"]), a["alert"]
        anchor = a["annotations"]["runbook_url"].split("docs/monitoring.md#", 1)[1]
        assert anchor == a["alert"].lower() and re.search(rf"^### {a['alert']}$", doc, re.M), a["alert"]


@pytest.mark.parametrize("alert", sorted(CASES))
def test_promtool_fires_each_alert_on_its_series_only(alert, tmp_path):
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [CASES[alert]]}))
    result = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def monitoring_objects(*args: str) -> list[dict]:
    out = helm("template", "line1", str(CHART), "-n", "plant-a", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["apiVersion"].startswith("monitoring.coreos.com/")]


def test_the_chart_renders_the_rules_and_a_service_monitor_per_component_where_prometheus_operator_is():
    labels = ("--set", "monitoring.serviceMonitor.labels.release=kps", "--set", "monitoring.rules.labels.role=alert-rules")
    docs = monitoring_objects("--api-versions", "monitoring.coreos.com/v1", *labels)
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text()) and rule["metadata"]["labels"]["role"] == "alert-rules"
    monitors = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"gateway", "inference", "operator", "broker-exporter"}
    for component, m in monitors.items():
        assert m["metadata"]["labels"]["release"] == "kps" and m["spec"]["jobLabel"] == "app.kubernetes.io/component"
        assert m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        assert m["spec"]["namespaceSelector"] == {"matchNames": ["plant-a"]}
    # each monitor selects a Service and names its port: the operator's and the exporter's from this chart,
    # the gateway's as the operator renders it (its golden rendering)
    services = [
        d for d in yaml.safe_load_all(helm("template", "line1", str(CHART), "-n", "plant-a").stdout) if d and d["kind"] == "Service"
    ]
    ports = {s["metadata"]["labels"]["app.kubernetes.io/component"]: {p["name"] for p in s["spec"]["ports"]} for s in services}
    assert {c: [e["port"] for e in monitors[c]["spec"]["endpoints"]] for c in ("operator", "broker-exporter")} == {
        "operator": ["metrics"],
        "broker-exporter": ["metrics"],
    }
    assert "metrics" in ports["operator"] and "metrics" in ports["broker-exporter"]
    gateway = next(
        d for d in yaml.safe_load_all((ROOT / "tests" / "unit" / "golden" / "ingestion.yaml").read_text()) if d["kind"] == "Service"
    )
    assert monitors["gateway"]["spec"]["selector"]["matchLabels"].items() <= gateway["metadata"]["labels"].items()
    assert [e["port"] for e in monitors["gateway"]["spec"]["endpoints"]] == [p["name"] for p in gateway["spec"]["ports"]] == ["http"]


def test_the_chart_renders_no_monitoring_objects_without_the_crds_or_when_disabled():
    assert monitoring_objects() == []
    assert monitoring_objects("--api-versions", "monitoring.coreos.com/v1", "--set", "monitoring.enabled=false") == []


def test_the_values_schema_refuses_an_unknown_monitoring_key():
    result = helm("template", "x", str(CHART), "--set", "monitoring.serviceMonitors.labels.a=b", check=False)
    assert result.returncode != 0 and "serviceMonitors" in result.stderr
