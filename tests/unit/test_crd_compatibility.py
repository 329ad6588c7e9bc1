"""The written promise of docs/api-versions.md, held: within a served version, crds/ only grows.

Each CRD in crds/ is compared with its copy in tests/unit/crd_baseline/ (the CRDs as v1alpha1 was first
promised). A version served at the baseline must still be served, and in its schema no field may go,
change type, become required, lose an enum value, change its default or gain a CEL rule. Adding optional
fields, enum values and new versions is allowed. A deliberate break is a new version (the doc says how);
the baseline is then regenerated for it, never edited to make this pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

BASELINE = Path(__file__).resolve().parent / "crd_baseline"
CRDS = ROOT / "crds"


def breaks(old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
    """What in schema `new` breaks an object valid under schema `old` (or a client reading it)."""
    found = []
    # A decimal string widened to int-or-string: every string it took still passes the same pattern, and
    # the numeric bounds it gains only constrain the numbers it newly takes.
    widened = old.get("type") == "string" and "type" not in new and new.get("x-kubernetes-int-or-string") is True
    if old.get("type") != new.get("type") and not widened:
        found.append(f"{where}: type {old.get('type')!r} became {new.get('type')!r}")
    if "default" in old and old.get("default") != new.get("default"):
        found.append(f"{where}: default {old['default']!r} became {new.get('default')!r}")
    if "enum" in new:
        gone = [v for v in old.get("enum", []) if v not in new["enum"]] if "enum" in old else ["(any value)"]
        if gone:
            found.append(f"{where}: enum values removed: {gone}")
    added = sorted(set(new.get("required", [])) - set(old.get("required", [])))
    if added:
        found.append(f"{where}: newly required: {added}")
    rules = [r["rule"] for r in new.get("x-kubernetes-validations", [])]
    tightened = [r for r in rules if r not in [o["rule"] for o in old.get("x-kubernetes-validations", [])]]
    if tightened:
        found.append(f"{where}: CEL rules added or changed: {tightened}")
    for bound in ("maximum", "maxLength", "maxItems", "maxProperties"):
        if widened and bound == "maximum":
            continue
        if bound in new and (bound not in old or new[bound] < old[bound]):
            found.append(f"{where}: {bound} lowered from {old.get(bound)!r} to {new[bound]!r}")
    for bound in ("minimum", "minLength", "minItems", "minProperties"):
        if widened and bound == "minimum":
            continue
        if bound in new and (bound not in old or new[bound] > old[bound]):
            found.append(f"{where}: {bound} raised from {old.get(bound)!r} to {new[bound]!r}")
    if old.get("pattern") != new.get("pattern") and "pattern" in new:
        found.append(f"{where}: pattern {old.get('pattern')!r} became {new['pattern']!r}")
    for name, child in old.get("properties", {}).items():
        if name not in new.get("properties", {}):
            found.append(f"{where}.{name}: removed")
        else:
            found += breaks(child, new["properties"][name], f"{where}.{name}")
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        found += breaks(old["items"], new["items"], f"{where}[]")
    if isinstance(old.get("additionalProperties"), dict) and isinstance(new.get("additionalProperties"), dict):
        found += breaks(old["additionalProperties"], new["additionalProperties"], f"{where}{{}}")
    return found


def versions(crd: dict) -> dict[str, dict]:
    return {v["name"]: v for v in crd["spec"]["versions"]}


def compatibility(old: dict, new: dict) -> list[str]:
    found = []
    for key in ("group", "scope"):
        if old["spec"][key] != new["spec"][key]:
            found.append(f"spec.{key} {old['spec'][key]!r} became {new['spec'][key]!r}")
    if old["spec"]["names"]["kind"] != new["spec"]["names"]["kind"]:
        found.append("spec.names.kind changed")
    for name, version in versions(old).items():
        if not version.get("served"):
            continue
        now = versions(new).get(name)
        if now is None or not now.get("served"):
            found.append(f"version {name}: no longer served")
            continue
        found += breaks(version["schema"]["openAPIV3Schema"], now["schema"]["openAPIV3Schema"], name)
    return found


@pytest.mark.parametrize("baseline", sorted(BASELINE.glob("*.yaml")), ids=lambda p: p.name)
def test_each_served_version_only_grows(baseline: Path):
    current = CRDS / baseline.name
    assert current.exists(), f"crds/{baseline.name} was removed; a CRD that was promised stays (docs/api-versions.md)"
    problems = compatibility(yaml.safe_load(baseline.read_text()), yaml.safe_load(current.read_text()))
    assert not problems, f"crds/{baseline.name} breaks the v1alpha1 promise (docs/api-versions.md):\n" + "\n".join(problems)


def test_every_crd_has_a_baseline():
    """A new CRD gets its baseline when it is added, so its promise is held from its first release."""
    assert {p.name for p in CRDS.glob("*.yaml")} <= {p.name for p in BASELINE.glob("*.yaml")}


def sensornode() -> dict:
    return yaml.safe_load((BASELINE / "sensornodes.plantwatch.io.yaml").read_text())


def schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s["properties"]["spec"]["properties"].pop("hardware"), "spec.hardware: removed"),
        (lambda s: s["properties"]["spec"]["properties"]["hardware"].update(type="integer"), "type 'string' became 'integer'"),
        (lambda s: s["properties"]["spec"].setdefault("required", []).append("location"), "newly required: ['location']"),
        (lambda s: s["properties"]["spec"]["properties"]["hardware"]["enum"].pop(), "enum values removed"),
        (
            lambda s: s["properties"]["spec"]["properties"]["heartbeat"]["properties"]["interval"].update(default="1s"),
            "default '10s' became",
        ),
        (
            lambda s: s["properties"]["spec"].setdefault("x-kubernetes-validations", []).append({"rule": "false"}),
            "CEL rules added or changed",
        ),
    ],
    ids=["removed", "retyped", "required", "enum", "default", "cel"],
)
def test_each_kind_of_break_is_caught(change, expected):
    old, new = sensornode(), sensornode()
    change(schema(new))
    assert any(expected in p for p in compatibility(old, new)), compatibility(old, new)


def test_an_added_optional_field_and_enum_value_are_allowed():
    old, new = sensornode(), sensornode()
    spec = schema(new)["properties"]["spec"]
    spec["properties"]["hardware"]["enum"].append("stm32")
    spec["properties"]["firmware"] = {"type": "string"}
    assert compatibility(old, new) == []


def _range_min(s: dict) -> dict:
    return s["properties"]["spec"]["properties"]["sensors"]["items"]["properties"]["range"]["properties"]["min"]


def test_a_decimal_string_widened_to_int_or_string_is_allowed_but_not_with_a_tighter_pattern():
    old, new = sensornode(), sensornode()
    field = _range_min(schema(new))
    assert field["type"] == "string"
    del field["type"]
    field.update({"x-kubernetes-int-or-string": True, "minimum": -273})
    assert compatibility(old, new) == []
    field["pattern"] = "^[0-9]+$"
    assert any("pattern" in p and "range.min" in p for p in compatibility(old, new)), compatibility(old, new)
