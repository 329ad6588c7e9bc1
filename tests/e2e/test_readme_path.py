"""The README's newcomer path, every command of it run in order against the e2e control plane.

The commands are read from README.md between `<!-- newcomer-path -->` and `<!-- /newcomer-path -->`
and run by bash from the repository's root, with helm and kubectl from .cache/bin and plantwatch from
the venv. kwok runs no container, so what a pod would do is done on this host, as the README says
below the block: the chart's operator Deployment's own args and environment (test_helm.chart_operator),
`helm test`'s pod's command (test_helm.finish_test_pod) and, for `plantwatch alerts list --kube`, a
gateway that Service plantwatch-gateway is pointed at (as test_alerts_kube.py does). Needs root, for
the address that gateway is reached at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

from plantwatch.mqtt.broker import free_port, start_mosquitto
from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.e2e.conftest import wait_for
from tests.e2e.test_alerts_kube import host_address  # noqa: F401  (fixture)
from tests.e2e.test_helm import CHART, chart_operator, finish_test_pod, plant_nodes
from tests.integration.test_delivery import ready
from tests.integration.test_up_durable import press_temperatures

README = ROOT / "README.md"
NAMESPACE = RELEASE = "plant-a"
#: What kube-prometheus-stack would have installed: stand-ins of the Prometheus Operator's CRDs the chart renders.
MONITORING_CRDS = {
    "prometheusrules.monitoring.coreos.com": Path(__file__).parent / "prometheusrules-crd.yaml",
    "servicemonitors.monitoring.coreos.com": Path(__file__).parent / "servicemonitors-crd.yaml",
}


def newcomer_commands() -> list[str]:
    """The block's commands: a line, with the lines it continues onto (a trailing backslash, a heredoc)."""
    text = README.read_text()
    assert text.count("<!-- newcomer-path -->") == 1 and text.count("<!-- /newcomer-path -->") == 1, "README.md: the newcomer-path markers"
    lines = text.split("<!-- newcomer-path -->")[1].split("<!-- /newcomer-path -->")[0].strip().splitlines()
    assert lines[0] == "```sh" and lines[-1] == "```", "README.md: the newcomer path is one ```sh block"
    commands: list[str] = []
    current: list[str] = []
    heredoc = None
    for line in lines[1:-1]:
        current.append(line)
        if heredoc is not None:
            if line != heredoc:
                continue
            heredoc = None
        elif found := re.search(r"<<-?'?(\w+)'?", line):
            heredoc = found.group(1)
            continue
        elif line.endswith("\\"):
            continue
        commands.append("\n".join(current))
        current = []
    assert not current, f"README.md: the newcomer path ends inside a command: {current}"
    return commands


def test_the_readme_block_is_the_commands_this_test_handles():
    firsts = [" ".join(c.split()[:2]) for c in newcomer_commands()]
    assert firsts[0] == "helm install" and "helm test" in firsts and firsts[-1] == "plantwatch alerts"


def conditions(o: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in o.get("status", {}).get("conditions", [])}


def install_monitoring_crds(cluster) -> list[str]:
    """The stand-ins this cluster lacks, installed (after a deletion still under way): their names."""
    ours = []
    for name, path in MONITORING_CRDS.items():
        got = cluster.kubectl("get", "crd", name, "-o", "json", check=False)
        if got.returncode == 0 and not json.loads(got.stdout)["metadata"].get("deletionTimestamp"):
            continue  # a cluster with the Prometheus Operator keeps its own
        cluster.kubectl("wait", "--for=delete", f"crd/{name}", "--timeout=60s", check=False)
        cluster.kubectl("apply", "--server-side", "-f", str(path))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        ours.append(name)
    return ours


def host_gateway(stack: ExitStack, tmp_path: Path) -> tuple[str, int]:
    """`plantwatch serve ingest` of the sample plant on a local mosquitto, its alerts API's reads open as
    the README's install sets them: the broker's URL and the gateway's port."""
    broker = start_mosquitto()
    stack.callback(broker.stop)
    plant = tmp_path / "plant"
    shutil.copytree(EXAMPLE_PLANT, plant)
    port = free_port()
    args = ["serve", "ingest", "-f", str(plant), "--broker", broker.url, "--db", str(tmp_path / "gateway.db")]
    args += ["--http-port", str(port), "--api-open-reads"]
    out = stack.enter_context(open(tmp_path / "gateway.out", "wb"))
    proc = subprocess.Popen([sys.executable, "-m", "plantwatch.cli", *args], stdout=out, stderr=subprocess.STDOUT)
    stack.callback(lambda: (proc.terminate(), proc.wait(30)))
    wait_for(lambda: ready(port) or proc.poll() is not None, "the host gateway ready", timeout=30)
    assert proc.poll() is None, (tmp_path / "gateway.out").read_text()
    return broker.url, port


def point_gateway_service_here(cluster, address: str, port: int) -> None:
    """Service plantwatch-gateway, as the operator rendered it, replaced by one whose endpoint is this host's
    gateway. The API server proxies only to a Pod's IP: a Pod no node takes, its status given `address`."""
    service = json.loads(cluster.kubectl("get", "service", "plantwatch-gateway", "-n", NAMESPACE, "-o", "json").stdout)
    [http] = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    cluster.kubectl("delete", "service", "plantwatch-gateway", "-n", NAMESPACE)
    wait_for(
        lambda: cluster.kubectl("get", "endpoints", "plantwatch-gateway", "-n", NAMESPACE, check=False).returncode != 0,
        "the rendered Service's Endpoints gone",
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gateway-on-this-host", "namespace": NAMESPACE},
        "spec": {"nodeSelector": {"plantwatch.io/no-such-node": "x"}, "containers": [{"name": "gateway", "image": "plantwatch"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    status = {"status": {"podIP": address, "podIPs": [{"ip": address}]}}
    cluster.kubectl(
        "patch", "pod", "gateway-on-this-host", "-n", NAMESPACE, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    here = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "plantwatch-gateway", "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": http["port"], "targetPort": port}]},
    }
    target = {"kind": "Pod", "namespace": NAMESPACE, "name": "gateway-on-this-host"}
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "plantwatch-gateway", "namespace": NAMESPACE},
        "subsets": [{"addresses": [{"ip": address, "targetRef": target}], "ports": [{"name": "http", "port": port}]}],
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([here, endpoints]))


def test_the_newcomer_path_from_an_empty_cluster_to_a_watched_plant(cluster, host_address, tmp_path):  # noqa: F811
    commands = newcomer_commands()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTWATCH_")}
    env |= {"KUBECONFIG": cluster.kubeconfig, "PATH": f"{ROOT / '.cache' / 'bin'}:{Path(sys.executable).parent}:{env['PATH']}"}
    ours = install_monitoring_crds(cluster)
    with ExitStack() as stack:
        # Waited for: a chart installed later must not see the group served while its kinds go.
        stack.callback(lambda: [cluster.kubectl("delete", "crd", name, "--timeout=60s", check=False) for name in ours])
        stack.callback(lambda: cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False))
        stack.callback(lambda: subprocess.run(["helm", "uninstall", RELEASE, "-n", NAMESPACE], env=env, capture_output=True, timeout=120))
        broker_url, port = host_gateway(stack, tmp_path)

        def sh(command: str) -> subprocess.Popen:
            return subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )

        operator = ExitStack()
        for command in commands:
            first = " ".join(command.split()[:2])
            if first == "plantwatch alerts":
                # What the operator made of the README's receiver and rule, before it stops.
                wait_for(
                    lambda: "slack" in rendered_receivers(cluster), f"the Slack receiver in the gateway's config\n{log_tail(tmp_path)}"
                )
                gateway = json.loads(cluster.kubectl("get", "deployment", "plantwatch-gateway", "-n", NAMESPACE, "-o", "json").stdout)
                assert "plant-slack" in {v.get("secret", {}).get("secretName") for v in gateway["spec"]["template"]["spec"]["volumes"]}
                operator.close()
                point_gateway_service_here(cluster, host_address, port)
                press_temperatures(broker_url, time.time() - 120, [85.0] * 40)
                # Listed once the gateway has read the readings: the same command until then.
                wait_for(
                    lambda: "machine-overtemperature" in sh(command).communicate(timeout=60)[0], "the press's alert listed", timeout=30
                )
            run = sh(command)
            if first == "helm test":
                finish_test_pod(cluster, RELEASE, NAMESPACE, f"http://127.0.0.1:{port}/readyz")
            out, err = run.communicate(timeout=240)
            assert run.returncode == 0, (
                f"README.md's newcomer path: `{command}` exited {run.returncode}\n{out}\n{err}\n{log_tail(tmp_path)}"
            )
            if first == "helm install":
                operator = stack.enter_context(ExitStack())
                operator.enter_context(chart_operator(cluster, RELEASE, NAMESPACE, tmp_path / "operator.log"))
            if first == "helm test":
                assert "Phase:          Succeeded" in out, out
            if first == "plantwatch alerts":
                assert re.search(r"machine-overtemperature.*esp32-press-01", out), out

        # The end state the README promises.
        nodes = json.loads(cluster.kubectl("get", "sensornodes", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        assert len(nodes) == 5 and all(conditions(n).get("Ready") == "True" for n in nodes)
        assert plant_nodes(cluster, NAMESPACE) == {n["metadata"]["name"] for n in nodes}
        dashboards = json.loads(cluster.kubectl("get", "configmaps", "-n", NAMESPACE, "-l", "grafana_dashboard=1", "-o", "json").stdout)
        shipped = sorted(f"plantwatch-{p.name}" for p in (CHART / "dashboards").glob("*.json"))  # one file per ConfigMap, for the sidecar
        assert sorted(k for c in dashboards["items"] for k in c["data"]) == shipped
        # Labelled for kube-prometheus-stack's serviceMonitorSelector and ruleSelector, as the install set them.
        monitors = cluster.kubectl(
            "get", "servicemonitors", "-n", NAMESPACE, "-l", "release=kube-prometheus-stack", "-o", "name"
        ).stdout.split()
        assert sorted(monitors) == [
            f"servicemonitor.monitoring.coreos.com/{RELEASE}-{c}" for c in ("broker-exporter", "gateway", "inference", "operator")
        ]
        rules = json.loads(
            cluster.kubectl("get", "prometheusrules", "-n", NAMESPACE, "-l", "release=kube-prometheus-stack", "-o", "json").stdout
        )
        [rule] = rules["items"]
        assert any(r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"])


def rendered_receivers(cluster) -> set[str]:
    got = cluster.kubectl("get", "configmap", "plantwatch-plant", "-n", NAMESPACE, "-o", "json", check=False)
    if got.returncode != 0:
        return set()
    docs = yaml.safe_load_all(json.loads(got.stdout)["data"].get("plant.yaml", ""))
    return {d["metadata"]["name"] for d in docs if d and d.get("kind") == "AlertReceiver"}


def log_tail(tmp_path: Path) -> str:
    log = tmp_path / "operator.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""
