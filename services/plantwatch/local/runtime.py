"""`plantwatch up`: every stage of a plant on one machine.

Broker (an external one if given, else mosquitto or the embedded broker), the
ingestion pipeline with the embedded SQLite store and the rules, the notifier that
delivers alerts to the plant's receivers (the console, and every AlertReceiver, its
secrets read from the Secret manifests in the plant folder), /metrics /healthz /readyz and
the alerts API (/api/v1/, alerts/api.py),
and optionally simulated nodes. Runs for a
duration or until interrupted, then drains what was received and writes a summary.

The run is durable as `serve ingest` is: its MQTT session is persistent under a client
id derived from the store's path (`--client-id` to choose), and its rule state is
checkpointed in the store with every batch, so a restart on the same store after a crash
gets what was never acknowledged from the broker, stores it once, and carries the alerts
that were firing instead of firing them again. The store is `--db`, else the plant's file
under $XDG_STATE_HOME (local/paths.py), which outlives the run for `plantwatch query`. The alert state (firing alerts, acks,
silences, the notification log) lives in the same store, so a durable run picks up its
alerts, their repeats and any notification not yet delivered where the last one stopped. The dead-letter publisher and the
simulator connect as `<gateway's client id>-dlq` and `-sim`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import signal
import socket
import sqlite3
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from plantwatch.alerts.api import PREFIX as API_PREFIX
from plantwatch.alerts.api import TokenRef
from plantwatch.alerts.api import from_secret as alerts_api
from plantwatch.alerts.notifier import Notifier
from plantwatch.alerts.receivers import build as build_receiver
from plantwatch.contracts.times import iso
from plantwatch.health import HealthServer
from plantwatch.inference.plant_scorers import plant_scorers
from plantwatch.ingest.dead_letters import DEAD_LETTER_QUEUE
from plantwatch.ingest.pipeline import Pipeline, load_gateway_plant
from plantwatch.ingest.runner import IngestService
from plantwatch.ingest.scaleout import ShardStore
from plantwatch.ingest.validate import Policy
from plantwatch.local.paths import default_db
from plantwatch.logs import mask
from plantwatch.mqtt.broker import Broker, start_broker
from plantwatch.mqtt.endpoint import Endpoint
from plantwatch.mqtt.publisher import Publisher
from plantwatch.plant.load import Plant, PlantError
from plantwatch.secrets import SecretMissing, Secrets
from plantwatch.sim.fleet import Fleet
from plantwatch.sim.scenario import Interval, Plan, ScenarioError
from plantwatch.sim.scenario import plan as simulation_plan
from plantwatch.store import postgres
from plantwatch.store.alert_state import AlertState
from plantwatch.store.retention import Retention
from plantwatch.store.shard_state import Fenced
from plantwatch.store.sqlite import SqliteStore


@dataclass
class UpOptions:
    paths: list[str]
    simulate: bool = False
    #: What the simulator does (sim/scenario.py's choices); empty: the default, which exercises the plant's rules.
    scenario: tuple[str, ...] = ()
    sim_interval: Interval = Interval()
    duration: float | None = None
    summary_json: str | None = None
    #: An external broker (a URL, or an Endpoint with TLS and credentials); None: start one on loopback.
    broker_url: str | Endpoint | None = None
    broker_kind: str = "auto"
    #: The port of the broker `up` starts; None: any free one.
    broker_port: int | None = None
    #: The store; None: local.paths.default_db(paths).
    db: str | None = None
    #: MQTT client id of the persistent session; default: default_client_id(db).
    client_id: str | None = None
    http_port: int = 9464
    status_every: float = 5.0
    window_s: float = 60.0
    retention: Retention = Retention()
    policy: Policy = field(default_factory=Policy)
    #: The alerts API's bearer token, from a Secret manifest in the plant folder; None: changes refused.
    api_token: TokenRef | None = None
    #: Serve the alerts API's reads without the token.
    api_open_reads: bool = False
    out: TextIO = field(default=sys.stdout)


#: The row of shard_checkpoints that holds `up`'s rule state: below the scale-out's shard
#: numbers (0 and up), so a store once used by a sharded gateway does not mix the two.
UP_CHECKPOINT = -1


class StartupError(Exception):
    """What kept `up` from starting, as one line for the user (everything it had started is stopped)."""


def default_client_id(db: str) -> str:
    """`plantwatch-up-<hash of the store's absolute path>`: the session belongs with the store it fills.

    Stable across restarts on one store (the broker keeps what was not acknowledged into it),
    distinct for every other store, so two plants on one broker never share a session.
    """
    where = db if postgres.is_url(db) else str(Path(db).resolve())
    return "plantwatch-up-" + hashlib.sha256(where.encode()).hexdigest()[:12]


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port`: asked before starting a broker there, whose wait for its
    port would otherwise take whatever answers on it for the broker it started."""
    with socket.socket() as s:
        # SO_REUSEADDR as brokers set it: the TIME_WAIT connections of a broker just stopped do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _SerialIngest(IngestService):
    """Every batch stored, and its checkpoint taken, before the next one goes through the rules.

    IngestService overlaps one batch's commit with the next batch's rules; the checkpoint a
    commit takes could then hold the next batch's state too, and that batch, redelivered
    after a crash, would find its readings already applied and never raise its alerts.
    """

    INLINE_BELOW = sys.maxsize


@dataclass
class _Running:
    """What `up` started."""

    url: Endpoint
    db: str
    client_id: str
    store: SqliteStore
    alert_state: AlertState
    notifier: Notifier
    pipeline: Pipeline
    service: IngestService
    health: HealthServer
    dlq: Publisher
    broker: Broker | None = None
    fleet: Fleet | None = None
    carried: int = 0


def up(opts: UpOptions) -> int:
    out = opts.out
    try:
        plant = load_gateway_plant(*opts.paths)
    except PlantError as exc:
        print(f"plantwatch up: {exc}", file=sys.stderr)
        return 2
    simulation: Plan | None = None
    if opts.simulate:
        try:
            simulation = simulation_plan(plant, opts.scenario, opts.sim_interval)
        except ScenarioError as exc:
            print(f"plantwatch up: {exc}", file=sys.stderr)
            return 2
    elif opts.scenario or opts.sim_interval != Interval():
        print("plantwatch up: --scenario and --sim-interval choose what --simulate publishes: add --simulate", file=sys.stderr)
        return 2
    if opts.broker_url is not None:
        try:
            Endpoint.of(opts.broker_url)
        except ValueError as exc:
            print(f"plantwatch up: --broker: {exc}", file=sys.stderr)
            return 2
    started = ExitStack()
    try:
        run = _start(opts, plant, started, simulation)
    except KeyboardInterrupt:  # Ctrl-C while waiting for the broker: stop what started, quietly
        started.close()
        print("plantwatch up: interrupted while starting", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (any failure to start is one line, after stopping what started)
        try:
            started.close()
        except Exception as stop_exc:  # noqa: BLE001
            print(f"plantwatch up: while stopping after a failed start: {mask(repr(stop_exc))}", file=sys.stderr)
        reason = str(exc) if isinstance(exc, StartupError) else f"could not start: {type(exc).__name__}: {exc}"
        print(f"plantwatch up: {mask(reason)}", file=sys.stderr)
        return 1
    started.pop_all()  # from here on the run stops them in its own order, draining first
    pipeline, service, fleet = run.pipeline, run.service, run.fleet
    broker_shown = f"{run.broker.kind if run.broker else 'external'} {run.url}"
    session = f"session {run.client_id} (persistent)"
    print(
        f"plantwatch: {len(plant.nodes)} nodes, {len(plant.rules)} rules, {len(plant.detectors)} detectors | "
        f"broker {broker_shown} {session} | store {postgres.engine(run.db)} {postgres.describe(run.db)} | "
        f"http://127.0.0.1:{run.health.port}/metrics",
        file=out,
        flush=True,
    )
    # On lines of their own, to be copied: where nodes publish, and what `plantwatch query --db` reads.
    print(f"broker: {run.url}\nstore: {postgres.describe(run.db)}", file=out, flush=True)
    for line in simulation.describe() if simulation else ():
        print(f"simulate: {line}", file=out, flush=True)
    if run.carried:
        print(f"plantwatch: resumed from the store's checkpoint, {run.carried} alerts still firing", file=out, flush=True)
    started_at = time.time()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        next_status = started_at + opts.status_every
        while not stop.is_set() and service.alive:
            if opts.duration is not None and time.time() - started_at >= opts.duration:
                break
            stop.wait(0.2)
            if time.time() >= next_status:
                _status(pipeline, run.alert_state, run.notifier, out)
                next_status += opts.status_every
    finally:
        ended = time.time()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if fleet:
            fleet.stop()
        _wait_caught_up(service, pipeline, expected=None if fleet is None else fleet.sent + fleet.sent_bad)
        service.stop()
        if service.error is None:  # after a failed batch the rule state is ahead of the store: nothing more is written
            pipeline.close_windows()
        run.notifier.stop()  # announces what the last batches fired, waiting a little for the receivers
        run.dlq.stop()
        run.health.stop()
        if run.broker:
            run.broker.stop()
    summary = _summary(plant, run, started_at, ended)
    run.alert_state.close()
    run.store.close()
    if opts.summary_json:
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"plantwatch: stopped after {summary['duration_s']}s: {summary['readings_stored']} readings stored, "
        f"{summary['alerts_fired']} alerts fired, {summary['rejected']} rejected",
        file=out,
        flush=True,
    )
    if service.error is not None:
        print(f"plantwatch up: {mask(_failure(service.error, run))}", file=sys.stderr)
        return 1
    return 0


def _start(opts: UpOptions, plant: Plant, started: ExitStack, simulation: Plan | None = None) -> _Running:
    """Start every part, each one's stop pushed on `started`; StartupError says which part failed."""
    db = opts.db or default_db(opts.paths)
    broker: Broker | None = None
    if opts.broker_url is None:
        if opts.broker_port and not port_free(opts.broker_port):
            raise StartupError(
                f"--broker-port {opts.broker_port} is in use (another plantwatch up, or a broker already running?); "
                f"pick another, or use the broker listening there with --broker mqtt://127.0.0.1:{opts.broker_port}"
            )
        try:
            # die_with_parent: even an `up` killed with SIGKILL leaves no mosquitto behind
            broker = start_broker(opts.broker_kind, opts.broker_port, die_with_parent=True)
        except Exception as exc:  # noqa: BLE001
            raise StartupError(f"could not start the {opts.broker_kind} broker: {exc}") from exc
        started.callback(broker.stop)
    url = Endpoint.of(opts.broker_url or broker.url)
    try:
        store = postgres.open_store(db)
    except (sqlite3.Error, ValueError) as exc:
        raise StartupError(f"could not open the store {postgres.describe(db)}: {exc}") from exc
    started.callback(store.close)
    alert_state = AlertState(db)
    started.callback(alert_state.close)
    try:
        secrets = Secrets(plant.others)
        receivers = {"console": build_receiver(None, "console", secrets, url, out=opts.out)}
        receivers.update({r.name: build_receiver(r, r.name, secrets, url, out=opts.out) for r in plant.receivers})
    except (SecretMissing, ValueError) as exc:
        raise StartupError(f"the plant's receivers: {exc}") from exc
    try:
        api = alerts_api(alert_state, secrets, opts.api_token, opts.api_open_reads)
    except SecretMissing as exc:
        raise StartupError(f"--api-token-secret: {exc}") from exc
    # Its own name for the notifier's lease; a durable `up` takes the lease over when it starts,
    # having claimed the store's checkpoint (which fences any earlier `up` off the store) first.
    notifier = Notifier(plant, alert_state, receivers)
    scorers, problems = plant_scorers(plant)
    for problem in problems:
        print(f"plantwatch up: not scoring: {problem.reason}: {problem}", file=sys.stderr)
    client_id = opts.client_id or default_client_id(db)
    # The store as the pipeline sees it: every write commits the rule state with it, or is
    # Fenced when another process claimed the checkpoint since (two `up` on one --db).
    epoch, state = store.claim_shard(UP_CHECKPOINT, client_id, time.time())
    checkpointed = ShardStore(store, UP_CHECKPOINT, epoch)
    # The dead-letter publisher's client id derives from the gateway's, known once the
    # service exists; the pipeline publishes only after it has started.
    dlq: Publisher | None = None
    pipeline = Pipeline(
        plant,
        checkpointed,
        publish=lambda topic, body: dlq.publish(topic, body),
        policy=opts.policy,
        window_s=opts.window_s,
        retention=opts.retention,
        scorers=scorers,
        on_alerts=notifier.wake,
    )
    carried = 0
    checkpointed.pipeline = pipeline
    if state is not None:
        _resume(pipeline, orjson.loads(state), time.time())
        carried = len(pipeline.engine.firing())  # the rules' own state, committed with the batch that fired them
    try:
        service = _SerialIngest(pipeline, url, client_id)
    except ValueError as exc:
        raise StartupError(f"the plant: {exc}") from exc
    gateway_id = service.subscriber.client_id
    dlq = Publisher(url, client_id=f"{gateway_id}-dlq", max_queued=DEAD_LETTER_QUEUE)
    try:
        dlq.start()
    except (OSError, TimeoutError) as exc:
        raise StartupError(f"the dead-letter publisher ({gateway_id}-dlq): {exc}") from exc
    started.callback(dlq.stop)
    try:
        health = HealthServer(opts.http_port, healthy=lambda: service.alive, ready=lambda: service.ready, routes={API_PREFIX: api})
    except OSError as exc:
        why = "is in use (another plantwatch up?)" if exc.errno == errno.EADDRINUSE else f"cannot be served: {exc.strerror}"
        raise StartupError(f"--http-port {opts.http_port} {why}; pick another, or 0 for any free port") from exc
    health.start()
    started.callback(health.stop)
    notifier.start(take_over=True)
    started.callback(notifier.stop)
    try:
        service.start()
    except TimeoutError as exc:
        raise StartupError(f"the gateway ({gateway_id}) {exc} at {url}") from exc
    started.callback(service.stop)
    fleet = None
    if simulation is not None:
        fleet = Fleet(plant, url, client_id=f"{gateway_id}-sim", plan=simulation)
        try:
            fleet.start()
        except (OSError, TimeoutError) as exc:
            raise StartupError(f"the simulator ({gateway_id}-sim): {exc}") from exc
        started.callback(fleet.stop)
    return _Running(url, db, gateway_id, store, alert_state, notifier, pipeline, service, health, dlq, broker, fleet, carried)


def _resume(pipeline: Pipeline, state: dict[str, Any], now: float) -> None:
    """Continue from the checkpoint the killed (or stopped) run committed.

    The rules keep the alerts that were firing (they do not fire them a second time); the
    notifier finds them in the store's alert state, so they repeat on schedule and resolve
    once. An absence watch not firing restarts its wait from now: the readings the nodes sent
    while `up` was away are still on their way from the broker, and must not be mistaken for silence.
    """
    watches = state["rules"]["watches"]
    for key, (last_seen, firing) in watches.items():
        if not firing:
            watches[key] = [max(last_seen, now), firing]
    pipeline.restore(state)


def _failure(error: BaseException, run: _Running) -> str:
    if isinstance(error, Fenced):
        return (
            f"another process took over the store {run.db} (its checkpoint is now {error.owner}'s, "
            f"epoch {error.current}); this one stopped without acknowledging its last batch"
        )
    return f"the pipeline failed: {error!r}"


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


def _status(pipeline: Pipeline, alert_state: AlertState, notifier: Notifier, out: TextIO) -> None:
    now = time.time()
    online = pipeline.online(now)
    print(
        f"{iso(now)} status: {pipeline.messages} messages, {pipeline.readings_stored} readings stored, "
        f"{sum(pipeline.rejected.values())} rejected, {len(alert_state.alerts('firing'))} alerts firing, "
        f"{sum(online.values())}/{len(online)} nodes online, notifications delivered: {_delivered(notifier)}",
        file=out,
        flush=True,
    )


def _delivered(notifier: Notifier) -> str:
    """`console 12, andon 3 (1 failed)`: this run's delivery rounds per receiver."""
    shown = []
    for receiver, results in notifier.summary()["by_receiver"].items():
        failed = sum(n for result, n in results.items() if result != "sent")
        shown.append(f"{receiver} {results.get('sent', 0)}" + (f" ({failed} not delivered)" if failed else ""))
    return ", ".join(shown) or "none yet"


def _summary(plant: Plant, run: _Running, started: float, ended: float) -> dict:
    """The run as numbers; node liveness is judged at the end of the run, not after shutdown."""
    pipeline, notifier, store, fleet = run.pipeline, run.notifier, run.store, run.fleet
    online = pipeline.online(ended)
    return {
        "duration_s": round(ended - started, 1),
        "broker": {
            "kind": run.broker.kind if run.broker else "external",
            "url": str(run.url),
            "client_id": run.client_id,
            "persistent_session": True,
        },
        "store": {"kind": postgres.engine(run.db), "path": postgres.describe(run.db)},
        "alerts_carried": run.carried,
        "messages_received": pipeline.messages,
        "readings_stored": store.count("readings"),
        "rejected": sum(pipeline.rejected.values()),
        "rejected_by_reason": dict(sorted(pipeline.rejected.items())),
        "alerts_fired": notifier.fired,
        "alert_events": store.count("alert_events"),
        "alerts_firing": sorted(a["fingerprint"] for a in run.alert_state.alerts("firing")),
        "notifications": notifier.summary(),
        "dead_letters": store.count("dead_letters"),
        "window_summaries": store.count("summaries"),
        "nodes": {
            n.name: {"online": online[n.name], "last_seen": iso(pipeline.last_seen[n.name]) if n.name in pipeline.last_seen else None}
            for n in plant.nodes
        },
        "simulated": {"sent": fleet.sent, "sent_invalid": fleet.sent_bad, "scenario": fleet.plan.describe()} if fleet else None,
    }
