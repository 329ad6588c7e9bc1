"""The broker exporter's identity (the operator's ACL) and its place in the chart."""

from __future__ import annotations

import pytest
import yaml

from plantwatch.mqtt import acl
from tests.unit.test_chart import CHART, helm
from tests.unit.test_mqtt_acl import GATEWAY, PASSWORD, node

EXPORTER = ("plantwatch-broker-exporter", "e" * 24)


def test_the_exporter_reads_sys_and_what_the_gateway_reads_and_publishes_nothing():
    nodes = [node("a", "sensors/hall-1/a/data"), node("b", "pi/line-2/b/data")]
    auth = acl.render_broker_auth(nodes, {"a": ("a", PASSWORD), "b": ("b", PASSWORD)}, GATEWAY, exporter=EXPORTER)
    [exporter] = [i for i in auth.identities if i.username == EXPORTER[0]]
    assert exporter.publish == ()
    assert exporter.read == ("$SYS/broker/#", "pi/#", "sensors/#")
    assert "\n# the broker exporter\nuser plantwatch-broker-exporter\ntopic read $SYS/broker/#\n" in auth.acl_file
    assert acl.password_matches(acl.parse_password_file(auth.password_file)[EXPORTER[0]], EXPORTER[1])


def test_a_node_cannot_take_the_exporters_name_and_the_exporter_cannot_take_the_gateways():
    auth = acl.render_broker_auth([node("a", "sensors/a/data")], {"a": (EXPORTER[0], PASSWORD)}, GATEWAY, exporter=EXPORTER)
    assert auth.refused == {"a": "its username is the broker exporter's"}
    with pytest.raises(acl.AclError, match="the broker exporter's MQTT username .* is the gateway's"):
        acl.render_broker_auth([], {}, GATEWAY, exporter=(GATEWAY[0], "f" * 24))
    with pytest.raises(acl.AclError, match="the broker exporter's MQTT password has 5 characters"):
        acl.render_broker_auth([], {}, GATEWAY, exporter=(EXPORTER[0], "short"))


def render(*sets: str) -> list[dict]:
    args = [a for s in sets for a in ("--set", s)]
    return [d for d in yaml.safe_load_all(helm("template", "line1", str(CHART), "-n", "plant-a", *args).stdout) if d]


def test_the_chart_runs_the_exporter_beside_the_broker_with_a_metrics_port_and_can_switch_it_off():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render("broker.exporter.topicPatterns={a/+/data,pi/#=rpi-json}")}
    deploy = objects[("Deployment", "line1-broker-exporter")]
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["serve", "broker-exporter"]
    assert "--broker=mqtts://line1-broker.plant-a.svc:8883" in args and "--broker-username=plantwatch-broker-exporter" in args
    assert args[-2:] == ["--topic-pattern=a/+/data", "--topic-pattern=pi/#=rpi-json"]
    service = objects[("Service", "line1-broker-exporter")]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "broker-exporter"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9234, "targetPort": "metrics"}]
    policy = objects[("NetworkPolicy", "line1-broker-exporter")]["spec"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9234}]}]
    assert policy["egress"][1]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "broker"
    off = render("broker.exporter.enabled=false")
    assert not [o for o in off if o["metadata"]["name"] == "line1-broker-exporter"]


def test_the_values_schema_refuses_a_sys_pattern():
    result = helm("template", "x", str(CHART), "--set", "broker.exporter.topicPatterns={$SYS/#}", check=False)
    assert result.returncode != 0 and "topicPatterns/0" in result.stderr
