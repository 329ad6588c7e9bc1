"""Simulated sensor nodes: every SensorNode of a plant publishes its own payload format.

What happens to them is a Plan (plantwatch.sim.scenario, pure): by default each Threshold
rule's sensor goes past the rule's levels and back, a node an Absence rule watches falls
silent for a while, and bad messages go out at a low rate; `--scenario` chooses other faults
(silence, bad payloads, drift, dropouts, clock skew, duplicates) on other nodes and sensors.
Values are seeded, so a run is reproducible.

Each node with a status topic announces `online` there (retained) first, as the firmware
does after connecting. Their Last Wills are not simulated: the fleet is one MQTT
connection, and a connection has one Will.
"""

from __future__ import annotations

import io
import random
import threading
import time

import numpy as np
from PIL import Image

from plantwatch.ingest import sparkplug
from plantwatch.ingest.formats import FORMATS
from plantwatch.ingest.status_topics import ONLINE, status_owners
from plantwatch.mqtt.endpoint import Endpoint
from plantwatch.mqtt.publisher import Publisher
from plantwatch.plant.load import Plant
from plantwatch.plant.model import SensorNode, device_id, duration_seconds
from plantwatch.sim import frames, scenario
from plantwatch.sim.frames import CLEAR_KINDS


class Fleet:
    """Publishes every node's readings at its heartbeat interval (or the plan's) until stopped, with the plan's faults.

    `client_id` must be unique on the broker (`plantwatch up` derives it from its gateway's,
    `<gateway>-sim`): a second client with the same id takes the connection over.
    """

    def __init__(self, plant: Plant, broker: str | Endpoint, client_id: str, plan: scenario.Plan | None = None, seed: int = 7):
        self.plant = plant
        self.plan = plan or scenario.plan(plant)
        self._rng = random.Random(seed)
        # An Endpoint brings its TLS settings and credentials: the simulator speaks to the broker as the gateway does.
        self._publisher = Publisher(broker, client_id=client_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self.sent = 0
        self.sent_bad = 0
        self._seq: dict[str, int] = {}  # Sparkplug sequence numbers, per node

    def start(self) -> None:
        self._publisher.start()
        self._t0 = time.time()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._publisher.stop()

    def value(self, node: SensorNode, sensor, elapsed: float) -> float:
        mean, noise = self.plan.mean(node.name, sensor.name, elapsed)
        v = self._rng.gauss(mean, noise)
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
        """The node's (topic, message)s for one heartbeat: one per sensor for single-value formats.

        Readings the plan drops out are left out (a message left empty is not sent), except from
        a Sparkplug node's births, which name its metrics.
        """
        fmt = FORMATS[node.spec.payload.format]
        topic = node.spec.payload.topic
        births = fmt.encode is None and node.name not in self._seq
        values = {
            s.field or fmt.default_field(s.type, s.name): self.frame() if s.type == "image" else self.value(node, s, elapsed)
            for s in node.spec.sensors
            if births or not self._dropped(node, s.name, elapsed)
        }
        if not values:
            return []
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

        fmt = FORMATS[node.spec.payload.format]
        # Numbered from every sensor, as the births name them: a reading dropped out must not shift the others' aliases.
        aliases = {s.field or fmt.default_field(s.type, s.name): i + 1 for i, s in enumerate(node.spec.sensors)}
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

    def _dropped(self, node: SensorNode, sensor: str, elapsed: float) -> bool:
        fault = self.plan.active("dropouts", node.name, elapsed, sensor)
        return fault is not None and self._rng.random() < fault.amount

    def bad_message(self, now: float, node_name: str | None = None) -> tuple[str, bytes]:
        """One of the ways real nodes get it wrong, in turn; on `node_name`'s topic, or every node's in turn."""
        # Cameras' messages are frames, not the values these faults are made of.
        candidates = [
            n
            for n in self.plant.nodes
            if FORMATS[n.spec.payload.format].encode is not None and n.spec.payload.format != "jpeg-frame" and node_name in (None, n.name)
        ]
        fallback = next((n for n in self.plant.nodes if n.name == node_name), self.plant.nodes[0])
        node = candidates[self.sent_bad % len(candidates)] if candidates else fallback
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
        interval = self.plan.interval
        bounds = {n.name: interval.bounds(duration_seconds(n.spec.heartbeat.interval)) for n in self.plant.nodes}
        due = {n.name: self._t0 for n in self.plant.nodes}
        bad = [f for f in self.plan.faults if f.kind == "bad"]
        next_bad = [self._t0 + f.start_s for f in bad]
        for status in status_owners((n.name, n.spec.payload.format, n.spec.payload.topic) for n in self.plant.nodes)[0]:
            self._publisher.publish(status, ONLINE, retain=True)
            self.sent += 1
        while not self._stop.is_set():
            now = time.time()
            elapsed = now - self._t0
            for node in self.plant.nodes:
                if now < due[node.name]:
                    continue
                low, high = bounds[node.name]
                due[node.name] = now + (low if low == high else self._rng.uniform(low, high))
                if self.plan.active("silence", node.name, elapsed):
                    continue
                skew = self.plan.active("skew", node.name, elapsed)
                twice = self.plan.active("duplicates", node.name, elapsed)
                for topic, payload in self.messages(node, elapsed, now + (skew.amount if skew else 0.0)):
                    for _ in range(2 if twice and self._rng.random() < twice.amount else 1):
                        self._publisher.publish(topic, payload)
                        self.sent += 1
            for i, fault in enumerate(bad):
                if now >= next_bad[i] and fault.active(elapsed):
                    topic, payload = self.bad_message(now, fault.node)
                    self._publisher.publish(topic, payload)
                    self.sent_bad += 1
                    next_bad[i] = now + fault.amount
            self._stop.wait(0.05)
