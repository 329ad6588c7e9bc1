"""`plantwatch up`: every stage of a plant on one machine.

Broker (an external one if given, else mosquitto or the embedded broker), the
ingestion pipeline with the embedded SQLite store and the rules, alert routing to the
console, /metrics /healthz /readyz, and optionally simulated nodes. Runs for a
duration or until interrupted, then drains what was received and writes a summary.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from plantwatch.alerts.router import AlertRouter
from plantwatch.ingest.codecs import iso
from plantwatch.ingest.gateway import DEAD_LETTER_RETENTION_S, IngestService, Pipeline, load_gateway_plant
from plantwatch.ingest.validate import Policy
from plantwatch.health import HealthServer
from plantwatch.inference.plant_scorers import plant_scorers
from plantwatch.mqtt.broker import Broker, start_broker
from plantwatch.mqtt.client import Publisher
from plantwatch.plant.load import Plant, PlantError
from plantwatch.sim.fleet import Fleet
from plantwatch.store.sqlite import SqliteStore


@dataclass
class UpOptions:
    paths: list[str]
    simulate: bool = False
    duration: float | None = None
    summary_json: str | None = None
    broker_url: str | None = None
    broker_kind: str = "auto"
    db: str | None = None
    http_port: int = 9464
    status_every: float = 5.0
    window_s: float = 60.0
    dead_letter_retention_s: float = DEAD_LETTER_RETENTION_S
    policy: Policy = field(default_factory=Policy)
    out: TextIO = field(default=sys.stdout)


def up(opts: UpOptions) -> int:
    out = opts.out
    try:
        plant = load_gateway_plant(*opts.paths)
    except PlantError as exc:
        print(f"plantwatch up: {exc}", file=sys.stderr)
        return 2
    tmp = None
    db = opts.db
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="plantwatch-")
        db = str(Path(tmp.name) / "plant.db")
    broker: Broker | None = None
    if opts.broker_url is None:
        broker = start_broker(opts.broker_kind)
    url = opts.broker_url or broker.url
    store = SqliteStore(db)
    router = AlertRouter(plant, out=out)
    dlq = Publisher(url, client_id="plantwatch-dlq")
    dlq.start()
    scorers, problems = plant_scorers(plant)
    for problem in problems:
        print(f"plantwatch up: not scoring: {problem.reason}: {problem}", file=sys.stderr)
    pipeline = Pipeline(plant, store, router, publish=dlq.publish, policy=opts.policy, window_s=opts.window_s,
                        dead_letter_retention_s=opts.dead_letter_retention_s,
                        scorers=scorers)
    service = IngestService(pipeline, url)
    service.start()
    health = HealthServer(opts.http_port, healthy=lambda: service.alive, ready=lambda: service.ready)
    health.start()
    fleet = Fleet(plant, url) if opts.simulate else None
    print(f"plantwatch: {len(plant.nodes)} nodes, {len(plant.rules)} rules, {len(plant.detectors)} detectors | "
          f"broker {broker.kind if broker else 'external'} {url} | store sqlite {db} | "
          f"http://127.0.0.1:{health.port}/metrics", file=out, flush=True)
    started = time.time()
    if fleet:
        fleet.start()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        next_status = started + opts.status_every
        while not stop.is_set() and service.alive:
            if opts.duration is not None and time.time() - started >= opts.duration:
                break
            stop.wait(0.2)
            if time.time() >= next_status:
                _status(pipeline, router, out)
                next_status += opts.status_every
    finally:
        ended = time.time()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if fleet:
            fleet.stop()
        _wait_caught_up(service, pipeline, expected=None if fleet is None else fleet.sent + fleet.sent_bad)
        service.stop()
        pipeline.close_windows()
        dlq.stop()
        health.stop()
        if broker:
            broker.stop()
    summary = _summary(plant, pipeline, router, store, fleet, broker, url, db, started, ended)
    store.close()
    if tmp:
        tmp.cleanup()
    if opts.summary_json:
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"plantwatch: stopped after {summary['duration_s']}s: {summary['readings_stored']} readings stored, "
          f"{summary['alerts_fired']} alerts fired, {summary['rejected']} rejected", file=out, flush=True)
    if service.error is not None:
        print(f"plantwatch up: the pipeline failed: {service.error!r}", file=sys.stderr)
        return 1
    return 0


def _wait_caught_up(service: IngestService, pipeline: Pipeline, expected: int | None, timeout: float = 10.0) -> None:
    """Give in-flight messages time to arrive and be processed: until `expected` are in, or none came for 0.5 s."""
    deadline = time.time() + timeout
    seen, quiet_since = pipeline.messages, time.time()
    while time.time() < deadline and service.alive:
        if expected is not None and pipeline.messages >= expected:
            return
        if pipeline.messages != seen:
            seen, quiet_since = pipeline.messages, time.time()
        elif expected is None and time.time() - quiet_since >= 0.5:
            return
        time.sleep(0.05)


def _status(pipeline: Pipeline, router: AlertRouter, out: TextIO) -> None:
    now = time.time()
    online = pipeline.online(now)
    print(f"{iso(now)} status: {pipeline.messages} messages, {pipeline.readings_stored} readings stored, "
          f"{sum(pipeline.rejected.values())} rejected, {len(router.active)} alerts firing, "
          f"{sum(online.values())}/{len(online)} nodes online", file=out, flush=True)


def _summary(plant: Plant, pipeline: Pipeline, router: AlertRouter, store: SqliteStore, fleet: Fleet | None,
             broker: Broker | None, url: str, db: str, started: float, ended: float) -> dict:
    """The run as numbers; node liveness is judged at the end of the run, not after shutdown."""
    online = pipeline.online(ended)
    return {
        "duration_s": round(ended - started, 1),
        "broker": {"kind": broker.kind if broker else "external", "url": url},
        "store": {"kind": "sqlite", "path": db},
        "messages_received": pipeline.messages,
        "readings_stored": store.count("readings"),
        "rejected": sum(pipeline.rejected.values()),
        "rejected_by_reason": dict(sorted(pipeline.rejected.items())),
        "alerts_fired": router.fired,
        "alert_events": store.count("alert_events"),
        "alerts_suppressed": router.suppressed,
        "alerts_firing": sorted(router.active),
        "dead_letters": store.count("dead_letters"),
        "window_summaries": store.count("summaries"),
        "nodes": {
            n.name: {"online": online[n.name], "last_seen": iso(pipeline.last_seen[n.name]) if n.name in pipeline.last_seen else None}
            for n in plant.nodes
        },
        "simulated": {"sent": fleet.sent, "sent_invalid": fleet.sent_bad} if fleet else None,
    }
