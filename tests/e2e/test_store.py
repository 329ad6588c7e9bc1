"""The store of record in the cluster: `helm install` with the chart's PostgreSQL, the gateway the operator renders
wired to it, and what `helm uninstall` keeps (docs/storage.md, "In the cluster"; docs/kubernetes.md).

kwok runs no container: the chart's operator runs on this host as its Deployment says (test_helm.chart_operator)
and renders the plant's gateway into the cluster; what is checked is what the control plane holds. That the
rendered arguments really run against PostgreSQL (a rolling update, a killed pod) is shown on the host by
tests/integration/test_gateway_store_args.py.
"""

from __future__ import annotations

import base64
import json
import uuid

from tests.conftest import EXAMPLE_PLANT
from tests.e2e.conftest import wait_for
from tests.e2e.test_helm import CHART, chart_operator, chart_values, helm, kept_after_uninstall

PORT = 5432


def get(cluster, *args: str) -> dict | None:
    got = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else None


def admits(peer: dict, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer (a podSelector in the policy's namespace) selects a pod with these labels."""
    selector = peer.get("podSelector", {})
    return (
        "namespaceSelector" not in peer
        and not selector.get("matchExpressions")
        and selector.get("matchLabels", {}).items() <= labels.items()
    )


def test_the_charts_postgres_serves_the_rendered_gateway_and_outlives_the_release(cluster, tmp_path):
    run = uuid.uuid4().hex[:6]
    release, ns = f"s-{run}", f"store-{run}"  # the gateway's instance label is its namespace: not the release's
    values = chart_values(EXAMPLE_PLANT, tmp_path / "plant.yaml")
    installed = helm(cluster, "install", release, str(CHART), "-n", ns, "--create-namespace", "-f", str(values))
    assert installed.returncode == 0, installed.stderr
    try:
        # PostgreSQL: a StatefulSet of one on its own volume, its password in the release's Secret
        postgres = get(cluster, "statefulset", f"{release}-postgres", "-n", ns)
        assert postgres and postgres["spec"]["replicas"] == 1
        assert [c["metadata"]["name"] for c in postgres["spec"]["volumeClaimTemplates"]] == ["data"]
        assert {"name": "password", "secret": {"secretName": f"{release}-postgres", "defaultMode": 0o440}} in postgres["spec"]["template"][
            "spec"
        ]["volumes"]
        secret = get(cluster, "secret", f"{release}-postgres", "-n", ns)
        password = base64.b64decode(secret["data"]["password"]).decode()
        assert len(password) >= 16
        store_pod = postgres["spec"]["template"]["metadata"]["labels"]

        # The gateway the operator renders from the chart's hand-over: --db postgresql://..., the password by Secret name
        with chart_operator(cluster, release, ns, tmp_path / "operator.log"):
            gateway = wait_for(lambda: get(cluster, "deployment", "plantwatch-gateway", "-n", ns), "the operator's gateway Deployment")
        pod = gateway["spec"]["template"]
        [container] = pod["spec"]["containers"]
        db = container["args"][container["args"].index("--db") + 1]
        assert db == f"postgresql://plantwatch@{release}-postgres.{ns}.svc:{PORT}/plantwatch", db
        assert gateway["spec"]["strategy"]["type"] == "RollingUpdate"
        secret_volumes = [v for v in pod["spec"]["volumes"] if v.get("secret", {}).get("secretName") == f"{release}-postgres"]
        assert len(secret_volumes) == 1, pod["spec"]["volumes"]
        password_file = {e["name"]: e.get("value") for e in container["env"]}["PLANTWATCH_DB_PASSWORD_FILE"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == secret_volumes[0]["name"])
        assert password_file.startswith(mount["mountPath"] + "/") and password_file.endswith("/password")
        assert password not in json.dumps(gateway), "the gateway Deployment carries the database password"

        # Only the gateways and the backup job reach 5432
        policy = get(cluster, "networkpolicy", f"{release}-postgres", "-n", ns)
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= store_pod.items()
        assert "Egress" in policy["spec"]["policyTypes"] and not policy["spec"].get("egress")  # it opens no connection
        [rule] = policy["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": PORT}]
        backup = get(cluster, "cronjob", f"{release}-backup", "-n", ns)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        broker = get(cluster, "deployment", f"{release}-broker", "-n", ns)["spec"]["template"]["metadata"]["labels"]
        operator = get(cluster, "deployment", f"{release}-operator", "-n", ns)["spec"]["template"]["metadata"]["labels"]
        admitted = lambda labels: any(admits(peer, labels) for peer in rule["from"])  # noqa: E731
        assert admitted(pod["metadata"]["labels"]) and admitted(backup)
        assert not admitted(broker) and not admitted(operator) and not admitted(store_pod)
    finally:
        uninstalled = helm(cluster, "uninstall", release, "-n", ns)
    assert uninstalled.returncode == 0, uninstalled.stderr

    # Kept, as the docs say: the database's volume and its password (the same one), the backups' volume
    def left() -> list[str]:
        kinds = "statefulsets,deployments,cronjobs,services,secrets,networkpolicies,pvc"
        return sorted(cluster.kubectl("get", kinds, "-n", ns, "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout.split())

    kept = kept_after_uninstall(release)
    wait_for(lambda: left() == kept, f"only the volumes and the store's password left of {release}")
    assert base64.b64decode(get(cluster, "secret", f"{release}-postgres", "-n", ns)["data"]["password"]).decode() == password
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
