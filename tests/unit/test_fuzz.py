"""No input can crash the gateway: 100k generated payloads, every format, every node.

Seeded, so a failure reproduces: the assertion message names the seed index and payload.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import replace
from pathlib import Path

from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.formats import FORMATS
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.validate import REASONS, CompiledNode, check_message
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT

VECTORS = Path(__file__).parents[1] / "vectors"
NOW = 1767254400.0
TOTAL = 100_000


def seeds() -> list[bytes]:
    vectors = [json.loads(p.read_text()) for p in VECTORS.glob("*/*.json")]
    out = [base64.b64decode(v["payload_base64"]) if "payload_base64" in v else v["payload"].encode() for v in vectors]
    out.append(sp.encode_payload(sp.Payload(1, 3, (sp.Metric("Press/Temperature", 1, 2, sp.DOUBLE, 20.5),))))
    return out


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**70, 1e308, -1e-308, rng.random() * 1e6])
    if kind == 2:
        return rng.choice(["", "NaN", "inf", "-Infinity", "2026-01-01T08:00:00Z", "\u0000", "x" * rng.randrange(50)])
    if kind == 3:
        return rng.choice(["esp32-press-01", "rpi-line1-env", "temperature", "bme280"])
    if kind == 4:
        return rng.uniform(-1e3, 1e3)
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "device_id",
        "timestamp",
        "sensors",
        "temperature_c",
        "vibration_g",
        "sensor_id",
        "sensor_type",
        "value",
        "bme280",
        "temperature",
        "id",
        "mic",
    ]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)) :][: rng.randrange(1, 20)]
        elif op == 2:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            b = b[: rng.randrange(len(b) + 1)]
    return bytes(b)


def generate(rng: random.Random, base: list[bytes]) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return mutate(rng, rng.choice(base))
    if kind == 1:
        return json.dumps(random_json(rng)).encode()
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    names = ["spindle_current", "x", "a b"]
    values = ["1", "2i", "t", '"s"', "nan", "-", "1e999"]
    fields = ",".join(f"{rng.choice(names)}={rng.choice(values)}" for _ in range(rng.randrange(3)))
    return f"m,device={rng.choice(['jetson-cell-01', 'x'])} {fields} {rng.choice(['1767254400000000000', '-5', 'abc', ''])}".encode()


def test_100k_generated_payloads_never_crash_the_gateway(tmp_path):
    plant = load_plant(EXAMPLE_PLANT)
    nodes = [CompiledNode.of(n) for n in plant.nodes]
    pipeline = Pipeline(plant, SqliteStore(":memory:"), now=NOW)
    rng = random.Random(20261122)
    base = seeds()
    reasons: set[str] = set()
    accepted = 0
    for i in range(TOTAL):
        payload = generate(rng, base)
        node = nodes[i % len(nodes)]
        try:
            readings, rejections = check_message(node, payload, NOW)
            if i % 10 == 0:  # the stateful Sparkplug path, through the pipeline itself
                topic = rng.choice(
                    ["spBv1.0/plant-a/NDATA/edge-7", "spBv1.0/plant-a/DBIRTH/edge-7/press-3", "spBv1.0/x", "spBv1.0/plant-a/NCMD/edge-7"]
                )
                pipeline.sparkplug.message(topic, payload, NOW, [])
        except Exception as exc:  # the assertion this test exists for
            raise AssertionError(f"payload #{i} for {node.name} ({node.format}) crashed: {exc!r}\n{payload!r}") from exc
        accepted += len(readings)
        for r in rejections:
            assert r.reason in REASONS, r
            reasons.add(r.reason)
    # the generator reaches deep: most reason codes are exercised, and some inputs still pass
    assert {"malformed", "missing_field", "wrong_type", "not_finite", "bad_timestamp", "no_known_sensor"} <= reasons
    assert accepted > 0


# --- a bug met by one message costs that message only ----------------------------------------

ESP32 = "sensors/hall-1/esp32-press-01/data"


def esp32(t: float, temperature: float) -> tuple[str, bytes]:
    return ESP32, json.dumps({"device_id": "esp32-press-01", "timestamp": t, "temperature_c": temperature}).encode()


def run_batch(tmp_path, batch):
    plant = load_plant(EXAMPLE_PLANT)
    sent = []
    pipeline = Pipeline(
        plant,
        SqliteStore(tmp_path / "p.db"),
        publish=lambda topic, body: sent.append(json.loads(body)),
        now=NOW,
    )
    pipeline.process(batch, NOW)
    return pipeline, sent


def test_a_decoder_that_raises_costs_only_its_message_and_logs_one_traceback(tmp_path, monkeypatch, caplog):
    real = FORMATS["esp32-json"].decode

    def buggy(payload: bytes):
        if b"66.6" in payload:
            raise KeyError("a decoder bug")
        return real(payload)

    monkeypatch.setitem(FORMATS, "esp32-json", replace(FORMATS["esp32-json"], decode=buggy))
    pipeline, sent = run_batch(tmp_path, [esp32(NOW - 3, 20.0), esp32(NOW - 2, 66.6), esp32(NOW - 1, 66.6), esp32(NOW, 21.0)])
    assert pipeline.readings_stored == 2 and pipeline.messages == 4
    assert pipeline.rejected == {"internal_error": 2}
    assert [letter["reason"] for letter in sent] == ["internal_error", "internal_error"]
    assert "KeyError in decoding and validation: 'a decoder bug'" in sent[0]["rejections"][0]["detail"]
    tracebacks = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert len(tracebacks) == 1 and "KeyError" in caplog.text  # once, not once per message


def test_a_rule_that_raises_costs_only_its_message(tmp_path, monkeypatch):
    plant = load_plant(EXAMPLE_PLANT)
    pipeline = Pipeline(plant, SqliteStore(tmp_path / "p.db"), now=NOW)
    real = pipeline.engine.on_reading

    def buggy(reading):
        if reading.value == 66.6:
            raise ZeroDivisionError("a rule bug")
        return real(reading)

    monkeypatch.setattr(pipeline.engine, "on_reading", buggy)
    p = pipeline.prepare([esp32(NOW - 2, 20.0), esp32(NOW - 1, 66.6), esp32(NOW, 21.0)], NOW)
    pipeline.commit(p)
    pipeline.finish(p)
    assert [r.value for r in p.readings] == [20.0, 21.0] and p.stored == 2
    assert p.results == {"accepted": 2, "rejected": 1}
    (dead,) = p.dead
    assert dead[2] == "internal_error" and dead[3].startswith("ZeroDivisionError in the alert rules: a rule bug")


def test_a_sparkplug_session_that_raises_costs_only_its_message(tmp_path, monkeypatch):
    def buggy(session, topic, payload):
        raise IndexError("a session bug")

    monkeypatch.setattr(sp, "apply", buggy)
    good = esp32(NOW, 20.0)
    cell = ("spBv1.0/plant-a/NDATA/edge-7", sp.encode_payload(sp.Payload(1, 0, ())))
    pipeline, sent = run_batch(tmp_path, [cell, good])
    assert pipeline.readings_stored == 1 and pipeline.rejected == {"internal_error": 1}
    assert sent[0]["topic"] == cell[0] and "IndexError" in sent[0]["rejections"][0]["detail"]
