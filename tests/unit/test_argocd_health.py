"""The Argo CD health checks of deploy/argocd, run by Argo CD's own Lua health code.

`argocd-health` (tools/go/argocd-health, built by `make tools`) evaluates every health_test.yaml
case through Argo CD's util/lua with the standard libraries closed, as the application controller
does, once with the health.lua file and once with the argocd-cm key Argo CD's settings manager reads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from plantwatch.plant.schema import crd_schemas
from tests.conftest import ROOT

ARGOCD_HEALTH = ROOT / ".cache" / "bin" / "argocd-health"
CUSTOMIZATIONS = ROOT / "deploy" / "argocd" / "resource_customizations"
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"
KINDS = ("SensorNode", "AlertRule", "DetectorModel", "AlertReceiver")


def evaluate(customizations: Path = CUSTOMIZATIONS, configmap: Path = ARGOCD_CM) -> list[dict]:
    if not ARGOCD_HEALTH.exists():
        pytest.fail(f"{ARGOCD_HEALTH} is missing: run `make tools`")
    done = subprocess.run(
        [str(ARGOCD_HEALTH), "-customizations", str(customizations), "-configmap", str(configmap)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_case_gets_the_health_its_test_expects_from_argo_cd() -> None:
    results = evaluate()
    wrong = [
        f"{r['key']} {r['inputPath']} ({r['source']}): expected {r['expected']}, got {r['actual']} {r.get('error', '')}"
        for r in results
        if r.get("error") or r["actual"] != r["expected"]
    ]
    assert not wrong, "\n".join(wrong)
    cases = sum(len(yaml.safe_load(f.read_text())["tests"]) for f in CUSTOMIZATIONS.glob("*/*/health_test.yaml"))
    assert len(results) == 2 * cases  # every case, from the file and from argocd-cm


def test_each_kind_is_checked_healthy_progressing_degraded_and_without_status() -> None:
    for kind in KINDS:
        folder = CUSTOMIZATIONS / "plantwatch.io" / kind
        tests = yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]
        statuses = {t["healthStatus"]["status"] for t in tests}
        assert {"Healthy", "Progressing", "Degraded"} <= statuses, f"{kind}: {statuses}"
        objects = [yaml.safe_load((folder / t["inputPath"]).read_text()) for t in tests]
        assert any("status" not in o for o in objects), f"{kind}: no case without a status"
        assert any(o["status"]["observedGeneration"] < o["metadata"]["generation"] for o in objects if "status" in o), kind


def test_the_cases_are_objects_the_api_server_would_accept() -> None:
    schemas = crd_schemas()
    for path in sorted(CUSTOMIZATIONS.glob("plantwatch.io/*/testdata/*.yaml")):
        obj = yaml.safe_load(path.read_text())
        schema = schemas[obj["kind"]]
        errors = schema.validate(schema.defaulted(obj))
        assert not errors, f"{path.relative_to(ROOT)}: {[str(e) for e in errors]}"


def test_the_checks_run_without_lua_string_library_as_argo_cd_runs_them(tmp_path: Path) -> None:
    """A check that works with every library open (as `argocd admin settings resource-overrides
    health` with open libraries would say) but fails in the controller is caught here."""
    folder = tmp_path / "plantwatch.io" / "SensorNode"
    shutil.copytree(CUSTOMIZATIONS / "plantwatch.io" / "SensorNode", folder)
    (folder / "health.lua").write_text('return {status = "Healthy", message = string.format("%d", 1)}\n')
    results = [r for r in evaluate(tmp_path) if r["source"] == "health.lua"]
    # `string` is nil there, so string.format indexes nil.
    assert results and all("non-table object(nil) with key 'format'" in r.get("error", "") for r in results), results


def test_argocd_cm_names_every_check_by_its_group_and_kind() -> None:
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    for script in CUSTOMIZATIONS.glob("*/*/health.lua"):
        key = f"resource.customizations.health.{script.parent.parent.name}_{script.parent.name}"
        assert data.get(key) == script.read_text(), key
    assert {f"resource.customizations.health.plantwatch.io_{k}" for k in KINDS} <= data.keys()
