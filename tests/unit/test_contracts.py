"""The contracts agree with the CRDs they name, and their readers read what their writers write."""

from __future__ import annotations

import json

import pytest
import yaml

from plantwatch.contracts import model_card
from plantwatch.contracts.names import ALERT_RULE, API_VERSION, DETECTOR_MODEL, EXECUTION_PROVIDERS, GROUP, SENSOR_NODE, VERSION
from plantwatch.contracts.times import iso, parse_timestamp
from tests.conftest import ROOT


def _crd(kind: str) -> dict:
    plural = kind.lower() + "s"
    return yaml.safe_load((ROOT / "crds" / f"{plural}.{GROUP}.yaml").read_text())


@pytest.mark.parametrize("kind", [SENSOR_NODE, ALERT_RULE, DETECTOR_MODEL])
def test_group_version_and_kinds_are_the_crds(kind):
    crd = _crd(kind)
    assert crd["spec"]["group"] == GROUP and crd["spec"]["names"]["kind"] == kind
    assert [v["name"] for v in crd["spec"]["versions"] if v["served"]] == [VERSION]
    assert API_VERSION == f"{GROUP}/{VERSION}"


def test_execution_providers_are_the_crds_enum():
    schema = _crd(DETECTOR_MODEL)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert tuple(schema["properties"]["spec"]["properties"]["executionProvider"]["enum"]) == EXECUTION_PROVIDERS


def test_times_round_trip_and_refuse_what_is_not_a_time():
    assert iso(1767254400) == "2026-01-01T08:00:00Z"
    assert parse_timestamp(iso(1767254400.25)) == 1767254400.25
    assert parse_timestamp("2026-01-01T08:00:00") == 1767254400  # naive is UTC
    for bad in (True, float("nan"), None):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_a_card_reads_back_as_written(tmp_path):
    card = model_card.card(
        recipe={"name": "envelope"},
        channels=["temperature", "vibration"],
        feature_names=["temperature:level"],
        window={"short": 10, "long": 120, "noise": 30, "kinds": ["level"]},
        sha256="ab" * 32,
        alarm={"threshold": 2.0, "ewma_span": 3.0},
        train_rows=400,
        source="rec.csv",
        validation={},
    )
    model_card.write(tmp_path, card)
    assert model_card.read(tmp_path) == card == model_card.loads(model_card.dumps(card))
    assert model_card.model_sha256(card) == "ab" * 32 and model_card.history(card) == 121
    assert json.loads((tmp_path / "model-card.json").read_text())["model"]["file"] == "model.onnx"


def test_an_unreadable_card_says_which_file(tmp_path):
    with pytest.raises(ValueError, match="model-card.json"):
        model_card.read(tmp_path)
    with pytest.raises(TypeError, match="model.sha256"):
        model_card.model_sha256({"model": {"sha256": 1}})
