"""A camera on a real mosquitto: JPEG frames (jpeg-frame) scored by the fire detector fire and resolve its AlertRule.

The sample plant examples/camera (a camera node, the shipped flame-colour and flicker
DetectorModel, an AnomalyScore rule) in the gateway's Pipeline and IngestService: a still
scene and a still orange object, then a flickering fire, then clear frames, from
plantwatch.sim.frames, published as JPEG; bad
frames (not a JPEG, truncated, over the node's maxBytes) are dead-lettered with their reasons.
"""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from plantwatch.inference.fire import fire_model
from plantwatch.inference.image import encode_frame
from plantwatch.inference.oip import InferenceServer
from plantwatch.inference.plant_scorers import plant_scorers, remote_scorers
from plantwatch.inference.slot import ModelSlot
from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline, load_gateway_plant
from plantwatch.ingest.runner import IngestService
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.sim.frames import frame, sequence
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import ROOT
from tests.integration.test_notify_exactly_once import wait_until

TOPIC = "cameras/hall-1/cam-hall-1/frame"


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


def frames(kinds: list[str], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_frame(frame(kind, rng)) for kind in kinds]


def seq(kind: str, n: int, seed: int) -> list[bytes]:
    return [encode_frame(f) for f in sequence(kind, np.random.default_rng(seed), n)]


def stamped(jpegs: list[bytes], t0: float) -> list[bytes]:
    """The frames as the camera sends them: stamped one second apart from `t0`."""
    return [encode("jpeg-frame", "cam-hall-1", t0 + i, {"frame": f}) for i, f in enumerate(jpegs)]


def test_fire_frames_fire_the_rule_and_clear_frames_resolve_it_bad_frames_dead_lettered(tmp_path, broker):
    plant = load_gateway_plant(str(ROOT / "examples" / "camera"))
    scorers, problems = plant_scorers(plant)
    assert problems == [] and [s.detector for s in scorers] == ["fire"]
    store = SqliteStore(tmp_path / "p.db")
    pipeline = Pipeline(plant, store, scorers=scorers)
    service = IngestService(pipeline, broker.url, client_id="camera-gw")
    clear = seq("plain", 2, 1) + seq("orange_object", 5, 2)  # flame coloured, but still: no alarm
    fire = seq("fire", 6, 3)
    after = frames(["plain", "bright", "red_object"], 3)
    good = stamped(clear + fire + after, time.time() - 60)
    bad = [b"not a jpeg at all", fire[0][: len(fire[0]) // 2], b"\xff\xd8\xff" + b"\0" * 300_000]
    service.start()
    pub = Publisher(broker.url)
    pub.start()
    try:
        for message in good + bad:
            pub.publish(TOPIC, message)
        wait_until(lambda: pipeline.messages == len(good) + len(bad), "every frame processed")
    finally:
        pub.stop()
        service.stop()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        scores = [v for (v,) in conn.execute("SELECT value FROM readings WHERE sensor = 'fire' ORDER BY ts")]
        sizes = [v for (v,) in conn.execute("SELECT value FROM readings WHERE sensor = 'frame' ORDER BY ts")]
        letters = conn.execute("SELECT reason, detail FROM dead_letters WHERE topic = ? ORDER BY id", (TOPIC,)).fetchall()
        events = conn.execute("SELECT state FROM alert_events WHERE rule = 'fire-in-hall-1' ORDER BY ts").fetchall()
    assert sizes == [float(len(m)) for m in good]
    assert len(scores) == len(good)
    # The fire's first frame has no flicker behind it yet (the frames before were still): alarmed from its second on.
    assert max(scores[: len(clear) + 1]) < 0.5 < min(scores[len(clear) + 1 : len(clear) + len(fire)])
    assert max(scores[len(clear) + len(fire) :]) < 0.5
    assert [s for (s,) in events] == ["firing", "resolved"]
    assert [reason for reason, _ in letters] == ["malformed", "malformed", "oversized"], letters
    assert "not a JPEG" in letters[0][1] and "truncated" in letters[1][1] and "maxBytes is 262144" in letters[2][1]


def test_the_cluster_gateway_scores_frames_through_the_inference_service_as_in_process(tmp_path):
    """`plantwatch serve ingest --score-url`'s scorers: the JPEGs go to the served fire model, scores as in process."""
    plant = load_gateway_plant(str(ROOT / "examples" / "camera"))
    (tmp_path / "fire.onnx").write_bytes(fire_model())
    slot = ModelSlot("fire", tmp_path / "fire.onnx")
    slot.check()
    server = InferenceServer({"fire": slot}, 0)
    server.start()
    try:
        remote, problems = remote_scorers(plant, f"http://127.0.0.1:{server.port}", wait_s=10.0)
        assert problems == [] and [s.detector for s in remote] == ["fire"]
        local, _ = plant_scorers(plant)
        t0 = time.time() - 60
        messages = stamped(frames(["plain", "fire", "lamp", "fire_small"], 4) + seq("orange_object", 4, 5), t0)
        scores = {}
        for name, scorers in (("remote", remote), ("local", local)):
            pipeline = Pipeline(plant, SqliteStore(tmp_path / f"{name}.db"), scorers=scorers)
            pipeline.process([(TOPIC, m) for m in messages], t0 + 10)  # one batch: one model call for the eight frames
            with sqlite3.connect(tmp_path / f"{name}.db") as conn:
                scores[name] = [v for (v,) in conn.execute("SELECT value FROM readings WHERE sensor = 'fire' ORDER BY ts")]
    finally:
        server.stop()
    assert len(scores["remote"]) == len(messages)
    np.testing.assert_allclose(scores["remote"], scores["local"], atol=1e-6)
    assert scores["remote"][1] > 0.5 > max(scores["remote"][0], *scores["remote"][5:])  # the still orange object gated
