"""deploy/argocd's Applications and ApplicationSet, against Argo CD's own CRD schemas.

The schemas are read from the Argo CD module that tools/go/argocd-health pins (`make tools` puts it
in the Go module cache); the ApplicationSet's template is also checked as the Application it makes
for one plant folder.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from plantwatch.plant.schema import CRDSchema
from tests.conftest import ROOT

ARGOCD = ROOT / "deploy" / "argocd"
PLANTWATCH_REPO = "https://github.com/plantwatch/plantwatch.git"
PLANT_KINDS = {yaml.safe_load(f.read_text())["spec"]["names"]["kind"] for f in (ROOT / "crds").glob("*.yaml")}


def argocd_schemas() -> dict[str, CRDSchema]:
    gomod = (ROOT / "tools" / "go" / "argocd-health" / "go.mod").read_text()
    version = re.search(r"github\.com/argoproj/argo-cd/v3 (v\S+)", gomod).group(1)
    cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    crds = Path(cache) / "github.com" / "argoproj" / "argo-cd" / f"v3@{version}" / "manifests" / "crds"
    if not crds.is_dir():
        pytest.fail(f"{crds} is missing: run `make tools` (it downloads Argo CD {version})")
    out = {}
    for name in ("application-crd.yaml", "applicationset-crd.yaml"):
        crd = yaml.safe_load((crds / name).read_text())
        served = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        root = served["schema"]["openAPIV3Schema"]
        # CRDSchema checks what the CRD's schema governs; metadata is the API server's own.
        root = {**root, "required": [r for r in root.get("required", []) if r != "metadata"]}
        out[crd["spec"]["names"]["kind"]] = CRDSchema(crd["spec"]["names"]["kind"], served["name"], root)
    return out


def documents() -> dict[str, dict]:
    """Every Argo CD object of deploy/argocd, by name."""
    files = [f for f in sorted(ARGOCD.rglob("*.yaml")) if "resource_customizations" not in f.parts]
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text())]
    return {d["metadata"]["name"]: d for d in docs if d and d["apiVersion"].startswith("argoproj.io/")}


def plant_application(appset: dict, plant: str) -> dict:
    """The Application the ApplicationSet's git directory generator makes for plants/<plant>/."""
    text = yaml.safe_dump(appset["spec"]["template"])
    text = text.replace("{{.path.basename}}", plant).replace("{{.path.path}}", f"plants/{plant}")
    assert "{{" not in text, "the template uses a parameter the git directory generator does not set"
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **yaml.safe_load(text)}


def wave(doc: dict) -> int:
    return int(doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_every_object_is_valid_against_argo_cds_crds() -> None:
    schemas = argocd_schemas()
    docs = documents()
    objects = [*docs.values(), plant_application(docs["plantwatch-plants"], "plant-a")]
    for obj in objects:
        errors = schemas[obj["kind"]].validate(obj)
        assert not errors, f"{obj['kind']} {obj['metadata']['name']}: {[str(e) for e in errors]}"


def test_crds_then_the_operator_then_the_plants() -> None:
    docs = documents()
    root = docs["plantwatch"]
    assert wave(docs["plantwatch-crds"]) < wave(docs["plantwatch-operator"]) < wave(docs["plantwatch-plants"])
    # The root syncs exactly the apps/ folder, which holds those three.
    assert root["spec"]["source"]["path"] == "deploy/argocd/apps"
    in_apps = {yaml.safe_load(f.read_text())["metadata"]["name"] for f in (ARGOCD / "apps").glob("*.yaml")}
    assert in_apps == {"plantwatch-crds", "plantwatch-operator", "plantwatch-plants"}
    # The waves wait for child Applications only with their health check installed.
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    assert "resource.customizations.health.argoproj.io_Application" in data
    assert data["application.resourceTrackingMethod"] == "annotation"


def test_the_crds_are_applied_server_side_and_never_pruned() -> None:
    crds = documents()["plantwatch-crds"]
    assert crds["spec"]["source"]["path"] == "crds"
    assert "ServerSideApply=true" in crds["spec"]["syncPolicy"]["syncOptions"]
    assert "Prune=false" in crds["spec"]["syncPolicy"]["syncOptions"]
    assert crds["spec"]["syncPolicy"]["automated"]["prune"] is False
    assert "resources-finalizer.argocd.argoproj.io" not in crds["metadata"].get("finalizers", [])


def test_each_plant_folder_becomes_its_namespace_with_the_chart_but_without_crds_or_operator() -> None:
    appset = documents()["plantwatch-plants"]
    (generator,) = appset["spec"]["generators"]
    assert generator["git"]["directories"] == [{"path": "plants/*"}]
    app = plant_application(appset, "plant-b")
    assert app["metadata"]["name"] == "plantwatch-plant-b"  # not plant-b: see apps/plants.yaml
    assert app["spec"]["destination"]["namespace"] == "plant-b"
    chart, ref, folder = app["spec"]["sources"]
    helm = chart["helm"]
    assert (chart["path"], helm["skipCrds"], helm["valuesObject"]["operator"]["enabled"]) == ("charts/plantwatch", True, False)
    assert helm["valueFiles"] == [f"${ref['ref']}/plants/plant-b/chart-values.yaml"]
    assert folder["path"] == "plants/plant-b" and folder["repoURL"] == ref["repoURL"] == generator["git"]["repoURL"]
    assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_the_plant_resources_status_is_ignored_for_every_kind() -> None:
    docs = documents()
    for spec in (docs["plantwatch-plant-a"]["spec"], docs["plantwatch-plants"]["spec"]["template"]["spec"]):
        ignored = {d["kind"] for d in spec["ignoreDifferences"] if d["group"] == "plantwatch.io" and "/status" in d["jsonPointers"]}
        assert ignored == PLANT_KINDS
        assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]


def test_the_operator_brings_the_crds_of_its_subfolder() -> None:
    source = documents()["plantwatch-operator"]["spec"]["source"]
    nested = [f for f in (ROOT / source["path"]).rglob("*.yaml") if f.parent != ROOT / source["path"]]
    assert not nested or source["directory"]["recurse"] is True, nested


def test_the_paths_in_this_repository_exist() -> None:
    docs = documents()
    sources = [s for d in docs.values() for s in ([d["spec"]["source"]] if "source" in d["spec"] else d["spec"].get("sources", []))]
    sources += docs["plantwatch-plants"]["spec"]["template"]["spec"]["sources"]
    ours = [s["path"] for s in sources if s["repoURL"] == PLANTWATCH_REPO]
    assert {"crds", "operator/deploy", "charts/plantwatch", "examples/plant", "deploy/argocd/apps"} <= set(ours)
    for path in ours:
        assert (ROOT / path).is_dir(), path
