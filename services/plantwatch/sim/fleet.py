"""Simulated sensor nodes: every SensorNode of a plant publishes its own payload format.

The scenario is deterministic (seeded) and compressed in time so a 30-second run shows
the whole life of an alert:
- the first line-1 temperature sensor overheats: it ramps from its baseline past the
  warning and critical levels, holds, and cools down again (fires, escalates, resolves);
- one node (the last in the plant) stops publishing after `silent_after_s`, so absence
  rules fire;
- every `bad_every_s` a malformed or invalid message is published (bad JSON, a value
  outside the physical range, NaN, a wrong device id, an unknown topic), which the
  gateway must dead-letter and count.

Each node with a status topic announces `online` there (retained) first, as the firmware
does after connecting. Their Last Wills are not simulated: the fleet is one MQTT
connection, and a connection has one Will.
"""

from __future__ import annotations

import io
import random
import threading
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from plantwatch.ingest import sparkplug
from plantwatch.ingest.formats import FORMATS
from plantwatch.ingest.status_topics import ONLINE, status_owners
from plantwatch.mqtt.endpoint import Endpoint
from plantwatch.mqtt.publisher import Publisher
from plantwatch.plant.load import Plant
from plantwatch.plant.model import SensorNode, device_id, duration_seconds
from plantwatch.sim import frames
from plantwatch.sim.frames import CLEAR_KINDS

#: Typical operating values by sensor type (a plant at rest), and their noise.
BASELINES = {
    "temperature": (45.0, 0.5),
    "humidity": (45.0, 2.0),
    "pressure": (1013.0, 3.0),
    "vibration": (1.5, 0.3),
    "current": (12.0, 1.0),
    "voltage": (3.7, 0.05),
    "noise": (65.0, 3.0),
    "speed": (1450.0, 20.0),
}


@dataclass(frozen=True)
class Scenario:
    overheat_start_s: float = 5.0
    overheat_ramp_s: float = 15.0
    overheat_hold_s: float = 6.0
    overheat_peak: float = 88.0
    silent_after_s: float = 4.0
    bad_every_s: float = 2.0


def _baseline(node: SensorNode, sensor) -> tuple[float, float]:
    mean, noise = BASELINES.get(sensor.type, (None, None))
    if sensor.range is not None:
        low, high = float(sensor.range.min), float(sensor.range.max)
        if mean is None or not low <= mean <= high:
            mean, noise = low + (high - low) * 0.3, (high - low) * 0.01
    return (mean if mean is not None else 1.0), (noise if noise is not None else 0.1)


class Fleet:
    """Publishes every node's readings at its heartbeat interval until stopped.

    `client_id` must be unique on the broker (`plantwatch up` derives it from its gateway's,
    `<gateway>-sim`): a second client with the same id takes the connection over.
    """

    def __init__(self, plant: Plant, broker: str | Endpoint, client_id: str, scenario: Scenario = Scenario(), seed: int = 7):
        self.plant = plant
        self.scenario = scenario
        self._rng = random.Random(seed)
        # An Endpoint brings its TLS settings and credentials: the simulator speaks to the broker as the gateway does.
        self._publisher = Publisher(broker, client_id=client_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self.sent = 0
        self.sent_bad = 0
        self._seq: dict[str, int] = {}  # Sparkplug sequence numbers, per node
        self._overheat = next(
            (n.name for n in plant.nodes for s in n.spec.sensors if s.type == "temperature" and n.meta.labels.get("plantwatch.io/line")),
            None,
        )
        self._silent = plant.nodes[-1].name if len(plant.nodes) > 1 else None

    def start(self) -> None:
        self._publisher.start()
        self._t0 = time.time()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._publisher.stop()

    def value(self, node: SensorNode, sensor, elapsed: float) -> float:
        mean, noise = _baseline(node, sensor)
        v = self._rng.gauss(mean, noise)
        sc = self.scenario
        if node.name == self._overheat and sensor.type == "temperature":
            t = elapsed - sc.overheat_start_s
            if 0 <= t < sc.overheat_ramp_s:
                v += (sc.overheat_peak - mean) * t / sc.overheat_ramp_s
            elif sc.overheat_ramp_s <= t < sc.overheat_ramp_s + sc.overheat_hold_s:
                v = sc.overheat_peak + self._rng.gauss(0, 0.5)
        if sensor.range is not None:
            v = min(max(v, float(sensor.range.min)), float(sensor.range.max))
        return round(v, 2)

    def frame(self) -> bytes:
        """A camera's frame: a fire-free scene of plantwatch.sim.frames, as JPEG."""
        rgb = frames.frame(self._rng.choice(CLEAR_KINDS), np.random.default_rng(self._rng.getrandbits(32)))
        out = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(out, "JPEG", quality=90)  # not inference.image: it loads ONNX Runtime
        return out.getvalue()

    def messages(self, node: SensorNode, elapsed: float, now: float) -> list[tuple[str, bytes]]:
        """The node's (topic, message)s for one heartbeat: one per sensor for single-value formats."""
        fmt = FORMATS[node.spec.payload.format]
        topic = node.spec.payload.topic
        values = {
            s.field or fmt.default_field(s.type, s.name): self.frame() if s.type == "image" else self.value(node, s, elapsed)
            for s in node.spec.sensors
        }
        if fmt.encode is None:  # sparkplug-b, the one format sent in a session
            return self._sparkplug(node, values, now)
        if fmt.one_value:
            return [(topic, fmt.encode(device_id(node), now, {k: v})) for k, v in values.items()]
        return [(topic, fmt.encode(device_id(node), now, values))]

    def _sparkplug(self, node: SensorNode, values: dict[str, float], now: float) -> list[tuple[str, bytes]]:
        """Births (metric names with aliases) on the first heartbeat, then data by alias, seq +1 each."""
        data = sparkplug.parse_topic(node.spec.payload.topic)
        ms = int(now * 1000)
        out = []

        def send(kind: str, device: str | None, metrics: tuple[sparkplug.Metric, ...]) -> None:
            seq = self._seq.get(node.name, -1) + 1
            self._seq[node.name] = seq % 256
            t = sparkplug.Topic(data.group, kind, data.edge_node, device)
            out.append((sparkplug.topic(t), sparkplug.encode_payload(sparkplug.Payload(ms, seq % 256, metrics))))

        aliases = {name: i + 1 for i, name in enumerate(values)}
        if node.name not in self._seq:
            send("NBIRTH", None, () if data.device else self._metrics(values, aliases, named=True))
            if data.device:
                send("DBIRTH", data.device, self._metrics(values, aliases, named=True))
            return out
        send(data.message_type, data.device, self._metrics(values, aliases, named=False))
        return out

    @staticmethod
    def _metrics(values: dict[str, float], aliases: dict[str, int], named: bool) -> tuple[sparkplug.Metric, ...]:
        return tuple(sparkplug.Metric(name if named else None, aliases[name], None, sparkplug.DOUBLE, v) for name, v in values.items())

    def bad_message(self, now: float) -> tuple[str, bytes]:
        """One of the ways real nodes get it wrong, in turn."""
        # Cameras' messages are frames, not the values these faults are made of.
        candidates = [
            n for n in self.plant.nodes if FORMATS[n.spec.payload.format].encode is not None and n.spec.payload.format != "jpeg-frame"
        ]
        node = candidates[self.sent_bad % len(candidates)] if candidates else self.plant.nodes[0]
        kind = self.sent_bad % 5 if candidates else 4
        topic = node.spec.payload.topic
        fmt = FORMATS[node.spec.payload.format]
        s = node.spec.sensors[0]
        f = s.field or fmt.default_field(s.type, s.name)
        if kind == 0:
            return topic, b'{"device_id": "' + device_id(node).encode() + b'", "temperature_c": 21.5,'
        if kind == 1:
            high = float(s.range.max) if s.range else 1e6
            return topic, fmt.encode(device_id(node), now, {f: high * 10 + 1})
        if kind == 2:
            return topic, fmt.encode(device_id(node), now, {f: "NaN"})
        if kind == 3 and fmt.names_device:
            return topic, fmt.encode("impostor-99", now, {f: 1.0})
        prefix = topic.split("/", 1)[0]
        return f"{prefix}/unregistered/node-x/data", b'{"device_id": "node-x", "timestamp": 0}'

    def _run(self) -> None:
        sc = self.scenario
        intervals = {n.name: duration_seconds(n.spec.heartbeat.interval) for n in self.plant.nodes}
        due = {n.name: self._t0 for n in self.plant.nodes}
        next_bad = self._t0 + sc.bad_every_s
        for status in status_owners((n.name, n.spec.payload.format, n.spec.payload.topic) for n in self.plant.nodes)[0]:
            self._publisher.publish(status, ONLINE, retain=True)
            self.sent += 1
        while not self._stop.is_set():
            now = time.time()
            elapsed = now - self._t0
            for node in self.plant.nodes:
                if now < due[node.name]:
                    continue
                due[node.name] = now + intervals[node.name]
                if node.name == self._silent and elapsed >= sc.silent_after_s:
                    continue
                for topic, payload in self.messages(node, elapsed, now):
                    self._publisher.publish(topic, payload)
                    self.sent += 1
            if now >= next_bad:
                topic, payload = self.bad_message(now)
                self._publisher.publish(topic, payload)
                self.sent_bad += 1
                next_bad = now + sc.bad_every_s
            self._stop.wait(0.05)
