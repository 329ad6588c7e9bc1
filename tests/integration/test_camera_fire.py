"""A camera on a real mosquitto: JPEG frames (jpeg-frame) scored by the fire detector fire and resolve its AlertRule.

The sample plant examples/camera (a camera node, the shipped flame-colour DetectorModel,
an AnomalyScore rule) in the gateway's Pipeline and IngestService: no-fire frames, then
fire frames, then no-fire frames from plantwatch.sim.frames, published as JPEG; bad
frames (not a JPEG, truncated, over the node's maxBytes) are dead-lettered with their reasons.
"""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from plantwatch.inference.image import encode_frame
from plantwatch.inference.plant_scorers import plant_scorers
from plantwatch.ingest.pipeline import Pipeline, load_gateway_plant
from plantwatch.ingest.runner import IngestService
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.sim.frames import frame
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import ROOT

TOPIC = "cameras/hall-1/cam-hall-1/frame"


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


def frames(kinds: list[str], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_frame(frame(kind, rng)) for kind in kinds]


def test_fire_frames_fire_the_rule_and_clear_frames_resolve_it_bad_frames_dead_lettered(tmp_path, broker):
    plant = load_gateway_plant(str(ROOT / "examples" / "camera"))
    scorers, problems = plant_scorers(plant)
    assert problems == [] and [s.detector for s in scorers] == ["fire"]
    store = SqliteStore(tmp_path / "p.db")
    pipeline = Pipeline(plant, store, scorers=scorers)
    service = IngestService(pipeline, broker.url, client_id="camera-gw")
    clear = frames(["plain", "red_light", "lamp", "red_object", "dark"], 1)
    fire = frames(["fire", "fire_dark", "fire_bright", "fire"], 2)
    after = frames(["plain", "bright", "red_object"], 3)
    good = clear + fire + after
    bad = [b"not a jpeg at all", fire[0][: len(fire[0]) // 2], b"\xff\xd8\xff" + b"\0" * 300_000]
    service.start()
    pub = Publisher(broker.url)
    pub.start()
    try:
        for i, message in enumerate(good):
            pub.publish(TOPIC, message)
            wait_until(lambda i=i: pipeline.messages == i + 1)  # one frame a batch: each frame its own receive time
            time.sleep(0.02)
        for message in bad:
            pub.publish(TOPIC, message)
        wait_until(lambda: pipeline.messages == len(good) + len(bad))
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
    assert max(scores[: len(clear)]) < 0.5 < min(scores[len(clear) : len(clear) + len(fire)])
    assert max(scores[len(clear) + len(fire) :]) < 0.5
    assert [s for (s,) in events] == ["firing", "resolved"]
    assert [reason for reason, _ in letters] == ["malformed", "malformed", "oversized"], letters
    assert "not a JPEG" in letters[0][1] and "truncated" in letters[1][1] and "maxBytes is 262144" in letters[2][1]
