"""What `plantwatch operator` prints at its default log level, on a real control plane: a start-up line with
its version and namespace, one line per reconcile that wrote something naming what, a warning naming a
refused resource and why, one line for one rule changed, and nothing at all while nothing changes."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from plantwatch.mqtt.broker import free_port
from tests.e2e.conftest import sensor_node
from tests.e2e.conftest import wait_for as poll
from tests.e2e.test_operator import crds  # noqa: F401  (fixture)
from tests.support.process import terminate

PLANT = (
    sensor_node("press-01")
    + "---"
    + sensor_node("press-02")
    + """---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: press-hot}
spec:
  selector: {sensorType: temperature}
  condition: {type: Threshold, threshold: {warning: "70", critical: "80"}}
  receivers: [console]
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: press-paged}
spec:
  selector: {sensorType: temperature}
  condition: {type: Threshold, threshold: {warning: "75", critical: "85"}}
  receivers: [pager]
"""
)
#: Seconds of a settled plant watched for lines: several of each periodic recheck (set to 1 s below).
IDLE = 5.0


def operator_lines(log: Path) -> list[str]:
    """The lines the operator's own loggers wrote (not kopf's, not a traceback's continuation)."""
    return [line for line in log.read_text(errors="replace").splitlines() if " plantwatch_operator." in line]


def wait_for(log: Path, check, what: str):
    """Poll as conftest's wait_for does; a timeout also shows the operator's log tail."""
    try:
        return poll(check, what)
    except BaseException as exc:
        raise AssertionError(f"{exc}\n--- operator log (tail) ---\n{log.read_text(errors='replace')[-4000:]}") from None


def pending(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return float(re.search(r"^plantwatch_operator_renders_pending (\S+)$", text, re.M).group(1))


def test_the_operator_says_what_it_did_once_and_nothing_while_idle(cluster, crds, namespace, tmp_path):  # noqa: F811
    log, metrics_port = tmp_path / "operator.log", free_port()
    env = {
        **os.environ,
        "KUBECONFIG": cluster.kubeconfig,
        # Every periodic recheck runs several times within IDLE: none of them may say anything.
        "PLANTWATCH_CREDENTIALS_CHECK_INTERVAL": "1",
        "PLANTWATCH_RECEIVER_CHECK_INTERVAL": "1",
        "PLANTWATCH_DETECTOR_CHECK_INTERVAL": "1",
    }
    with open(log, "wb") as out:  # no --log-level: what a user sees by default
        cmd = [sys.executable, "-m", "plantwatch.cli", "operator", "-n", namespace, "--metrics-port", str(metrics_port)]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        version = importlib.metadata.version("plantwatch")
        [startup] = wait_for(log, lambda: [line for line in operator_lines(log) if "plantwatch operator " in line], "the start-up line")
        assert f" INFO plantwatch_operator.main: plantwatch operator {version}: watching namespaces {namespace}; standalone" in startup
        assert f"metrics and /readyz on :{metrics_port}" in startup and "status writes at most 50/s" in startup

        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=PLANT)
        refused = f"{namespace}: AlertRule press-paged Accepted=False UnknownReceiver: "
        wait_for(log, lambda: any(refused in line for line in operator_lines(log)), "the warning on the refused rule")
        wait_for(log, lambda: pending(metrics_port) == 0, "the plant rendered")
        said = operator_lines(log)
        [warning] = [line for line in said if refused in line]
        assert " WARNING " in warning and "pager" in warning, warning
        assert not [line for line in said if "PrometheusRule=" in line], "a warning about what needs no fix"
        created = "\n".join(line for line in said if f" INFO plantwatch_operator.handlers: {namespace}: applied " in line)
        for obj in ("ConfigMap/plantwatch-plant created", "Deployment/plantwatch-gateway created", "Service/plantwatch-gateway created"):
            assert obj in created, created
        assert "2 SensorNodes Ready (press-01, press-02)" in created, created
        assert not [line for line in log.read_text().splitlines() if " INFO kopf" in line], "kopf's chatter at the default level"

        before = operator_lines(log)
        time.sleep(IDLE)
        assert operator_lines(log) == before, "lines while nothing changed"

        threshold = '{"spec": {"condition": {"threshold": {"warning": "65"}}}}'
        cluster.kubectl("patch", "alertrule", "press-hot", "-n", namespace, "--type", "merge", "-p", threshold)
        wait_for(log, lambda: len(operator_lines(log)) > len(before), "a line for the changed rule")
        wait_for(log, lambda: pending(metrics_port) == 0, "the change rendered")
        time.sleep(IDLE)  # and nothing more after it
        [changed] = operator_lines(log)[len(before) :]
        assert f"{namespace}: applied " in changed and "ConfigMap/plantwatch-plant updated" in changed, changed
        assert "Deployment/plantwatch-gateway updated" in changed and "1 AlertRule Accepted (press-hot)" in changed, changed
        assert "press-paged" not in changed and "SensorNode" not in changed, changed
    finally:
        terminate(proc, 15)
