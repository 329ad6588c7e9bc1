"""Tumbling-window summaries: right numbers, and re-delivery or late data never double counts."""

from __future__ import annotations

import pytest

from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.rules.windows import percentile, summarize, window_start
from plantwatch.store.sqlite import SqliteStore

T0 = 1767254400.0  # on a minute boundary
TOPIC = "sensors/hall-1/esp32-press-01/data"


def test_pure_summary():
    s = summarize("n", "t", 0.0, 60.0, [float(v) for v in range(1, 101)])
    assert (s.count, s.min, s.max, s.mean, s.p95) == (100, 1.0, 100.0, 50.5, 95.0)
    assert percentile([3.0], 95) == 3.0
    assert summarize("n", "t", 0.0, 60.0, []) is None
    assert window_start(T0 + 59.9, 60) == T0 and window_start(T0 + 60, 60) == T0 + 60


def message(ts: float, value: float) -> tuple[str, bytes]:
    return TOPIC, encode("esp32-json", "esp32-press-01", ts, {"temperature_c": value})


def summaries(store: SqliteStore) -> list[tuple]:
    return store.query("SELECT start, count, min, max, round(mean, 3), p95 FROM summaries WHERE sensor = 'temperature' ORDER BY start")


@pytest.fixture
def pipeline(plant, tmp_path):
    return Pipeline(plant, SqliteStore(tmp_path / "p.db"), now=T0)


def test_windows_close_after_the_grace_and_redelivery_changes_nothing(pipeline):
    batch = [message(T0 + i, 40.0 + i % 10) for i in range(120)]  # two full minutes at 1 Hz
    pipeline.process(batch, T0 + 120)
    pipeline.tick(T0 + 120)  # the second minute is not past its grace yet
    assert summaries(pipeline.store) == [(T0, 60, 40.0, 49.0, 44.5, 49.0)]
    pipeline.tick(T0 + 126)
    first = summaries(pipeline.store)
    assert first == [(T0, 60, 40.0, 49.0, 44.5, 49.0), (T0 + 60, 60, 40.0, 49.0, 44.5, 49.0)]
    pipeline.process(batch, T0 + 130)  # the broker re-delivers everything
    pipeline.tick(T0 + 200)
    assert summaries(pipeline.store) == first


def test_a_late_reading_recomputes_its_window(pipeline):
    pipeline.process([message(T0 + i, 10.0) for i in range(0, 60, 2)], T0 + 60)
    pipeline.tick(T0 + 70)
    assert summaries(pipeline.store)[0][1] == 30
    pipeline.process([message(T0 + 1, 99.0)], T0 + 80)  # arrives late, from a node's outage buffer
    pipeline.tick(T0 + 90)
    assert summaries(pipeline.store) == [(T0, 31, 10.0, 99.0, round((30 * 10 + 99) / 31, 3), 10.0)]


def test_a_window_is_not_summarized_while_its_readings_are_on_their_way_to_the_store(pipeline):
    """The gateway commits one batch while it decodes the next: a tick in between must wait for it."""
    pipeline.process([message(T0 + i, 10.0) for i in range(0, 30)], T0 + 30)
    late = pipeline.prepare([message(T0 + i, 20.0) for i in range(30, 60)], T0 + 70)  # decoded, not yet stored
    pipeline.tick(T0 + 70)  # the window has closed, but half of it is still in flight
    assert summaries(pipeline.store) == []
    pipeline.commit(late)
    pipeline.finish(late)
    pipeline.tick(T0 + 71)
    assert summaries(pipeline.store) == [(T0, 60, 10.0, 20.0, 15.0, 20.0)]


def test_a_backlog_draining_through_a_closed_window_is_not_read_back_at_every_tick(pipeline, monkeypatch):
    """A gateway catching up after an outage fills old windows batch after batch, a tick between batches: each
    window is summarized when it first has readings, then at most every SUMMARY_INTERVAL_S, and once more after."""
    reads = []
    summarize = pipeline.store.summarize
    monkeypatch.setattr(pipeline.store, "summarize", lambda windows: reads.append(list(windows)) or summarize(reads[-1]))

    def summaries_of_t0() -> int:
        return sum(1 for batch in reads for w in batch if w[1] == "temperature" and w[2] == T0)

    now = T0 + 600
    for second in range(0, 60, 3):  # the first minute, three seconds of it per batch, a tick every 0.5 s
        pipeline.process([message(T0 + second + i, 10.0) for i in range(3)], now)
        pipeline.tick(now)
        now += 0.5
    assert summaries(pipeline.store) == [(T0, 33, 10.0, 10.0, 10.0, 10.0)]  # at 600 s, then at 605 s (33 readings by then)
    assert summaries_of_t0() == 2
    pipeline.process([message(T0 + 60 + i, 20.0) for i in range(10)], now)  # the backlog has moved on to the next minute
    pipeline.tick(now)  # 610 s: the first minute is due again, the second has its first summary
    assert summaries(pipeline.store) == [(T0, 60, 10.0, 10.0, 10.0, 10.0), (T0 + 60, 10, 20.0, 20.0, 20.0, 20.0)]
    assert summaries_of_t0() == 3  # not twenty


def test_a_batch_a_sink_refuses_is_given_up(plant, tmp_path):
    """InfluxDB down and its spool full: the batch raises (it is not acknowledged), nothing stays in flight."""
    from plantwatch.mqtt.broker import free_port
    from plantwatch.store.influx import InfluxStore, SpoolFullError

    down = InfluxStore(f"http://127.0.0.1:{free_port()}", "token", "org", "bucket", tmp_path / "spool", spool_max_bytes=1)
    pipeline = Pipeline(plant, SqliteStore(tmp_path / "p.db"), sinks=[down], now=T0)
    with pytest.raises(SpoolFullError):
        pipeline.process([message(T0 + 1, 10.0)], T0 + 2)
    assert pipeline.in_flight == 0 and pipeline.messages == 0  # not counted, not holding back any summary
    assert pipeline.store.count("readings") == 1  # SQLite has it already: the re-delivery will store nothing twice
    down.close()
