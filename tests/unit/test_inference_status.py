"""The inference service's status fields (pure): ModelValid from the verdict, and what is really served."""

from __future__ import annotations

from plantwatch.inference.slot import ModelSlot, Verdict
from plantwatch.inference.status import model_valid_condition, served_status
from plantwatch.inference.zscore import zscore_model


def test_last_transition_time_moves_only_when_the_status_flips():
    loaded = model_valid_condition(Verdict(True, "ModelLoaded", "serving"), None, 3, "t1")
    assert loaded == {
        "type": "ModelValid",
        "status": "True",
        "reason": "ModelLoaded",
        "message": "serving",
        "lastTransitionTime": "t1",
        "observedGeneration": 3,
    }
    reloaded = model_valid_condition(Verdict(True, "ModelLoaded", "serving another"), loaded, 3, "t2")
    assert reloaded["lastTransitionTime"] == "t1"
    refused = model_valid_condition(Verdict(False, "InvalidModel", "not ONNX"), reloaded, 4, "t3")
    assert (refused["status"], refused["lastTransitionTime"], refused["observedGeneration"]) == ("False", "t3", 4)


def test_status_shows_the_served_model_and_its_real_provider(tmp_path):
    (tmp_path / "model.onnx").write_bytes(zscore_model([0.0] * 3, [1.0] * 3))
    slot = ModelSlot("m", tmp_path / "model.onnx", provider="tensorrt")
    assert served_status(slot, None, 1, "t0") == {
        "conditions": [
            {
                "type": "ModelValid",
                "status": "False",
                "reason": "NotLoaded",
                "message": "no model loaded yet",
                "lastTransitionTime": "t0",
                "observedGeneration": 1,
            }
        ]
    }
    slot.check()
    status = served_status(slot, None, 1, "t1")
    assert status["activeProvider"] == slot.model.active_provider  # cpu here: the fallback, not the request
    assert status["modelSha256"] == slot.model.sha256
    assert status["signature"] == {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }
    slot.close()
