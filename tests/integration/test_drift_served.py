"""Drift through the real inference server: a trained model's card carries its training distribution, and the
service reports status.drift and Drifted for the rows it served."""

from __future__ import annotations

import numpy as np

from plantwatch.contracts import model_card
from plantwatch.detect import bundle
from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe
from plantwatch.features import FeatureSpec, window_features
from plantwatch.inference.client import RemoteModel
from plantwatch.inference.drift import DRIFTED
from plantwatch.inference.oip import InferenceServer
from plantwatch.inference.slot import ModelSlot
from plantwatch.inference.status import served_status


def _recording(rows: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([45 + rng.normal(0, 0.3, rows), 1.5 + shift + rng.normal(0, 0.05, rows)])


def test_served_rows_like_training_are_not_drifted_and_a_shifted_vibration_is(tmp_path):
    train = _recording(1200, 0)
    bundle.save(tmp_path / "m", fit_recipe(RECIPES[DEFAULT_RECIPE], train), ("temperature", "vibration"), 1200, "test", train)
    card = model_card.read(tmp_path / "m")
    assert card["distribution"]["rows"] == 1200 - FeatureSpec(**model_card.window(card)).warmup
    assert list(card["distribution"]["features"]) == card["features"]["names"]

    statuses = {}
    for case, shift in (("like", 0.0), ("shifted", 0.4)):
        served = _recording(1500, 1, shift)
        features = window_features(served, FeatureSpec(**model_card.window(card))).astype(np.float32)
        slot = ModelSlot("pump-wear", tmp_path / "m" / "model.onnx")
        slot.check()
        server = InferenceServer({"pump-wear": slot}, 0)
        server.start()
        try:
            remote = RemoteModel(f"http://127.0.0.1:{server.port}", "pump-wear")
            for start in range(100, len(features), 50):  # the stream's requests: a few rows at a time
                remote(features[start : start + 50])
            statuses[case] = served_status(slot, None, 1, "t")
        finally:
            server.stop()
            slot.close()

    drifted = {s["type"]: s for s in statuses["like"]["conditions"]}["Drifted"]
    assert (drifted["status"], drifted["reason"]) == ("False", "LikeTraining"), drifted["message"]
    assert statuses["like"]["drift"]["rows"] == 1400 and statuses["like"]["drift"]["threshold"] == DRIFTED
    drifted = {s["type"]: s for s in statuses["shifted"]["conditions"]}["Drifted"]
    assert drifted["status"] == "True", drifted["message"]
    assert any(name.startswith("vibration") for name in statuses["shifted"]["drift"]["drifted"])
    assert not any(name.startswith("temperature") for name in statuses["shifted"]["drift"]["drifted"])
