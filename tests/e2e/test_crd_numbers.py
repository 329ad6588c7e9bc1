"""Ranges and levels take plain YAML numbers as well as decimal strings, and `plantwatch validate` judges
each form exactly as the API server does (the CRDs' x-kubernetes-int-or-string fields, docs/api-versions.md)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from plantwatch.plant.model import ManifestError, parse_resource
from tests.conftest import EXAMPLE_PLANT, ROOT

#: Each value, put in one field; the API server's verdict and validate's must be the same.
VALUES = [85, -40, 0, "85", "-40.5", "0.65", 85.0, 85.5, "abc", "8e1", True, [1], {"a": 1}]


@pytest.fixture(scope="module")
def crds(cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for f in sorted((ROOT / "crds").glob("*.yaml")):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{yaml.safe_load(f.read_text())['metadata']['name']}", "--timeout=60s")


def _example(name: str, index: int = 0) -> dict:
    return copy.deepcopy(list(yaml.safe_load_all((EXAMPLE_PLANT / name).read_text()))[index])


def _cases() -> list[tuple[str, dict, object]]:
    cases = []
    for value in VALUES:
        node = _example("nodes.yaml")
        node["spec"]["sensors"][0]["range"] = {"min": value, "max": 1000}
        rule = _example("rules.yaml")
        rule["spec"]["condition"]["threshold"] = {"warning": value, "critical": 100, "emergency": "120.5"}
        rate = _example("rules.yaml")
        rate["spec"]["condition"] = {"type": "RateOfChange", "rateOfChange": {"maxPerMinute": value}}
        detector = _example("detectors.yaml")
        detector["spec"]["threshold"] = value
        cases += [
            ("spec.sensors[0].range.min", node, value),
            ("spec.condition.threshold.warning", rule, value),
            ("spec.condition.rateOfChange.maxPerMinute", rate, value),
            ("spec.threshold", detector, value),
        ]
    return cases


def test_validate_and_the_api_server_agree_on_every_form_of_a_number(cluster, crds, namespace):
    disagreements, verdicts = [], set()
    for field, doc, value in _cases():
        try:
            parse_resource(doc)
            local = None
        except ManifestError as exc:
            local = [str(e) for e in exc.errors]
        # As JSON: YAML readers differ on scalars such as 8e1 (a float to kubectl's, a string to PyYAML), and this
        # compares the schemas, not the readers.
        result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False)
        remote = None if result.returncode == 0 else result.stderr
        verdicts.add((field, value if not isinstance(value, (list, dict)) else str(value), local is None))
        if (local is None) != (remote is None):
            disagreements.append(f"{field}={value!r}: validate {local or 'accepts'}; API server {remote or 'accepts'}")
        elif local is not None:
            # Both refuse, and both name the field.
            assert any(e.startswith(field + ":") for e in local), (field, value, local)
            assert field in remote, (field, value, remote)
    assert not disagreements, "\n".join(disagreements)
    accepted = {(f, v) for f, v, ok in verdicts if ok}
    # The forms a plant engineer writes are taken; a fraction only in quotes, negatives only where allowed.
    for value in (85, "85", "-40.5", 85.0):
        assert ("spec.condition.threshold.warning", value) in accepted
    assert ("spec.sensors[0].range.min", -40) in accepted and ("spec.condition.rateOfChange.maxPerMinute", -40) not in accepted
    assert not any(v in (85.5, "abc", True, "[1]") for _, v in accepted)


def test_the_level_order_rule_compares_numbers_and_strings_alike(cluster, crds, namespace):
    for warning, critical in ((90, "80"), ("90", 80), (90, 80)):
        rule = _example("rules.yaml")
        rule["spec"]["condition"]["threshold"] = {"warning": warning, "critical": critical}
        result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(rule), check=False)
        assert result.returncode != 0 and "less severe than the critical level" in result.stderr, (warning, critical, result.stderr)
        with pytest.raises(ManifestError, match="less severe than the critical level"):
            parse_resource(rule)
