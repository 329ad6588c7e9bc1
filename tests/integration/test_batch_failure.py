"""A batch that cannot be stored stops the gateway; its restart stores it, alerts included.

Real mosquitto, the real IngestService and a real SQLite file. The sink below is a real
implementation of the sink interface that refuses one batch (a full disk, a network
blip): the point is what the gateway does next, not the sink.
"""

from __future__ import annotations

import time

import pytest

from plantwatch import metrics
from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline, PipelineFailed, load_gateway_plant
from plantwatch.ingest.runner import IngestService
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.mqtt.subscriber import BatchFailed
from plantwatch.store.influx import SpoolDepth
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT
from tests.support.alerts import announce

TOPIC = "sensors/hall-1/esp32-press-01/data"


class RefusesOnce:
    """Takes every batch, except the first one that holds a reading of `value`: OSError, once."""

    def __init__(self, value: float):
        self.value = value
        self.refused = 0
        self.writes = 0

    def write(self, readings=(), alerts=(), dead_letters=()):
        if not self.refused and any(r.value == self.value for r in readings):
            self.refused += 1
            self.error = OSError(28, "No space left on device")
            raise self.error
        self.writes += 1
        return len(readings)

    def spool_depth(self) -> SpoolDepth:
        return SpoolDepth(0, 0)


def cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


def publish(url: str, messages: list[bytes]) -> None:
    pub = Publisher(url)
    pub.start()
    for m in messages:
        pub.publish(TOPIC, m)
    pub.stop()


@pytest.mark.parametrize("hot", [20, 200])  # a small batch (stored inline) and a burst (overlapped commits)
def test_a_batch_the_store_refuses_stops_the_gateway_and_its_restart_stores_it_with_its_alert(tmp_path, broker, hot):
    plant = load_gateway_plant(str(EXAMPLE_PLANT))
    store = SqliteStore(tmp_path / "p.db")
    t0 = time.time() - 600
    cool = [encode("esp32-json", "esp32-press-01", t0 + i, {"temperature_c": 40.0}) for i in range(5)]
    # 90 °C from t0+5 on: over the critical 80 for the rule's 10 s, so it fires once
    heat = [encode("esp32-json", "esp32-press-01", t0 + 5 + i, {"temperature_c": 90.0}) for i in range(hot)]

    sink = RefusesOnce(90.0)
    inflight = metrics.INFLIGHT._value.get()
    pipeline = Pipeline(plant, store, sinks=[sink])
    service = IngestService(pipeline, broker.url, client_id="refused-gw")
    service.start()
    try:
        publish(broker.url, cool)
        wait_until(lambda: pipeline.messages == len(cool))
        publish(broker.url, heat)
        # The refused batch stops the gateway (/healthz 503: the kubelet restarts it); it
        # neither reconnects nor goes on with rule state that is ahead of the store.
        wait_until(lambda: not service.alive)
    finally:
        service.stop()
    assert sink.refused == 1
    # BatchFailed, or PipelineFailed when the next batch came before the failed one was noticed
    assert isinstance(service.error, (BatchFailed, PipelineFailed)) and cause(service.error) is sink.error
    assert pipeline.in_flight == 0  # no prepared batch left behind
    assert metrics.INFLIGHT._value.get() == inflight  # nor a message in the gauge
    assert pipeline.messages < len(cool) + len(heat)
    with pytest.raises(PipelineFailed):
        pipeline.process([(TOPIC, heat[-1])], time.time())

    # The restart (same persistent session): the broker redelivers what was never acknowledged.
    sink2 = RefusesOnce(-1.0)
    again = Pipeline(plant, store, sinks=[sink2])
    restarted = IngestService(again, broker.url, client_id="refused-gw")
    restarted.start()
    try:
        wait_until(lambda: store.count("readings") == len(cool) + len(heat) and store.count("alert_events") >= 1 and again.in_flight == 0)
        time.sleep(0.5)
        assert restarted.alive and restarted.error is None
    finally:
        restarted.stop()
    # what one gateway that never failed stores
    control = SqliteStore(":memory:")
    Pipeline(plant, control).process([(TOPIC, m) for m in cool + heat], time.time())
    sql = "SELECT rule, state, severity, ts FROM alert_events ORDER BY ts"
    assert store.query(sql) == control.query(sql) and len(control.query(sql)) == 1
    # the notifier follows the stored events: announced once, whatever the failed batch did
    assert announce(plant, tmp_path / "p.db").count("ALERT CRITICAL") == 1


def test_a_pipeline_whose_store_failed_takes_no_further_batch(tmp_path):
    """The same batch again, in the same process, would find its readings applied and lose its alert."""

    class FailingOnce(SqliteStore):
        fail = False

        def write(self, *args, **kwargs):
            if self.fail:
                self.fail = False
                raise OSError("disk I/O error")
            return super().write(*args, **kwargs)

    plant = load_gateway_plant(str(EXAMPLE_PLANT))
    t0 = 1767254400.0
    store = FailingOnce(tmp_path / "p.db")
    p = Pipeline(plant, store, now=t0)
    p.process([(TOPIC, encode("esp32-json", "esp32-press-01", t0 + i, {"temperature_c": 40.0})) for i in range(5)], t0 + 5)
    batch = [(TOPIC, encode("esp32-json", "esp32-press-01", t0 + 5 + i, {"temperature_c": 90.0})) for i in range(11)]
    store.fail = True
    with pytest.raises(OSError):
        p.process(batch, t0 + 16)
    with pytest.raises(PipelineFailed):
        p.process(batch, t0 + 17)
    p.tick(t0 + 60)  # nothing either: the engine is ahead of the store
    assert store.count("alert_events") == 0 and p.in_flight == 0
    # what the restart does: a fresh pipeline from the store gets the batch again
    fresh = Pipeline(plant, store, now=t0)
    fresh.process(batch, t0 + 17)
    control = SqliteStore(":memory:")
    Pipeline(plant, control, now=t0).process(batch, t0 + 17)
    assert store.query("SELECT state, ts FROM alert_events") == control.query("SELECT state, ts FROM alert_events")
    assert store.count("alert_events") == 1


class Recording(RefusesOnce):
    """RefusesOnce that keeps what it took."""

    def __init__(self, value: float):
        super().__init__(value)
        self.alerts: list = []

    def write(self, readings=(), alerts=(), dead_letters=()):
        n = super().write(readings, alerts, dead_letters)
        self.alerts.extend((a.rule, a.state, a.ts) for a in alerts)
        return n


def test_a_shard_whose_sink_fails_stops_uncommitted_and_its_next_owner_alerts_everywhere(tmp_path, broker):
    """The checkpoint commits with the batch: a sink must have taken the batch before it, or its alerts are gone."""
    from plantwatch.ingest.scaleout import ShardedIngest

    plant = load_gateway_plant(str(EXAMPLE_PLANT))
    store = SqliteStore(tmp_path / "p.db")
    t0 = time.time() - 600
    cool = [encode("esp32-json", "esp32-press-01", t0 + i, {"temperature_c": 40.0}) for i in range(5)]
    heat = [encode("esp32-json", "esp32-press-01", t0 + 5 + i, {"temperature_c": 90.0}) for i in range(20)]

    def replica(sink, owner):
        def make(subset, shard_store):
            return Pipeline(subset, shard_store, sinks=[sink])

        return ShardedIngest(plant, store, broker.url, 1, [0], "sharded-gw", owner, make, dead_letter_unknown=True)

    sink_a = Recording(90.0)
    a = replica(sink_a, "replica-a")
    a.start()
    try:
        publish(broker.url, cool)
        wait_until(lambda: store.count("readings") == len(cool))
        publish(broker.url, heat)
        wait_until(lambda: not a.alive)  # the refused batch stops the shard (and /healthz with it)
    finally:
        a.stop()
    assert sink_a.refused == 1 and isinstance(a.error, BatchFailed) and cause(a.error) is sink_a.error
    assert store.count("alert_events") == 0  # the sink refused first: nothing committed, checkpoint included

    sink_b = Recording(-1.0)
    b = replica(sink_b, "replica-a2")  # the restart: claims, restores the checkpoint, gets the batch again
    b.start()
    try:
        wait_until(lambda: store.count("readings") == len(cool) + len(heat) and store.count("alert_events") >= 1)
        time.sleep(0.5)
        assert b.alive and b.error is None
    finally:
        b.stop()
    events = store.query("SELECT rule, state, ts FROM alert_events")
    assert len(events) == 1
    assert sink_a.alerts + sink_b.alerts == events  # the sink has the alert event too
    assert announce(plant, tmp_path / "p.db").count("ALERT CRITICAL") == 1  # notified once
