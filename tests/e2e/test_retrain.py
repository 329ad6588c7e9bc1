"""spec.retrain on a real control plane: the CronJob and its RBAC appear, the candidate the job writes is
scored in shadow, and removing spec.retrain takes the CronJob away."""

from __future__ import annotations

import json

import yaml

from tests.conftest import EXAMPLE_PLANT
from tests.e2e.test_operator import crds, get, operator, wait_for  # noqa: F401 (fixtures)

RETRAIN = {"schedule": "0 3 * * *", "window": "3d"}
COMPARISON = {"servedAlarmRate": 0.1, "candidateAlarmRate": 0.04, "disagreement": 0.03, "trainedRows": 12000}


def container_args(deployment: dict | None) -> list[str]:
    return (deployment or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("args", [])


def can(cluster, namespace: str, verb: str, resource: str) -> bool:
    account = f"system:serviceaccount:{namespace}:bearing-wear-retrain"
    result = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={account}", check=False)
    return result.stdout.strip() == "yes"


def test_retrain_renders_a_cronjob_whose_candidate_is_scored_in_shadow_until_retrain_goes(cluster, operator, namespace):  # noqa: F811
    ns = namespace
    detector = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    detector["spec"]["retrain"] = dict(RETRAIN)
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE_PLANT / "nodes.yaml"))
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE_PLANT / "bearing-wear-model.yaml"))
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(detector))

    cron = wait_for(lambda: get(cluster, "cronjob", "bearing-wear-retrain", "-n", ns), "CronJob bearing-wear-retrain")
    assert (cron["spec"]["schedule"], cron["spec"]["concurrencyPolicy"], cron["spec"]["suspend"]) == ("0 3 * * *", "Forbid", False)
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["detector", "retrain"]
    for flag, value in [("--model", "bearing-wear"), ("--window", "3d"), ("--to-configmap", "bearing-wear-candidate"), ("--namespace", ns)]:
        assert args[args.index(flag) + 1] == value, (flag, args)
    assert args[args.index("--gateway") + 1] == "http://plantwatch-gateway:8080"
    for kind in ("serviceaccount", "role", "rolebinding", "networkpolicy"):
        wait_for(lambda: get(cluster, kind, "bearing-wear-retrain", "-n", ns), f"{kind}/bearing-wear-retrain")
    # The job's identity writes its candidate and nothing else.
    assert can(cluster, ns, "update", "configmaps/bearing-wear-candidate")
    assert can(cluster, ns, "create", "configmaps")
    for verb, resource in [("update", "configmaps/bearing-wear-model"), ("get", "secrets"), ("patch", "detectormodels.plantwatch.io")]:
        assert not can(cluster, ns, verb, resource), f"the retraining job may {verb} {resource}"
    assert "--shadow-model" not in container_args(get(cluster, "deployment", "plantwatch-detector-bearing-wear", "-n", ns))

    # What the job writes: the candidate in `detector publish`'s shape, with its comparison.
    candidate = next(d for d in yaml.safe_load_all((EXAMPLE_PLANT / "bearing-wear-model.yaml").read_text()) if d["kind"] == "ConfigMap")
    candidate["metadata"] = {"name": "bearing-wear-candidate"}
    candidate.setdefault("data", {})["comparison.json"] = json.dumps(COMPARISON)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(candidate))
    deployment = wait_for(
        lambda: (lambda d: d if "--shadow-model" in container_args(d) else None)(
            get(cluster, "deployment", "plantwatch-detector-bearing-wear", "-n", ns)
        ),
        "the inference Deployment scoring the candidate in shadow",
    )
    args = container_args(deployment)
    assert args[args.index("--shadow-model") + 1] == "/shadow/model.onnx"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["shadow"]["configMap"]["name"] == "bearing-wear-candidate"
    status = wait_for(
        lambda: (get(cluster, "detectormodel", "bearing-wear", "-n", ns) or {}).get("status", {}).get("retrain", {}).get("comparison"),
        "status.retrain.comparison",
    )
    assert status == COMPARISON
    retrain = get(cluster, "detectormodel", "bearing-wear", "-n", ns)["status"]["retrain"]
    assert retrain["candidate"] == "bearing-wear-candidate" and retrain["lastCandidateTime"]

    # A schedule the CronJob would not take is refused at the door, saying what is accepted.
    bad = {**detector, "spec": {**detector["spec"], "retrain": {"schedule": "0 25 * * *"}}}
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert refused.returncode != 0 and "retrain.schedule must be a cron expression of five fields" in refused.stderr

    cluster.kubectl("patch", "detectormodel", "bearing-wear", "-n", ns, "--type=json", "-p", '[{"op": "remove", "path": "/spec/retrain"}]')
    for kind in ("cronjob", "role", "rolebinding", "serviceaccount", "networkpolicy"):
        wait_for(lambda: get(cluster, kind, "bearing-wear-retrain", "-n", ns) is None, f"{kind}/bearing-wear-retrain deleted")
    wait_for(
        lambda: "--shadow-model" not in container_args(get(cluster, "deployment", "plantwatch-detector-bearing-wear", "-n", ns)),
        "the leftover candidate no longer scored",
    )
    wait_for(
        lambda: "retrain" not in (get(cluster, "detectormodel", "bearing-wear", "-n", ns) or {}).get("status", {"retrain": 1}),
        "status.retrain dropped",
    )
