"""Shadow through the real inference server: the serving model answers, the shadow is compared on the same rows."""

from __future__ import annotations

import shutil

import numpy as np

from plantwatch.contracts import model_card
from plantwatch.detect import bundle
from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe
from plantwatch.features import FeatureSpec, window_features
from plantwatch.inference.client import RemoteModel
from plantwatch.inference.oip import InferenceServer
from plantwatch.inference.slot import ModelSlot
from plantwatch.inference.status import served_status

CHANNELS = ("temperature", "vibration")


def _recording(rows: int, seed: int, vibration_sd: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([45 + rng.normal(0, 0.3, rows), 1.5 + rng.normal(0, vibration_sd, rows)])


def _serve_with_shadow(serving_dir, shadow_dir, features: np.ndarray) -> tuple[dict, np.ndarray]:
    slot = ModelSlot("pump-wear", serving_dir / "model.onnx")
    slot.check()
    slot.shadow = ModelSlot("pump-wear-shadow", shadow_dir / "model.onnx")
    slot.shadow.check()
    server = InferenceServer({"pump-wear": slot}, 0)
    server.start()
    try:
        remote = RemoteModel(f"http://127.0.0.1:{server.port}", "pump-wear")
        answered = np.concatenate([remote(features[start : start + 50]) for start in range(100, len(features), 50)])
        return served_status(slot, None, 1, "t"), answered
    finally:
        server.stop()
        slot.close()
        slot.shadow.close()


def test_a_copy_in_shadow_is_promotable_and_a_model_alarming_more_is_not(tmp_path):
    train = _recording(1200, 0)
    bundle.save(tmp_path / "serving", fit_recipe(RECIPES[DEFAULT_RECIPE], train), CHANNELS, 1200, "test", train)
    shutil.copytree(tmp_path / "serving", tmp_path / "copy")
    # Trained on a quieter vibration: the served rows' normal noise is out of its range, so it alarms more.
    quiet = _recording(1200, 2, vibration_sd=0.01)
    bundle.save(tmp_path / "jumpy", fit_recipe(RECIPES[DEFAULT_RECIPE], quiet), CHANNELS, 1200, "test", quiet)
    card = model_card.read(tmp_path / "serving")
    features = window_features(_recording(1500, 1), FeatureSpec(**model_card.window(card))).astype(np.float32)

    same, answered = _serve_with_shadow(tmp_path / "serving", tmp_path / "copy", features)
    promotable = {c["type"]: c for c in same["conditions"]}["ShadowPromotable"]
    assert (promotable["status"], promotable["reason"]) == ("True", "Promotable"), promotable["message"]
    assert same["shadow"]["rows"] == 1400 and same["shadow"]["disagreement"] == 0.0

    jumpy, answered_beside_jumpy = _serve_with_shadow(tmp_path / "serving", tmp_path / "jumpy", features)
    promotable = {c["type"]: c for c in jumpy["conditions"]}["ShadowPromotable"]
    assert (promotable["status"], promotable["reason"]) == ("False", "MoreAlarms"), promotable["message"]
    assert jumpy["shadow"]["shadowAlarmRate"] > jumpy["shadow"]["servingAlarmRate"] + 0.01
    assert jumpy["shadow"]["modelSha256"] == model_card.model_sha256(model_card.read(tmp_path / "jumpy"))
    np.testing.assert_array_equal(answered_beside_jumpy, answered)  # the shadow never answers
