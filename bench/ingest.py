"""Ingest benchmark: our gateway against mosquitto_sub and Telegraf on the same stream, in one run.

    python bench/ingest.py [--messages 50000] [--out bench/results/ingest.json]

1. Drain rate. N seed ESP32 messages (flat JSON, four readings each, from NODES nodes in turn)
   are queued by a real mosquitto for a persistent session while its subscriber is
   away; then the subscriber connects and the clock runs until it has everything.
   Baseline: `mosquitto_sub` writing to /dev/null. Ours: the gateway end to end
   (decode, validate, rules, embedded SQLite store, acknowledgement after commit).
   `ratio_vs_mosquitto_sub` = our rate / mosquitto_sub's rate. A second reference in the
   same run: a bare paho-mqtt client whose callback only counts (no decoding, no store),
   the floor any Python consumer built on paho starts from. And the tool most plants run for
   this job: Telegraf (built by tools/build-go-tools.sh with only its mqtt_consumer input, json
   parser and file and influxdb_v2 outputs), draining the same queued stream as a persistent QoS 1
   session, with its defaults (batches of 1,000, at most 1,000 messages unacknowledged), into a
   file and into a real InfluxDB 2.x; the clock stops when its debug log says it wrote the last
   batch. `ratio_vs_telegraf`: the embedded store against Telegraf → file, the gateway with
   InfluxDB as a sink (beside SQLite) against Telegraf → InfluxDB, and the cluster's gateway as the
   operator runs it (16 shards under store membership, a real PostgreSQL as the store of record,
   InfluxDB beside it, in each of its layouts) against Telegraf → InfluxDB too.
2. Alert latency. A node publishes at a fixed rate (500 msg/s, and `--rate`, default
   5,000 msg/s) from another process, its vibration crossing the `vibration-high` levels
   on every message, so every message is an alert transition (an alert storm: a plant
   rarely sees more than a few a second); latency = when the receiver was handed the
   alert minus the reading's timestamp (set by the publisher at send time): the rules, the
   store's commit, the notifier's step over the durable alert state. Reported p50/p99.
3. Stage costs. The same stream through the pipeline's stages on one thread, without
   the broker: µs per message of MQTT frame parsing, decode+validate+rules, the SQLite
   commit, and finishing (counters).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT / "operator"))  # the gateway's shard count as the operator renders it
sys.path.append(str(ROOT))  # tests.support: the launchers of the real servers
from plantwatch.alerts.notification import Notification  # noqa: E402
from plantwatch.alerts.notifier import Notifier  # noqa: E402
from plantwatch.contracts.names import INFLUX_LAYOUTS  # noqa: E402
from plantwatch.ingest.formats import encode  # noqa: E402
from plantwatch.ingest.membership import MemberIngest, Registry  # noqa: E402
from plantwatch.ingest.pipeline import Pipeline  # noqa: E402
from plantwatch.ingest.runner import IngestService  # noqa: E402
from plantwatch.ingest.scaleout import LockedSink  # noqa: E402
from plantwatch.ingest.service import SHARD_CONNECTIONS  # noqa: E402
from plantwatch.mqtt import wire  # noqa: E402
from plantwatch.mqtt.broker import start_mosquitto  # noqa: E402
from plantwatch.mqtt.publisher import Publisher  # noqa: E402
from plantwatch.plant.load import Plant, load_plant  # noqa: E402
from plantwatch.store import postgres  # noqa: E402
from plantwatch.store.alert_state import AlertState  # noqa: E402
from plantwatch.store.sqlite import SqliteStore  # noqa: E402
from plantwatch_operator.render import GATEWAY_SHARDS  # noqa: E402

PLANT = ROOT / "examples" / "plant"
#: The stream's nodes: the sample plant's ESP32 and clones of it, each on its own topic (a plant has many
#: nodes: the gateway's shards divide them, and one node's stream would keep all but one shard idle).
NODES = 32
#: What every consumer subscribes to: all the nodes' data topics.
TOPICS = "sensors/#"


def node_name(i: int) -> str:
    return f"esp32-press-{i + 1:02d}"


def node_topic(i: int) -> str:
    return f"sensors/hall-1/{node_name(i)}/data"


def bench_plant(workdir: Path) -> Path:
    """The sample plant with NODES - 1 more ESP32s like its esp32-press-01 (same sensors and rules)."""
    plant = workdir / "plant"
    shutil.copytree(PLANT, plant)
    source = (PLANT / "nodes.yaml").read_text().split("\n---\n")
    esp32 = next(doc for doc in source if f"name: {node_name(0)}\n" in doc)
    clones = [esp32.replace(node_name(0), node_name(i)) for i in range(1, NODES)]
    (plant / "bench-nodes.yaml").write_text("\n---\n".join(clones))
    return plant


def seed_messages(n: int, t0: float) -> list[tuple[str, bytes]]:
    """The seed firmware's flat JSON from NODES nodes in turn, distinct timestamps, realistic values."""
    return [
        (
            node_topic(i % NODES),
            encode(
                "esp32-json",
                node_name(i % NODES),
                t0 + i * 0.001,
                {"temperature_c": 45.0 + (i % 50) / 10, "vibration_g": 1.5, "current_a": 12.0, "battery_voltage": 3.7},
            ),
        )
        for i in range(n)
    ]


def queue_for(url: str, messages: list[tuple[str, bytes]]) -> None:
    pub = Publisher(url, client_id="bench-publisher")
    pub.start()
    for topic, m in messages:
        pub.publish(topic, m)
    pub.stop(timeout=120)  # publish waits for packet ids, so at most 65,535 are unacknowledged here
    if pub.dropped:
        raise SystemExit(f"the bench's publisher dropped {pub.dropped} of {len(messages)} messages")


def forget_session(url: str, client_id: str) -> None:
    """Drop a persistent session: a clean connect under its client id (paho's default). Otherwise the
    broker keeps queueing every later phase's stream for a subscriber that is gone, and that phase pays."""
    client = Publisher(url, client_id=client_id)
    client.start()
    client.stop()


def mosquitto_sub_rate(broker, messages: list[tuple[str, bytes]]) -> float:
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        raise SystemExit("mosquitto_sub is missing: apt-get install mosquitto-clients (make deps)")
    base = [binary, "-h", "127.0.0.1", "-p", str(broker.port), "-t", TOPICS, "-q", "1", "-c", "-i", "bench-mosquitto-sub"]
    subprocess.run([*base, "-E"], check=True)  # register the persistent session, then leave
    queue_for(broker.url, messages)
    started = time.perf_counter()
    # -W: an error (exit status 27) rather than waiting for ever when the broker holds fewer messages than sent.
    subprocess.run([*base, "-C", str(len(messages)), "-W", "600"], check=True, stdout=subprocess.DEVNULL)
    rate = len(messages) / (time.perf_counter() - started)
    forget_session(broker.url, "bench-mosquitto-sub")
    return rate


TELEGRAF_CONFIG = """
[agent]
  omit_hostname = true
  flush_interval = "1s"
  metric_buffer_limit = {buffer}
[[inputs.mqtt_consumer]]
  servers = ["tcp://127.0.0.1:{port}"]
  topics = ["{topic}"]
  qos = 1
  persistent_session = true
  client_id = "{client_id}"
  data_format = "json"
  tag_keys = ["device_id"]
  json_time_key = "timestamp"
  json_time_format = "2006-01-02T15:04:05Z07:00"
{output}
"""


def telegraf_version() -> str:
    go_mod = (ROOT / "tools" / "go" / "telegraf" / "go.mod").read_text()
    return next(line.split()[-1].lstrip("v") for line in go_mod.splitlines() if "github.com/influxdata/telegraf " in line)


def telegraf_rate(broker, messages: list[tuple[str, bytes]], workdir: Path, output: str, client_id: str) -> float:
    """Telegraf draining the queued stream into `output` (a TOML [[outputs.*]] table), as mosquitto_sub does."""
    from tests.support.telegraf import Telegraf

    name = output.split("[[", 1)[1].split("]]", 1)[0]
    binary = shutil.which("mosquitto_sub")
    # The persistent session registered by a client with Telegraf's id: the broker queues the stream for it.
    subprocess.run([binary, "-h", "127.0.0.1", "-p", str(broker.port), "-t", TOPICS, "-q", "1", "-c", "-i", client_id, "-E"], check=True)
    queue_for(broker.url, messages)
    (workdir / client_id).mkdir()
    config = TELEGRAF_CONFIG.format(port=broker.port, topic=TOPICS, client_id=client_id, buffer=2 * len(messages), output=output)
    telegraf = Telegraf(config, workdir / client_id)
    started = time.perf_counter()
    telegraf.start()
    try:
        telegraf.wait_written(name, len(messages), 600)
        rate = len(messages) / (time.perf_counter() - started)
    finally:
        telegraf.stop()
    forget_session(broker.url, client_id)
    return rate


def paho_callback_rate(broker, messages: list[tuple[str, bytes]]) -> float:
    """A bare paho-mqtt subscriber (QoS 1, persistent session) that only counts in its callback."""
    import threading

    import paho.mqtt.client as mqtt

    got = 0
    done = threading.Event()

    def on_message(client, userdata, message) -> None:
        nonlocal got
        got += 1
        if got == len(messages):
            done.set()

    def connect() -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho", clean_session=False)
        client.on_message = on_message
        client.on_connect = lambda c, *_: c.subscribe(TOPICS, qos=1)
        client.connect("127.0.0.1", broker.port)
        return client

    first = connect()  # register the persistent session, then leave
    first.loop_start()
    time.sleep(0.5)
    first.disconnect()
    first.loop_stop()
    queue_for(broker.url, messages)
    started = time.perf_counter()
    client = connect()
    client.loop_start()
    if not done.wait(600):
        raise SystemExit(f"paho received only {got} of {len(messages)} in 600 s")
    rate = len(messages) / (time.perf_counter() - started)
    client.disconnect()
    client.loop_stop()
    forget_session(broker.url, "bench-paho")
    return rate


def gateway_rate(
    broker, plant: Plant, messages: list[tuple[str, bytes]], workdir: Path, sinks=(), client_id: str = "bench-gateway"
) -> tuple[float, int]:
    """The local gateway (`plantwatch up`): one pipeline, decoding beside the SQLite commit."""
    store = SqliteStore(workdir / f"{client_id}.db")
    pipeline = Pipeline(plant, store, sinks=sinks)
    first = IngestService(pipeline, broker.url, client_id=client_id)
    first.start()
    first.stop()  # the session now exists and collects the stream
    queue_for(broker.url, messages)
    pipeline.messages = 0
    service = IngestService(pipeline, broker.url, client_id=client_id)
    started = time.perf_counter()
    service.start()
    wait_processed(lambda: pipeline.messages, len(messages), started)
    elapsed = time.perf_counter() - started  # pipeline.messages counts messages whose batch is committed
    service.stop()
    forget_session(broker.url, client_id)
    stored = store.count("readings")
    store.close()
    return len(messages) / elapsed, stored


def wait_processed(processed: Callable[[], int], count: int, started: float) -> None:
    while processed() < count:
        if time.perf_counter() - started > 600:
            raise SystemExit(f"the gateway processed only {processed()} of {count} in 600 s")
        time.sleep(0.001)


def cluster_gateway_rate(broker, plant: Plant, messages: list[tuple[str, bytes]], url: str, sink) -> tuple[float, int]:
    """The gateway as the operator runs it on a shared store (`serve ingest --db postgresql://... --shards 16
    --membership store`, ingest/service.py): its shards divided among the live members (here one), each shard
    its own MQTT session and pipeline, batches committed on SHARD_CONNECTIONS connections, InfluxDB shared."""
    store = postgres.PostgresStore(url, connections=SHARD_CONNECTIONS)
    shared = [LockedSink(sink)]
    pipelines: list[Pipeline] = []

    def shard_pipeline(subset: Plant, shard_store) -> Pipeline:
        pipelines.append(Pipeline(subset, shard_store, sinks=shared))
        return pipelines[-1]

    def gateway() -> MemberIngest:
        return MemberIngest(
            Registry(url), plant, store, broker.url, GATEWAY_SHARDS, "bench-cluster", "bench-cluster-member", shard_pipeline, False
        )

    first = gateway()
    first.start()  # returns once the shards are given out, not yet subscribed
    if not all(w.subscriber.connected_once.wait(30) for w in first.workers):
        raise SystemExit("the cluster gateway's shards could not subscribe within 30 s")
    first.stop()  # the shards' sessions now exist and collect the stream
    sessions = [w.subscriber.client_id for w in first.workers]
    queue_for(broker.url, messages)
    pipelines.clear()
    service = gateway()
    started = time.perf_counter()
    service.start()
    wait_processed(lambda: sum(p.messages for p in pipelines), len(messages), started)
    elapsed = time.perf_counter() - started
    service.stop()
    for session in sessions:
        forget_session(broker.url, session)
    stored = store.count("readings")
    store.close()
    return len(messages) / elapsed, stored


def stage_costs(plant: Plant, messages: list[tuple[str, bytes]], workdir: Path, batch: int = 5000) -> dict:
    """Where a message's time goes, without the broker: µs per message of each stage, one thread."""
    store = SqliteStore(workdir / "stages.db")
    pipeline = Pipeline(plant, store)
    frames = [
        wire._packet(wire.PUBLISH << 4 | 0x02, struct.pack("!H", len(t)) + t + struct.pack("!H", i % 65535 + 1) + m)
        for i, (t, m) in enumerate((topic.encode(), m) for topic, m in messages)
    ]  # QoS 1 PUBLISH packets, as the broker sends them
    spent = dict.fromkeys(("mqtt_parse", "decode_validate_rules", "sqlite_commit", "finish"), 0.0)
    topics: dict[bytes, str] = {}
    clock = time.perf_counter
    for start in range(0, len(frames), batch):
        t0 = clock()
        publishes, _, _ = wire.parse(bytearray(b"".join(frames[start : start + batch])), topics)
        t1 = clock()
        prepared = pipeline.prepare(publishes, time.time())
        t2 = clock()
        pipeline.commit(prepared)
        t3 = clock()
        pipeline.finish(prepared)
        t4 = clock()
        for stage, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[stage] += seconds
    store.close()
    return {stage: round(seconds / len(messages) * 1e6, 2) for stage, seconds in spent.items()}


def influx_rate(broker, plant: Plant, messages: list[tuple[str, bytes]], workdir: Path) -> tuple[dict, dict, dict]:
    """The same drain with every batch also written to a real InfluxDB 2.x (built by make tools), Telegraf's
    drain into the same server (a bucket of its own), and the cluster's pair: a real PostgreSQL (Debian's) as
    the store of record with InfluxDB beside it (another bucket): ours, Telegraf's, the cluster's."""
    from plantwatch.store.influx import InfluxStore
    from tests.support.influxd import BUCKET, INFLUXD, ORG, TOKEN, Influxd
    from tests.support.postgres import Postgres

    if not INFLUXD.exists():
        raise SystemExit(f"{INFLUXD} is missing: run make tools")
    data = workdir / "influxd"
    data.mkdir()
    server = Influxd(data)
    server.start()
    try:
        bucket = server.new_bucket("telegraf")
        output = f'[[outputs.influxdb_v2]]\n  urls = ["{server.url}"]\n  token = "{TOKEN}"\n  organization = "{ORG}"\n  bucket = "{bucket}"'
        telegraf = telegraf_rate(broker, messages, workdir, output, "bench-telegraf-influx")
        sink = InfluxStore(server.url, TOKEN, ORG, BUCKET, workdir / "spool", 1 << 30)
        rate, stored = gateway_rate(broker, plant, messages, workdir, sinks=[sink], client_id="bench-gateway-influx")
        sink.close()
        pg_server = Postgres()
        pg_server.start()
        os.environ[postgres.PASSWORD_FILE_ENV] = str(pg_server.password_file)
        cluster = {}
        try:
            for layout in INFLUX_LAYOUTS:  # the chart's default first, then Telegraf's layout (a point per message)
                cluster_bucket = server.new_bucket(f"cluster-{layout}")
                sink = InfluxStore(server.url, TOKEN, ORG, cluster_bucket, workdir / f"spool-cluster-{layout}", 1 << 30, layout=layout)
                rate_, stored_ = cluster_gateway_rate(broker, plant, messages, pg_server.fresh_database(f"bench_{layout}"), sink)
                sink.close()
                cluster[layout] = {"bucket": cluster_bucket, "msg_per_s": round(rate_), "readings_stored_postgresql": stored_}
        finally:
            pg_server.close()
        with server.client() as c:

            def count(bucket: str, measurement: str | None) -> int:
                only = f' |> filter(fn: (r) => r._measurement == "{measurement}")' if measurement else ""
                tables = c.query_api().query(f'from(bucket: "{bucket}") |> range(start: 0){only} |> group() |> count()')
                return sum(r.get_value() for t in tables for r in t.records)

            points, telegraf_points = count(BUCKET, "reading"), count(bucket, None)
            for figures in cluster.values():
                figures["field_values_in_influxdb"] = count(figures.pop("bucket"), None)
    finally:
        server.stop()
    ours = {"msg_per_s": round(rate), "readings_stored_sqlite": stored, "points_in_influxdb": points, "version": "2.7.12"}
    for layout, figures in cluster.items():
        figures |= {"influxdb_layout": layout, "shards": GATEWAY_SHARDS, "postgresql_connections": SHARD_CONNECTIONS}
    return ours, {"msg_per_s": round(telegraf), "field_values_in_influxdb": telegraf_points}, cluster


PUBLISHER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from plantwatch.ingest.formats import encode
from plantwatch.mqtt.publisher import Publisher
url, rate, seconds = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
pub = Publisher(url, client_id="bench-latency-node")
pub.start()
start = time.time()
i = 0
while time.time() - start < seconds:
    ahead = start + i / rate - time.time()
    if ahead > 0:
        time.sleep(ahead)  # paced by sleeping, not spinning: the gateway needs the other core
    now = time.time()
    pub.publish("sensors/hall-1/esp32-press-01/data",
                encode("esp32-json", "esp32-press-01", now, {"vibration_g": 9.0 if i % 2 else 1.0}), qos=1)
    i += 1
pub.stop()
print(i)
"""


class _Stopwatch:
    """A receiver that notes how late each alert reached it."""

    name, kind = "console", "Console"

    def __init__(self, latencies: list[float]):
        self.latencies = latencies

    def send(self, notification: Notification, timeout: float) -> None:
        now = time.time()
        self.latencies.extend(now - (a.ends_at if a.ends_at is not None else a.starts_at) for a in notification.alerts)

    def close(self) -> None:
        pass


def alert_latency(broker, rate: float, seconds: float, workdir: Path) -> dict:
    plant = load_plant(PLANT)
    latencies: list[float] = []
    # From the reading's timestamp to the receiver's send: rules, the store's commit, the notifier's step.
    db = workdir / "latency.db"
    notifier = Notifier(plant, AlertState(db), {"console": _Stopwatch(latencies)})
    pipeline = Pipeline(plant, SqliteStore(db), on_alerts=notifier.wake)
    service = IngestService(pipeline, broker.url, client_id="bench-latency-gateway")
    notifier.start()
    service.start()
    sent = int(
        subprocess.run(
            [sys.executable, "-c", PUBLISHER, str(ROOT / "services"), broker.url, str(rate), str(seconds)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    deadline = time.time() + 30
    while pipeline.messages < sent and time.time() < deadline:
        time.sleep(0.01)
    service.stop()
    notifier.stop()
    vibration = sorted(latencies)

    def pct(q: float) -> float:
        return round(vibration[min(len(vibration) - 1, int(q / 100 * len(vibration)))] * 1000, 2) if vibration else float("nan")

    achieved = sent / seconds
    return {
        "target_msg_per_s": rate,
        "achieved_msg_per_s": round(achieved),
        "messages": sent,
        "processed": pipeline.messages,
        "alert_transitions": len(vibration),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": pct(100),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=5000.0, help="msg/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plantwatch-bench-") as tmp:
        work = Path(tmp)
        plant = load_plant(bench_plant(work))
        messages = seed_messages(args.messages, time.time() - 3600)
        broker = start_mosquitto(data_dir=None)
        try:
            baseline = mosquitto_sub_rate(broker, messages)
            paho = paho_callback_rate(broker, messages)
            telegraf_file = telegraf_rate(
                broker, messages, work, f'[[outputs.file]]\n  files = ["{work / "telegraf.out"}"]', "bench-telegraf-file"
            )
            ours, stored = gateway_rate(broker, plant, messages, work)
            influx, telegraf_influx, cluster = influx_rate(broker, plant, messages, work)
            latency = {f"{r:g}_msg_per_s": alert_latency(broker, r, args.seconds, work) for r in (500.0, args.rate)}
        finally:
            broker.stop()
        stages = stage_costs(plant, messages, work)
    result = {
        "benchmark": "ingest",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "stream": {"messages": args.messages, "nodes": NODES, "format": "esp32-json (seed flat JSON, 4 readings each)", "qos": 1},
        "mosquitto_sub_msg_per_s": round(baseline),
        "paho_callback": {
            "msg_per_s": round(paho),
            "ratio_vs_mosquitto_sub": round(paho / baseline, 3),
            "note": "bare paho-mqtt callback that only counts: no decoding, no store",
        },
        "telegraf": {
            "version": telegraf_version(),
            "file": {"msg_per_s": round(telegraf_file), "ratio_vs_mosquitto_sub": round(telegraf_file / baseline, 3)},
            "influxdb_v2": {**telegraf_influx, "ratio_vs_mosquitto_sub": round(telegraf_influx["msg_per_s"] / baseline, 3)},
            "note": "mqtt_consumer (QoS 1, persistent session, json parser) with Telegraf's defaults: batches of 1,000, "
            "max_undelivered_messages 1,000; no validation, no rules, acknowledged once written",
        },
        "embedded_store": {
            "msg_per_s": round(ours),
            "readings_stored": stored,
            "ratio_vs_mosquitto_sub": round(ours / baseline, 3),
            "target": 0.6,
            "ratio_vs_paho_callback": round(ours / paho, 3),
            "ratio_vs_telegraf": round(ours / telegraf_file, 3),
            "telegraf_baseline": "file",
        },
        "influxdb_store": {
            **influx,
            "ratio_vs_mosquitto_sub": round(influx["msg_per_s"] / baseline, 3),
            "target": 0.5,
            "ratio_vs_telegraf": round(influx["msg_per_s"] / telegraf_influx["msg_per_s"], 3),
            "telegraf_baseline": "influxdb_v2",
            "note": "embedded SQLite as the store of record, InfluxDB beside it",
        },
        **{
            name: {
                **cluster[layout],
                "ratio_vs_mosquitto_sub": round(cluster[layout]["msg_per_s"] / baseline, 3),
                "ratio_vs_telegraf": round(cluster[layout]["msg_per_s"] / telegraf_influx["msg_per_s"], 3),
                "target_vs_telegraf": 1.5,
                "telegraf_baseline": "influxdb_v2",
                "note": "the gateway as the operator runs it on the cluster's pair: PostgreSQL (Debian's, fsync on, on this "
                "machine) as the store of record, InfluxDB beside it; its shards divided among the live members (one here)"
                + ("" if layout == "narrow" else "; InfluxDB written in the wide layout (a point per message, as Telegraf)"),
            }
            for name, layout in (("cluster_store", "narrow"), ("cluster_store_wide_influxdb", "wide"))
        },
        "alert_latency": {**latency, "target_p99_ms": 20},  # per rate: every message an alert transition
        "pipeline_us_per_message": {
            **stages,
            "note": "one thread, no broker, batches of 5,000; the gateway overlaps sqlite_commit with the next batch's decoding",
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
