"""Status conditions follow the Kubernetes API conventions and fit the CRDs' condition schema."""

from __future__ import annotations

import copy
from datetime import datetime

import jsonschema
import pytest
import yaml

from plantwatch.contracts.conditions import condition_status, set_condition
from plantwatch.contracts.times import now_rfc3339
from tests.conftest import ROOT

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z"


def test_a_new_condition_starts_its_transition_now():
    [ready] = set_condition(None, "Ready", "True", "Rendered", "in the gateway config abc", 1, T0)
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "Rendered",
        "message": "in the gateway config abc",
        "observedGeneration": 1,
        "lastTransitionTime": T0,
    }


def test_same_status_keeps_the_transition_time_but_takes_the_rest():
    first = set_condition(None, "Ready", "True", "Rendered", "a", 1, T0)
    [again] = set_condition(first, "Ready", "True", "Rendered", "b", 2, T1)
    assert again["lastTransitionTime"] == T0
    assert (again["message"], again["observedGeneration"]) == ("b", 2)


def test_a_new_reason_alone_is_no_transition():
    first = set_condition(None, "Available", "False", "ReplicasNotReady", "0/1", 1, T0)
    [still] = set_condition(first, "Available", "False", "SourceNotFound", "no model", 1, T1)
    assert (still["reason"], still["lastTransitionTime"]) == ("SourceNotFound", T0)


@pytest.mark.parametrize("then", ["False", "Unknown"])
def test_a_status_change_moves_the_transition_time(then):
    first = set_condition(None, "Ready", "True", "Rendered", "a", 1, T0)
    [flipped] = set_condition(first, "Ready", then, "InvalidSpec", "c", 2, T2)
    assert flipped["lastTransitionTime"] == T2


def test_other_conditions_are_kept_and_the_list_is_keyed_by_type():
    conditions = set_condition(None, "Ready", "True", "Rendered", "a", 1, T0)
    conditions = set_condition(conditions, "Online", "Unknown", "NoData", "no data-plane report yet", 1, T0)
    conditions = set_condition(conditions, "Ready", "True", "Rendered", "b", 2, T1)
    assert [c["type"] for c in conditions] == ["Online", "Ready"]
    assert condition_status(conditions, "Online") == "Unknown"
    assert condition_status(conditions, "Available") is None


def test_the_input_is_not_changed():
    first = set_condition(None, "Ready", "True", "Rendered", "a", 1, T0)
    before = copy.deepcopy(first)
    set_condition(first, "Ready", "False", "InvalidSpec", "b", 2, T1)
    assert first == before


def test_without_a_generation_there_is_no_observed_generation():
    [condition] = set_condition([], "Ready", "True", "Rendered", "a", None, T0)
    assert "observedGeneration" not in condition


def test_now_is_rfc3339_utc_in_whole_seconds():
    now = now_rfc3339()
    assert now.endswith("Z") and "." not in now
    assert datetime.fromisoformat(now.replace("Z", "+00:00")).utcoffset().total_seconds() == 0


@pytest.mark.parametrize("crd", sorted((ROOT / "crds").glob("*.yaml")), ids=lambda p: p.name.split(".")[0])
def test_conditions_fit_every_crds_status_schema(crd):
    """What the operator writes is what the API server's structural schema accepts."""
    version = next(v for v in yaml.safe_load(crd.read_text())["spec"]["versions"] if v.get("storage"))
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    conditions = set_condition(None, "Ready", "True", "Rendered", "a", 3, T0)
    conditions = set_condition(conditions, "Online", "Unknown", "NoData", "b", 3, T1)
    jsonschema.validate(conditions, status["conditions"])
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
