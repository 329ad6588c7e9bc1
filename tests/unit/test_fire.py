"""The shipped fire detector: its graph against numpy, and its precision and recall on frames it was not tuned on."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from plantwatch.inference.fire import fire_model, flame_share_reference
from plantwatch.inference.image import FrameError, encode_frame, preprocess, preprocess_batch
from plantwatch.sim.frames import CLEAR_KINDS, FIRE_KINDS, labelled_frames


def _scores(frames: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"frames": frames})
    assert out.shape == (len(frames), 1)
    return out[:, 0]


def test_graph_equals_its_numpy_reference():
    frames = preprocess_batch([encode_frame(f) for _, _, f in labelled_frames(24, seed=5)], (64, 64))
    share = flame_share_reference(frames)
    expected = 1 / (1 + np.exp(-(share - 0.006) * (4.0 / 0.006)))
    np.testing.assert_allclose(_scores(frames), expected, atol=1e-4)


def test_precision_and_recall_on_held_out_frames():
    # Thresholds were chosen on seed 1; seed 2 is only measured. 12 kinds x 30 frames, sent as JPEG.
    labelled = labelled_frames(360, seed=2)
    fired = _scores(preprocess_batch([encode_frame(f) for _, _, f in labelled], (64, 64))) > 0.5
    truth = np.asarray([fire for _, fire, _ in labelled])
    kinds = np.asarray([k for k, _, _ in labelled])
    precision = (fired & truth).sum() / fired.sum()
    recall = (fired & truth).sum() / truth.sum()
    assert recall >= 0.9 and precision >= 0.7, (precision, recall)
    for kind in FIRE_KINDS[:2] + FIRE_KINDS[3:]:  # flames of 4 % of the frame and more, in any light
        assert fired[kinds == kind].all(), kind
    for kind in ("plain", "dark", "bright", "red_object", "red_light", "lamp"):
        assert not fired[kinds == kind].any(), kind
    # The known limit of a colour rule: orange objects look like flames (module doc of fire.py).
    assert fired[kinds == "orange_object"].mean() > 0.5
    assert set(kinds) == set(FIRE_KINDS + CLEAR_KINDS)


def test_frames_are_decoded_resized_and_normalised():
    rgb = np.zeros((48, 80, 3), np.uint8)
    rgb[..., 0] = 255
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    x = preprocess(png.getvalue(), (32, 32))
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0)
    np.testing.assert_allclose(x[1:], 0.0)
    assert preprocess(encode_frame(rgb), (48, 80)).shape == (3, 48, 80)


def test_unreadable_frames_are_refused_in_words():
    with pytest.raises(FrameError, match=r"frame 1: not a readable JPEG or PNG image \(5 bytes\)"):
        preprocess_batch([encode_frame(np.zeros((8, 8, 3), np.uint8)), b"hello"], (8, 8))
    bmp = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bmp, "BMP")
    with pytest.raises(FrameError, match="a BMP image; frames must be JPEG or PNG"):
        preprocess(bmp.getvalue(), (8, 8))


def test_a_detector_reading_the_wrong_kind_of_sensor_is_refused_naming_it(tmp_path):
    # The camera plant as shipped, and the same plant with its frame sensor retyped (an image model
    # reading numbers) and with a temperature sensor scored by the fire model's graph.
    from plantwatch.inference.plant_scorers import plant_scorers
    from plantwatch.plant.load import load_plant
    from tests.conftest import ROOT

    text = (ROOT / "examples/camera/camera.yaml").read_text()
    assert "{name: frame, type: image, unit: bytes}" in text
    scorers, problems = plant_scorers(load_plant(ROOT / "examples/camera/camera.yaml"))
    assert [s.detector for s in scorers] == ["fire"] and problems == []
    retyped = text.replace("{name: frame, type: image, unit: bytes}", "{name: frame, type: temperature, unit: C}")
    (tmp_path / "plant.yaml").write_text(retyped)
    scorers, problems = plant_scorers(load_plant(tmp_path / "plant.yaml"))
    assert scorers == [] and [p.reason for p in problems] == ["SensorTypeMismatch"]
    assert "takes images, so its sensor must be of type image; got cam-hall-1/frame (temperature)" in str(problems[0])
