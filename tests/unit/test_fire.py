"""The shipped fire detector: its graph against numpy, and its precision and recall on frames and sequences it was not tuned on."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from plantwatch.inference.fire import fire_model, flame_mask_reference, flame_share_reference, flicker_gate, flicker_ratio
from plantwatch.inference.frame_scorer import FrameScorer, local_frames
from plantwatch.inference.image import FrameError, encode_frame, preprocess, preprocess_batch
from plantwatch.readings import Reading
from plantwatch.sim.frames import CLEAR_KINDS, FIRE_KINDS, FPS, labelled_frames, labelled_sequences


def _outputs(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
    out, mask = session.run(None, {"frames": frames})
    assert out.shape == (len(frames), 1) and mask.shape == (len(frames), 1, 16, 16)
    return out[:, 0], mask


def _scores(frames: np.ndarray) -> np.ndarray:
    return _outputs(frames)[0]


def test_graph_equals_its_numpy_reference():
    frames = preprocess_batch([encode_frame(f) for _, _, f in labelled_frames(24, seed=5)], (64, 64))
    share = flame_share_reference(frames)
    expected = 1 / (1 + np.exp(-(share - 0.006) * (4.0 / 0.006)))
    scores, masks = _outputs(frames)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    np.testing.assert_allclose(masks, flame_mask_reference(frames), atol=1e-4)


def _stream(sequences, scorer: FrameScorer) -> list[np.ndarray]:
    """The sequences one after another from one camera, each one batch of stamped frames: the scores of each."""
    out, t = [], 0.0
    for _, _, frames in sequences:
        readings = [(Reading("cam", "frame", "image", 1.0, (t := t + 1 / FPS)), encode_frame(f)) for f in frames]
        out.append(np.asarray([r.value for r in scorer.score_frames(readings)]))
    return out


def test_the_camera_example_ships_this_graph():
    from plantwatch.inference.plant_scorers import config_map_files
    from plantwatch.plant.load import load_plant
    from tests.conftest import ROOT

    files = config_map_files(load_plant(ROOT / "examples/camera/camera.yaml"), "fire-model")
    assert files is not None and files["model.onnx"] == fire_model(), "regenerate examples/camera/camera.yaml's model.onnx"


def test_flicker_ratio_and_gate():
    flame = np.zeros((4, 4))
    flame[1:3, 1:3] = 1.0
    moved = np.roll(flame, 1, axis=1)
    assert flicker_ratio([flame]) is None and flicker_gate(None) == 1.0  # a camera's first frame: colour alone
    assert flicker_ratio([flame, flame, flame]) == 0.0 and flicker_gate(0.0) < 0.01  # still: an orange object
    assert flicker_ratio([np.zeros((4, 4)), np.zeros((4, 4)), flame]) == 0.0  # it only just came into view
    assert flicker_ratio([flame, moved, flame]) == 0.5 and flicker_gate(0.5) > 0.99
    assert flicker_ratio([flame, flame, np.zeros((4, 4))]) == 0.0  # no flame colour now: nothing to gate


def test_flicker_on_held_out_sequences_keeps_fires_and_drops_still_orange_things():
    # FLICKER_MIN and FLICKER_STEEPNESS were chosen on sequences of seed 1; seed 2 is only measured (bench/images.py
    # measured on 260 sequences: per sequence precision 0.603 -> 0.987 at recall 0.95, per frame 0.579 -> 0.997
    # with recall 0.849 -> 0.777). Here 13 kinds x 8 sequences of 12 frames at 4 fps, as JPEG.
    sequences = labelled_sequences(104, seed=2)
    session = ort.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
    run = local_frames(session, "frames", (64, 64))
    gated = _stream(sequences, FrameScorer("fire", ["cam"], "frame", run))
    colour = _stream(sequences, FrameScorer("fire", ["cam"], "frame", lambda jpegs: {"fire": run(jpegs)["fire"]}))
    truth = np.asarray([fire for _, fire, _ in sequences])
    kinds = np.asarray([k for k, _, _ in sequences])

    def figures(scores):
        alarmed = np.asarray([(s > 0.5).any() for s in scores])
        frames, frame_truth = np.concatenate(scores) > 0.5, np.repeat(truth, [len(s) for s in scores])
        return (
            (alarmed & truth).sum() / alarmed.sum(),
            (alarmed & truth).sum() / truth.sum(),
            (frames & frame_truth).sum() / frames.sum(),
            (frames & frame_truth).sum() / frame_truth.sum(),
            alarmed,
        )

    seq_p, seq_r, frame_p, frame_r, alarmed = figures(gated)
    colour_p, colour_r, _, colour_frame_r, colour_alarmed = figures(colour)
    assert seq_p >= 0.95 and seq_r >= 0.9 and frame_p >= 0.95 and frame_r >= 0.7, (seq_p, seq_r, frame_p, frame_r)
    assert seq_r == colour_r and frame_r >= colour_frame_r - 0.1  # flicker loses no fire, and at most a frame of each
    assert colour_p < 0.7 and colour_alarmed[np.isin(kinds, ["orange_object", "sunset"])].all()
    assert not alarmed[np.isin(kinds, ["orange_object", "sunset", "warm_light"])].any()


def test_flicker_state_survives_a_snapshot_and_restore():
    kind, _, frames = labelled_sequences(12, seed=3)[-1]
    assert kind == "orange_object"  # flame coloured and still: only the kept masks tell it from a fire
    session = ort.InferenceSession(fire_model(), providers=["CPUExecutionProvider"])
    run = local_frames(session, "frames", (64, 64))
    readings = [(Reading("cam", "frame", "image", 1.0, float(i)), encode_frame(f)) for i, f in enumerate(frames)]
    whole = FrameScorer("fire", ["cam"], "frame", run)
    expected = [r.value for r in whole.score_frames(readings)]
    before = FrameScorer("fire", ["cam"], "frame", run)
    before.score_frames(readings[:5])
    moved = FrameScorer("fire", ["cam", "other"], "frame", run)  # another replica, after a shard move
    moved.restore(json.loads(json.dumps(before.snapshot())))
    np.testing.assert_allclose([r.value for r in moved.score_frames(readings[5:])], expected[5:], atol=1e-3)
    cold = FrameScorer("fire", ["cam"], "frame", run)
    assert max(expected[1:]) < 0.5 < cold.score_frames(readings[5:6])[0].value  # without the masks: colour alone


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
