"""The InfluxDB store against a real influxd (built by tools/build-influxdb.sh into .cache/bin).

Each server runs on a free 127.0.0.1 port with its data in a temporary directory and is
set up (org, bucket, token) through the same HTTP API an operator would use.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from influxdb_client.client.write_api import SYNCHRONOUS

from plantwatch.readings import AlertEvent, Reading
from plantwatch.store.influx import InfluxStore, SpoolDepth, SpoolFullError, ns, to_line_protocol
from tests.support.influxd import BUCKET, INFLUXD, ORG, TOKEN, Influxd

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_700_000_000.0

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def influxd(tmp_path_factory):
    if not INFLUXD.exists():
        pytest.fail(f"{INFLUXD} is missing: run tools/build-influxdb.sh (make tools)")
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(influxd, request) -> str:
    """A fresh bucket per test, so that tests never see each other's points."""
    return influxd.new_bucket(request.node.name)


@pytest.fixture
def make_store(tmp_path):
    stores = []

    def make(server: Influxd, bucket: str, **kwargs) -> InfluxStore:
        kwargs.setdefault("spool_max_bytes", 64 << 20)
        store = InfluxStore(server.url, TOKEN, ORG, bucket, spool_dir=tmp_path / f"spool-{len(stores)}", **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def query_readings(server: Influxd, bucket: str, node: str | None = None, sensor: str | None = None, start: int = 0) -> list[Reading]:
    """Every point of measurement `reading` (of one node, one sensor, from `start`), back as Readings, in time order."""
    where = "".join(f' and r.{tag} == "{value}"' for tag, value in (("node", node), ("sensor", sensor)) if value)
    flux = (
        f'from(bucket: "{bucket}") |> range(start: {start}) '
        f'|> filter(fn: (r) => r._measurement == "reading"{where}) |> group() |> sort(columns: ["_time"])'
    )
    with server.client() as c:
        records = [rec for table in c.query_api().query(flux) for rec in table.records]
    return [Reading(r["node"], r["sensor"], r["type"], r.get_value(), _seconds(r.get_time()), r.values.get("unit") or "") for r in records]


def _seconds(t: datetime) -> float:
    """Back to the float the store was given: its timestamps are whole microseconds."""
    us = (t - EPOCH) // timedelta(microseconds=1)
    return us / 1_000_000


def series(node: str, n: int, start: int = 0, sensor: str = "temp") -> list[Reading]:
    return [Reading(node, sensor, "temperature", float(i), T0 + i / 1000, "C") for i in range(start, start + n)]


def test_readings_are_queried_back_exactly(influxd, bucket, make_store):
    readings = [
        Reading("press-1", "temp", "temperature", 21.5, T0, "C"),
        Reading("press-1", "temp", "temperature", -0.1, T0 + 0.000001, "C"),
        Reading("press-1", "vib", "vibration", 1e-300, T0 + 0.123456, "g"),
        Reading("pump-a", "flow", "flow", 123456789.123456789, 1_700_000_123.456789, ""),
        Reading("pump-a", "count", "count", 7, T0 + 2),
    ]
    store = make_store(influxd, bucket)
    assert store.write(readings) == 5
    got = query_readings(influxd, bucket)
    assert sorted(got, key=lambda r: (r.ts, r.node)) == sorted(readings, key=lambda r: (r.ts, r.node))
    assert {type(r.value) for r in got} == {float}


def test_alert_events_and_dead_letters_are_stored(influxd, bucket, make_store):
    store = make_store(influxd, bucket)
    alert = AlertEvent("hot/press-1/temp", "hot", "press-1", "temp", "firing", "critical", 95.5, T0, 'temp "95.5" > 90')
    store.write(
        alerts=[alert], dead_letters=[(T0, "plant/x", "malformed", "not JSON", b"\xff{"), (T0, "plant/x", "malformed", "not JSON", b"{")]
    )
    with influxd.client() as c:
        tables = c.query_api().query(f'from(bucket: "{bucket}") |> range(start: 0) |> group(columns: ["_measurement", "_field"])')
    points = {(t.records[0].get_measurement(), t.records[0].get_field()): [r.get_value() for r in t.records] for t in tables}
    assert points[("alert_event", "summary")] == ['temp "95.5" > 90']
    assert points[("alert_event", "value")] == [95.5]
    assert points[("dead_letter", "payload")] == ["/3s=", "ew=="]


def test_twenty_thousand_readings_go_in_batches(influxd, bucket, make_store):
    readings = series("bulk", 20_000)
    store = make_store(influxd, bucket, batch_size=5000)
    t = time.perf_counter()
    assert store.write(readings) == 20_000
    elapsed = time.perf_counter() - t
    assert query_readings(influxd, bucket, "bulk") == readings
    print(f"20,000 readings in {elapsed:.2f}s ({20_000 / elapsed:,.0f}/s)")


def test_batches_are_batch_size_readings(tmp_path, make_store):
    """Seen in the spool: with the server unreachable, 20,000 readings are four files of 5,000 lines."""
    server = Influxd(tmp_path / "down")  # never started: connection refused
    store = make_store(server, BUCKET, batch_size=5000)
    assert store.write(series("bulk", 20_000)) == 20_000
    files = sorted(store.spool.dir.glob("*.lp"))
    assert [len(f.read_bytes().split(b"\n")) for f in files] == [5000] * 4


def test_tag_values_with_spaces_commas_and_equals(influxd, bucket, make_store):
    readings = [Reading("hall 1,line=2", "bearing temp", "a=b,c d", 1.0, T0, "deg C"), Reading("n\\x", "s,=", "t", 2.0, T0, "m/s=2")]
    make_store(influxd, bucket).write(readings)
    assert sorted(query_readings(influxd, bucket), key=lambda r: r.value) == readings


def test_the_wide_layout_is_a_point_per_node_and_timestamp_read_back_exactly_and_once(influxd, bucket, make_store):
    messages = [
        [
            Reading(node, sensor, "t", float(i) + k / 10, T0 + i / 1000, "u")
            for k, sensor in enumerate(("temperature", "vibration", "current"))
        ]
        for i in range(500)
        for node in ("press-1", "press-2")
    ]
    readings = [r for m in messages for r in m]
    store = make_store(influxd, bucket, layout="wide")
    assert store.write(readings) == len(readings)
    store.write(readings[:600])  # redelivered: the same points again
    flux = (
        f'from(bucket: "{bucket}") |> range(start: 0) |> filter(fn: (r) => r._measurement == "node_readings")'
        ' |> pivot(rowKey: ["_time", "node"], columnKey: ["_field"], valueColumn: "_value") |> group()'
    )
    with influxd.client() as c:
        rows = [rec.values for table in c.query_api().query(flux) for rec in table.records]
    got = sorted((r["node"], _seconds(r["_time"]), r["temperature"], r["vibration"], r["current"]) for r in rows)
    assert got == sorted((m[0].node, m[0].ts, *(r.value for r in m)) for m in messages)
    assert query_readings(influxd, bucket) == []  # nothing in the narrow layout's measurement


def test_writing_the_same_readings_again_makes_no_duplicates(influxd, bucket, make_store):
    readings = series("dup", 1000)
    store = make_store(influxd, bucket)
    store.write(readings)
    store.write(readings[500:] + readings[:500])
    assert query_readings(influxd, bucket, "dup") == readings


def test_malformed_batches_are_rejected_not_retried(influxd, bucket, make_store):
    """A field type conflict (someone wrote `value` as a string) is a 4xx: kept aside, counted, never replayed."""
    with influxd.client() as c:
        c.write_api(write_options=SYNCHRONOUS).write(bucket, ORG, f'reading,node=x value="text" {ns(T0)}')
    store = make_store(influxd, bucket)
    assert store.write(series("x", 3)) == 0
    assert store.rejected_batches == 1
    assert len(list((store.spool.dir / "rejected").glob("*.lp"))) == 1
    assert store.spool_depth() == SpoolDepth(0, 0)


def test_a_refused_spooled_batch_does_not_block_the_ones_behind_it(tmp_path, make_store):
    data = tmp_path / "influxd"
    data.mkdir()
    server = Influxd(data)
    store = make_store(server, BUCKET, retry_interval_s=0)
    refused = series("x", 3)
    # A month later: another shard, where `value` is still a float field.
    later = [Reading("x", "temp", "temperature", float(i), T0 + 30 * 86400 + i, "C") for i in range(3)]
    assert store.write(refused) == 3 and store.write(later) == 3  # down: both spooled
    assert store.spool_depth().batches == 2
    server.start()
    try:
        with server.client() as c:
            c.write_api(write_options=SYNCHRONOUS).write(BUCKET, ORG, f'reading,node=x value="text" {ns(T0)}')
        assert store.flush()
        assert store.rejected_batches == 1
        assert [p.read_bytes() for p in (store.spool.dir / "rejected").glob("*.lp")] == [to_line_protocol(refused)]
        # From the later shard only: a read across shards where `value` has two types returns nothing.
        assert query_readings(server, BUCKET, "x", "temp", start=int(later[0].ts)) == later
    finally:
        server.stop()


def test_spool_limit_raises_spool_full(tmp_path, make_store):
    server = Influxd(tmp_path / "down")  # never started: connection refused
    store = make_store(server, BUCKET, batch_size=100, spool_max_bytes=20_000, retry_interval_s=0)
    store.write(series("n", 100))
    depth = store.spool_depth()
    assert depth.batches == 1
    with pytest.raises(SpoolFullError, match="spool_max_bytes=20000"):
        for i in range(1, 100):
            store.write(series("n", 100, start=100 * i))
    assert store.spool_depth().bytes <= 20_000


def test_killed_server_every_reading_arrives_once_in_order(tmp_path, make_store):
    """SIGKILL influxd while a writer streams; the writer spools; influxd restarts on the same data and port.

    "In order" is checked through InfluxDB's last-write-wins: every write call also sets
    one marker point to its call number, so the marker ends at the last call's number
    only if the spooled batches were replayed in order, and before the newer data.
    """
    data = tmp_path / "influxd"
    data.mkdir()
    server = Influxd(data)
    server.start()
    try:
        store = make_store(server, BUCKET, batch_size=250, retry_interval_s=0, timeout_s=2)
        sent: list[Reading] = []
        depths: list[int] = []
        call = 0

        def write_call() -> None:
            nonlocal call
            batch = series("kill", 1000, start=len(sent))
            marker = Reading("kill", "marker", "sequence", float(call), T0 - 1)
            store.write(batch + [marker])
            sent.extend(batch)
            call += 1

        killer = threading.Timer(0.5, server.kill)
        killer.start()
        while server.proc.poll() is None:  # streaming when SIGKILL lands
            write_call()
        killer.join()
        for _ in range(5):  # down: everything goes to the spool
            write_call()
            depths.append(store.spool_depth().batches)
        assert depths == sorted(depths) and depths[0] > 0 and depths[-1] >= depths[0] + 4 * 5
        server.start()
        write_call()  # the server answers again: the spool first, then this call
        assert store.spool_depth() == SpoolDepth(0, 0)

        got = query_readings(server, BUCKET, "kill")
        marker = [r for r in got if r.sensor == "marker"]
        values = [r for r in got if r.sensor != "marker"]
        assert len(values) == len(sent) and sum(r.value for r in values) == sum(r.value for r in sent)
        assert values == sent
        assert [m.value for m in marker] == [float(call - 1)]
        print(f"{call} write calls, {len(sent)} readings, spool peaked at {max(depths)} batches")
    finally:
        server.stop()


def test_the_gateway_pipeline_writes_to_influxdb_beside_sqlite(influxd, bucket, make_store, tmp_path):
    from plantwatch.ingest.formats import encode
    from plantwatch.ingest.pipeline import Pipeline
    from plantwatch.plant.load import load_plant
    from plantwatch.store.sqlite import SqliteStore
    from tests.conftest import EXAMPLE_PLANT

    plant = load_plant(EXAMPLE_PLANT)
    store = make_store(influxd, bucket)
    now = time.time()
    pipeline = Pipeline(plant, SqliteStore(tmp_path / "p.db"), sinks=[store], now=now)
    pipeline.process(
        [
            (
                "sensors/hall-1/esp32-press-01/data",
                encode("esp32-json", "esp32-press-01", now - 10 + i, {"temperature_c": 40.0 + i, "vibration_g": 1.0}),
            )
            for i in range(10)
        ],
        now,
    )
    rows = query_readings(influxd, bucket, node="esp32-press-01", sensor="temperature")
    assert sorted(r.value for r in rows) == [40.0 + i for i in range(10)]
    assert pipeline.store.count("readings") == 20
