"""jpeg-frame: what a camera's message may be, how it is stamped, and how its frames are scored."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from plantwatch.inference.frame_scorer import FrameScorer
from plantwatch.inference.image import encode_frame
from plantwatch.inference.plant_scorers import plant_scorers
from plantwatch.inference.stream import ScoringUnavailable
from plantwatch.ingest.codecs import DecodeError
from plantwatch.ingest.formats import decode, encode
from plantwatch.ingest.formats.jpeg_frame import MAX_SIDE
from plantwatch.ingest.pipeline import Pipeline, load_gateway_plant
from plantwatch.readings import Reading
from plantwatch.sim.fleet import Fleet
from plantwatch.sim.frames import frame
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import ROOT

CAMERA = ROOT / "examples" / "camera"
TOPIC = "cameras/hall-1/cam-hall-1/frame"
NOW = 1767254400.0


def jpeg(kind: str = "plain", seed: int = 0) -> bytes:
    return encode_frame(frame(kind, np.random.default_rng(seed)))


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    "payload, reason, says",
    [
        (b'{"frame": 1}', "malformed", "not a JPEG"),
        (png(), "malformed", "not a JPEG"),
        (jpeg()[:-200], "malformed", "truncated"),
        (b"\xff\xd8\xff\xe0 garbage \xff\xd9", "malformed", "Pillow cannot read"),
        (encode_frame(np.zeros((8, MAX_SIDE + 1, 3), np.uint8), quality=10), "oversized", f"up to {MAX_SIDE}x{MAX_SIDE}"),
    ],
)
def test_what_is_not_one_whole_jpeg_of_a_bounded_size_is_refused_with_its_reason(payload, reason, says):
    with pytest.raises(DecodeError) as err:
        decode("jpeg-frame", payload)
    assert err.value.reason == reason and says in err.value.detail


def test_a_frame_is_stamped_by_its_comment_else_on_receipt_and_a_restamp_replaces_the_stamp():
    plain = jpeg()
    assert decode("jpeg-frame", plain)[0].ts is None
    once = encode("jpeg-frame", "cam-hall-1", NOW - 5.5, {"frame": plain})
    twice = encode("jpeg-frame", "cam-hall-1", NOW - 1.25, {"frame": once})
    assert decode("jpeg-frame", once)[0].ts == NOW - 5.5 and decode("jpeg-frame", twice)[0].ts == NOW - 1.25
    assert len(twice) == len(once)  # one stamp, not two
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(twice))), np.asarray(Image.open(io.BytesIO(plain))))


def test_unstamped_frames_of_one_batch_share_its_time_so_all_but_the_first_are_conflicts(tmp_path):
    plant = load_gateway_plant(str(CAMERA))
    pipeline = Pipeline(plant, SqliteStore(tmp_path / "p.db"), now=NOW)
    pipeline.process([(TOPIC, jpeg("plain", 1)), (TOPIC, jpeg("lamp", 2)), (TOPIC, jpeg("dark", 3))], NOW)
    assert pipeline.readings_stored == 1 and pipeline.rejected == {"conflict": 2}


def test_an_image_detector_scores_each_frame_in_one_call_and_skips_what_it_cannot_read(tmp_path):
    plant = load_gateway_plant(str(CAMERA))
    (scorer,), problems = plant_scorers(plant)
    assert problems == [] and isinstance(scorer, FrameScorer) and scorer.nodes == {"cam-hall-1"}
    fire, clear = jpeg("fire", 4), jpeg("plain", 5)
    broken = clear[:300] + bytes(len(clear) - 302) + clear[-2:]  # its header reads, its pixels do not
    frames = [(Reading("cam-hall-1", "frame", "image", float(len(f)), NOW + i), f) for i, f in enumerate([fire, broken, clear])]
    scores = scorer.score_frames(frames)
    assert [(s.node, s.sensor, s.type, s.ts) for s in scores] == [
        ("cam-hall-1", "fire", "anomaly_score", NOW),
        ("cam-hall-1", "fire", "anomaly_score", NOW + 2),
    ]
    assert scores[0].value > 0.5 > scores[1].value and scorer.skipped == 1
    assert scorer.score_frames([(Reading("other-node", "frame", "image", 1.0, NOW), fire)]) == []  # not a node it selects


def test_an_unreachable_model_skips_the_batch_and_backs_off():
    calls = []

    def unreachable(jpegs):
        calls.append(len(jpegs))
        raise ScoringUnavailable("connection refused")

    scorer = FrameScorer("fire", ["cam"], "frame", unreachable, backoff_s=60.0)
    frames = [(Reading("cam", "frame", "image", 1.0, NOW), jpeg())]
    assert scorer.score_frames(frames) == [] and scorer.score_frames(frames) == []
    assert calls == [1] and scorer.skipped == 2


def test_the_simulator_sends_a_camera_fire_free_stamped_frames_and_no_faults_made_of_values():
    plant = load_gateway_plant(str(CAMERA))
    fleet = Fleet(plant, "mqtt://127.0.0.1:1", client_id="camera-sim", seed=3)  # not started: nothing connects
    (camera,) = plant.nodes
    (topic, message), *_ = fleet.messages(camera, 0.0, NOW)
    (sample,) = decode("jpeg-frame", message)
    assert topic == TOPIC and sample.ts == NOW
    (scorer,), _ = plant_scorers(plant)
    reading = Reading("cam-hall-1", "frame", "image", float(len(message)), NOW)
    assert scorer.score_frames([(reading, message)])[0].value < 0.5
    for fleet.sent_bad in range(5):  # the bad messages' faults are values, which a camera sends none of
        assert fleet.bad_message(NOW)[0] != TOPIC
