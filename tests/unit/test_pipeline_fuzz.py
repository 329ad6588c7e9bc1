"""The whole pipeline under structure-aware fuzzing: batches of generated messages, every format.

Each example is a batch of BATCH messages for the sample plant (plus a Sparkplug B cell, and
the nodes' status topics: births, Last Wills and hostile topics and payloads among readings),
built from a per-format generator that knows the payload's structure (the right keys, and
the wrong ones, duplicated, with hostile values and timestamps, then sometimes cut or
bit-flipped), and goes through `Pipeline.prepare` → `commit` → `finish` against a real
SqliteStore in a temporary folder. Properties: nothing raises, every message is accounted
for, every refusal is a dead letter with a known reason and never `internal_error` (that
is a bug the per-message guard would hide), every stored reading is finite and within
its sensor's range, and a node's last word on its status topic is its Online state.

`make test` runs a bounded slice (FUZZ_CASES messages, default 7,000); `make fuzz` runs a
million or more (FUZZ_CASES=...). Hypothesis prints the failing batch, shrunk, and its seed.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantwatch.contracts.times import iso
from plantwatch.contracts.topics import status_topic
from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.validate import REASONS, CompiledNode
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT

SPARKPLUG_CELL = Path(__file__).parents[1] / "integration" / "plants" / "sparkplug-cell.yaml"
NOW = 1767254400.0
BATCH = 10
FORMATS = ("esp32-json", "rpi-json", "sensor-event", "change-feed", "influx-line", "sparkplug-b", "status")
#: Messages in all, shared among the formats (and the stray-topic batches).
CASES = int(os.environ.get("FUZZ_CASES", "7000"))
#: A fresh store after this many batches, so that a million messages do not grow one file without end.
STORE_BATCHES = 2000

# --- values a hostile or broken node might send -------------------------------------------

huge_ints = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**400), 10**4000])
numbers = st.one_of(
    st.floats(-1e3, 1e3),
    st.integers(-100, 30000),
    st.floats(allow_nan=True, allow_infinity=True),
    huge_ints,
    st.sampled_from([0, -0.0, 1e308, -1e-308, 5e-324]),
)
garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["NaN", "inf", "-Infinity", "1e999", "", " 12 "]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
seconds = st.floats(NOW - 400, NOW + 400)


@st.composite
def mostly(draw, sane: st.SearchStrategy, hostile: st.SearchStrategy) -> object:
    """Seven times in eight a value a working node sends: one hostile part is enough to refuse a message."""
    return draw(hostile) if draw(st.integers(0, 7)) == 0 else draw(sane)


values = mostly(st.floats(0, 60), st.one_of(numbers, garbage))
timestamps = mostly(
    st.one_of(seconds.map(iso), seconds),
    st.one_of(
        seconds.map(iso),
        seconds.map(lambda t: iso(t).replace("Z", "+05:30")),
        seconds.map(lambda t: iso(t)[:19]),  # naive: UTC
        seconds,
        seconds.map(lambda t: int(t * 1000)),
        st.just(NOW),
        st.sampled_from(
            [
                "0001-01-01T00:00:00",
                "9999-12-31T23:59:59-01:00",
                "2026-02-30T00:00:00Z",
                "yesterday",
                "",
                "2026-01-01T08:00:00\u0000Z",
                "１９７０-01-01",
            ]
        ),
        huge_ints,
        st.floats(allow_nan=True, allow_infinity=True),
        garbage,
    ),
)


def json_text(value, ascii_only: bool) -> str:
    # The standard library writes what orjson refuses (NaN, 10**4000), as a careless node might.
    try:
        return json.dumps(value, ensure_ascii=ascii_only)
    except ValueError:  # an integer over the interpreter's digit limit
        return "9" * 5000


@st.composite
def json_object(draw, pairs: list[tuple[str, object]]) -> str:
    """An object with these pairs (kept in order, duplicates kept), sometimes one repeated, with odd spacing."""
    pairs = list(pairs)
    if pairs and draw(st.integers(0, 15)) == 0:
        pairs.insert(draw(st.integers(0, len(pairs))), draw(st.sampled_from(pairs)))  # a duplicate key
    ascii_only = draw(st.booleans())
    space = draw(st.sampled_from(["", " ", "\n\t"]))
    return (
        "{"
        + f",{space}".join(
            f"{json_text(k, ascii_only)}{space}:{space}{v if isinstance(v, Raw) else json_text(v, ascii_only)}" for k, v in pairs
        )
        + "}"
    )


class Raw(str):
    """JSON text already written (a nested object)."""


def fields_of(draw, known: list[str], value_strategy=values) -> list[tuple[str, object]]:
    names = draw(st.lists(mostly(st.sampled_from(known), st.text(max_size=8)), max_size=6, unique=True))
    return [(n, draw(value_strategy)) for n in names]


def maybe_drop(draw, pairs: list[tuple[str, object]]) -> list[tuple[str, object]]:
    return [p for p in pairs if draw(st.integers(0, 30)) > 0]


@st.composite
def esp32(draw) -> bytes:
    device = draw(st.sampled_from(["esp32-press-01"] * 6 + ["esp32-press-99", ""])) if draw(st.integers(0, 9)) else draw(garbage)
    pairs = maybe_drop(draw, [("device_id", device), ("timestamp", draw(timestamps))])
    pairs += fields_of(draw, ["temperature_c", "vibration_g", "current_a", "battery_voltage"])
    return draw(json_object(draw(st.permutations(pairs)))).encode()


@st.composite
def rpi(draw) -> bytes:
    parts = []
    for part in draw(st.lists(st.sampled_from(["bme280", "mic", "x"]), max_size=3, unique=True)):
        leaves = fields_of(draw, ["temperature_c", "humidity_percent", "pressure_hpa", "noise_level_db"])
        parts.append((part, Raw(draw(json_object(leaves))) if draw(st.integers(0, 9)) else draw(values)))
    sensors = Raw(draw(json_object(parts))) if draw(st.integers(0, 9)) else draw(garbage)
    pairs = maybe_drop(draw, [("device_id", "rpi-line1-env"), ("timestamp", draw(timestamps)), ("sensors", sensors)])
    return draw(json_object(pairs)).encode()


@st.composite
def sensor_event(draw) -> bytes:
    pairs = maybe_drop(
        draw,
        [
            ("event_id", draw(st.text(max_size=8))),
            ("sensor_id", "boiler-gateway-1"),
            ("sensor_type", draw(mostly(st.sampled_from(["temperature", "pressure"]), garbage))),
            ("value", draw(values)),
            ("unit", "celsius"),
            ("timestamp", draw(timestamps)),
        ],
    )
    return draw(json_object(pairs)).encode()


@st.composite
def change_feed(draw) -> bytes:
    pairs = maybe_drop(draw, [("id", draw(st.uuids()).hex), ("sensor_id", "sensor-3"), ("timestamp", draw(timestamps))])
    pairs += fields_of(draw, ["temperature"])
    return draw(json_object(pairs)).encode()


digits = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.integers(1, 5000).map(lambda n: "9" * n),
    st.sampled_from(["²", "١٢", "--5", "-", "", "1_0", "0x10", "1.5", "+3"]),
)


@st.composite
def influx_line(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        tags = draw(
            mostly(
                st.just(",device=jetson-cell-01"), st.sampled_from(["", ",device=other", ",device", ",x=y=z", ",device=jetson-cell-01,a=b"])
            )
        )
        names = draw(
            st.lists(
                mostly(st.sampled_from(["spindle_current", "spindle_speed"]), st.sampled_from(["x", "a b", 'q"', ""])),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        if draw(st.integers(0, 15)) == 0:
            names.append(names[0])  # a duplicate field
        fields = []
        for name in names:
            value = draw(
                mostly(
                    st.one_of(st.floats(0, 100).map(repr), st.integers(0, 20000).map(lambda n: f"{n}i")),
                    st.one_of(
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.tuples(digits, st.sampled_from(["i", "u"])).map("".join),
                        st.sampled_from(["t", "F", "true", "TRUE", '"str"', '"', '"a\\"b"', "nan", "-inf", "1e999", "²i"]),
                        st.text(max_size=6),
                    ),
                )
            )
            fields.append(f"{name}={value}" if draw(st.integers(0, 30)) else name)
        ts = draw(mostly(st.one_of(st.just(""), seconds.map(lambda t: f" {int(t * 1e9)}")), digits.map(lambda d: f" {d}")))
        measurement = draw(mostly(st.just("machine"), st.sampled_from(["m", "#machine", "", "a b"])))
        lines.append(f"{measurement}{tags} {','.join(fields)}{ts}")
    return draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines).encode()


def metric_fields(draw) -> bytes:
    """One Sparkplug metric as raw protobuf fields: known names or aliases, any datatype, any value wire."""
    out = bytearray()
    if draw(st.booleans()):
        sp._put_field(out, 1, 2, draw(st.sampled_from(["Press/Temperature", "Press/Current", "Other", ""])).encode())
    if draw(st.booleans()):
        sp._put_field(out, 2, 0, draw(st.integers(0, 4)))
    if draw(st.integers(0, 3)) == 0:
        sp._put_field(out, 3, 0, draw(st.integers(0, 2**64 - 1)))
    sp._put_field(out, 4, 0, draw(st.integers(0, 20)))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        sp._put_field(out, 10, 0, draw(st.integers(0, 2**32 - 1)))
    elif kind == 1:
        sp._put_field(out, 11, 0, draw(st.integers(0, 2**64 - 1)))
    elif kind == 2:
        sp._put_field(out, 12, 5, struct.pack("<f", draw(st.floats(width=32))))
    elif kind == 3:
        sp._put_field(out, 13, 1, struct.pack("<d", draw(st.floats(-50, 250) | st.floats())))
    elif kind == 4:
        sp._put_field(out, 14, 0, draw(st.integers(0, 3)))
    else:
        sp._put_field(out, 15, 2, draw(st.binary(max_size=8)))
    if draw(st.integers(0, 9)) == 0:
        sp._put_field(out, 7, 0, 1)
    return bytes(out)


def spb_topic(kind: str, edge: str = "edge-7", device: str = "press-3") -> str:
    return sp.topic(sp.Topic("plant-a", kind, edge, device if kind[0] == "D" else None))


def spb_payload(draw, seq: int, metrics: list[bytes]) -> bytes:
    out = bytearray()
    sp._put_field(out, 1, 0, int(draw(seconds) * 1000))
    for m in metrics:
        sp._put_field(out, 2, 2, m)
    sp._put_field(out, 3, 0, seq)
    return bytes(out)


def spb_metric(name: str | None, alias: int, value: float) -> bytes:
    return sp.encode_metric(sp.Metric(name, alias, None, sp.DOUBLE, value))


@st.composite
def sparkplug_batch(draw) -> list[tuple[str, bytes]]:
    """The cell's edge node going through its session (births, then data by alias, seq +1 each),
    with one message in five replaced by a hostile one: raw metrics, a stranger, a gap, a death."""
    batch, seq = [], 0
    for i in range(BATCH):
        if i == 0 or draw(st.integers(0, 30)) == 0:  # (re)birth
            seq = 0
            batch.append((spb_topic("NBIRTH"), spb_payload(draw, seq, [])))
            seq += 1
            batch.append(
                (
                    spb_topic("DBIRTH"),
                    spb_payload(
                        draw,
                        seq,
                        [
                            spb_metric("Press/Temperature", 1, draw(st.floats(-40, 200))),
                            spb_metric("Press/Current", 2, draw(st.floats(0, 100))),
                        ],
                    ),
                )
            )
        elif draw(st.integers(0, 4)):
            alias = draw(st.sampled_from([1, 2]))
            value = draw(mostly(st.floats(0, 100), st.floats()))
            batch.append((spb_topic("DDATA"), spb_payload(draw, seq, [spb_metric(None, alias, value)])))
        else:
            kind = draw(st.sampled_from(["NBIRTH", "DBIRTH", "DDATA", "NDATA", "NDEATH", "DDEATH", "NCMD", "STATE"]))
            topic = spb_topic(kind, draw(st.sampled_from(["edge-7", "edge-7", "edge-8"])), draw(st.sampled_from(["press-3", "press-4"])))
            payload = spb_payload(
                draw,
                draw(st.sampled_from([seq, seq, seq + 1, 255, 300, 2**64 - 1])),
                [metric_fields(draw) for _ in range(draw(st.integers(0, 3)))],
            )
            batch.append((topic, mutate(draw, payload)))
        seq = (seq + 1) % 256
    return batch[:BATCH]


def mutate(draw, payload: bytes) -> bytes:
    """Usually the payload as built; sometimes cut, with a byte changed, or with bytes inserted."""
    op = draw(st.integers(0, 23))
    if op > 2 or not payload:
        return payload
    i = draw(st.integers(0, len(payload) - 1))
    if op == 0:
        return payload[:i]
    if op == 1:
        return payload[:i] + bytes([draw(st.integers(0, 255))]) + payload[i + 1 :]
    return payload[:i] + draw(st.binary(min_size=1, max_size=4)) + payload[i:]


TOPICS = {
    "esp32-json": "sensors/hall-1/esp32-press-01/data",
    "rpi-json": "sensors/hall-1/rpi-line1-env/environmental",
    "sensor-event": "sensors/hall-2/boiler-gateway/events",
    "change-feed": "sensors/coldroom/coldroom-feed/docs",
    "influx-line": "sensors/hall-1/jetson-cell-01/metrics",
}
BUILDERS = {"esp32-json": esp32, "rpi-json": rpi, "sensor-event": sensor_event, "change-feed": change_feed, "influx-line": influx_line}


@st.composite
def message(draw, fmt: str) -> tuple[str, bytes]:
    if draw(st.integers(0, 40)) == 0:  # a stray topic under the plant's prefixes, or a foreign format on a node's topic
        return draw(st.sampled_from([*TOPICS.values(), "sensors/hall-9/nobody/data", "spBv1.0/x"])), draw(st.binary(max_size=64))
    return TOPICS[fmt], mutate(draw, draw(BUILDERS[fmt]()))


#: status topic → node, for the sample plant's nodes.
STATUS_TOPICS = {
    status_topic(t): n
    for n, t in (
        ("esp32-press-01", TOPICS["esp32-json"]),
        ("rpi-line1-env", TOPICS["rpi-json"]),
        ("boiler-gateway", TOPICS["sensor-event"]),
        ("coldroom-feed", TOPICS["change-feed"]),
        ("jetson-cell-01", TOPICS["influx-line"]),
    )
}
hostile_topics = st.one_of(
    st.sampled_from(
        [
            "sensors/hall-9/ghost/status",
            "sensors/hall-1/esp32-press-01/../rpi-line1-env/status",
            "sensors/hall-1/+/status",
            "sensors/#",
            "sensors/hall-1/esp32-press-01/status/",
            "/sensors/hall-1/esp32-press-01/status",
        ]
    ),
    st.tuples(st.sampled_from(sorted(STATUS_TOPICS)), st.text(max_size=6)).map("".join),  # NUL, controls, anything
    st.binary(min_size=1, max_size=24).map(lambda b: "sensors/" + b.decode("utf-8", "replace")),  # as the wire decodes non-UTF-8
    st.integers(500, 70_000).map(lambda n: "sensors/" + "a" * n + "/status"),
)
status_payloads = mostly(
    st.sampled_from([b"online", b"offline"]),
    st.one_of(
        st.sampled_from([b"", b"ONLINE", b"online\n", b" offline", b"offline\x00", b"\xffonline", b"online" * 100, b"true", b"0"]),
        st.binary(max_size=80),
        st.text(max_size=10).map(str.encode),
    ),
)


@st.composite
def status_message(draw) -> tuple[str, bytes]:
    return draw(mostly(st.sampled_from(sorted(STATUS_TOPICS)), hostile_topics)), draw(status_payloads)


def batches(fmt: str) -> st.SearchStrategy:
    if fmt == "sparkplug-b":
        return sparkplug_batch()
    if fmt == "status":  # births and Last Wills among one node's readings
        return st.lists(st.one_of(status_message(), status_message(), message("esp32-json")), min_size=BATCH, max_size=BATCH)
    return st.lists(message(fmt), min_size=BATCH, max_size=BATCH)


class Rig:
    """One pipeline and its store for many batches; a fresh store every STORE_BATCHES batches."""

    def __init__(self, folder: Path):
        self.plant = load_plant(EXAMPLE_PLANT, SPARKPLUG_CELL)
        self.ranges = {(c.name, s.name): (s.low, s.high) for c in map(CompiledNode.of, self.plant.nodes) for s in c.sensors.values()}
        self.folder, self.generation, self.batches = folder, 0, 0
        #: Readings stored and reasons met, by format: the generators must reach past the decoder.
        self.reached: dict[str, Counter[str]] = {}
        self.published: list[tuple[str, bytes]] = []
        self._renew()

    def _renew(self) -> None:
        if self.generation:
            self.store.close()
            (self.folder / f"fuzz-{self.generation - 1}.db").unlink()
        self.store = SqliteStore(self.folder / f"fuzz-{self.generation}.db")
        self.pipeline = Pipeline(
            self.plant,
            self.store,
            publish=lambda topic, body: self.published.append((topic, body)),
            now=NOW,
        )
        self.generation += 1
        self.stored = 0

    def run(self, fmt: str, batch: list[tuple[str, bytes]], now: float) -> None:
        self.batches += 1
        if self.batches % STORE_BATCHES == 0:
            assert self.store.count("readings") == self.stored  # every reading counted as stored is in the file
            self._renew()
        self.published.clear()
        pipeline = self.pipeline
        p = pipeline.prepare(batch, now)
        pipeline.commit(p)
        pipeline.finish(p)
        self.stored += p.stored
        reached = self.reached.setdefault(fmt, Counter())
        reached["stored"] += p.stored
        reached.update(reason for _, _, reason, _, _ in p.dead)
        assert sum(p.results.values()) == len(batch)  # every message accepted, partly or wholly refused
        for _, _, reason, detail, _ in p.dead:
            assert reason != "internal_error", f"a bug met by a message: {detail}"
            assert reason in REASONS, (reason, detail)
        assert len(p.dead) == p.results["partial"] + p.results["rejected"]
        for r in p.readings:
            low, high = self.ranges.get((r.node, r.sensor), (-math.inf, math.inf))
            assert math.isfinite(r.value) and low <= r.value <= high and math.isfinite(r.ts), r
        letters = [orjson.loads(body) for topic, body in self.published if topic.startswith("plantwatch/dead-letter/")]
        assert len(letters) >= len(p.dead) and all(letter["reason"] in REASONS for letter in letters)
        if fmt == "status":
            self._check_presence(batch, now)

    def _check_presence(self, batch: list[tuple[str, bytes]], now: float) -> None:
        """A node whose last message in the batch was `online` or `offline` on its status topic is Online or not by it."""
        said: dict[str, bytes] = {}
        for topic, payload in batch:
            node = STATUS_TOPICS.get(topic)
            if node is not None and payload in (b"online", b"offline"):
                said[node] = payload
            elif topic == TOPICS["esp32-json"]:
                said.pop("esp32-press-01", None)  # its readings, if accepted, outrank an earlier Will
        presence = self.pipeline.presence(now)
        for node, payload in said.items():
            assert presence[node].online is (payload == b"online"), (node, payload, presence[node])
            if payload == b"offline":
                assert presence[node].reason == "LastWill"


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Rig:
    return Rig(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_generated_batch_stops_the_pipeline(rig, fmt):
    @settings(max_examples=max(1, CASES // BATCH // len(FORMATS)), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(batch=batches(fmt), skew=st.floats(-30, 30))
    def one_batch(batch, skew):
        rig.run(fmt, batch, NOW + skew)

    one_batch()
    reached = rig.reached[fmt]
    print(fmt, dict(reached))
    assert reached["stored"] > 0 and len(reached) > 3, reached
