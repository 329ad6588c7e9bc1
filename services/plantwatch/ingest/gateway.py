"""The ingestion pipeline: MQTT messages → decode/validate → store → rules → alerts.

`Pipeline` is the orchestration of the pure parts with the store and the alert
router; `IngestService` runs it on its own thread behind an MQTT subscriber. Both
runtimes use them: `plantwatch up` (one process) and `plantwatch serve ingest`
(the gateway Deployment the operator renders).
"""

from __future__ import annotations

import base64
import gc
import logging
import queue
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable, Sequence

import orjson

from plantwatch import metrics
from plantwatch.alerts.router import AlertRouter
from plantwatch.ingest import sparkplug
from plantwatch.ingest.conflicts import LogLimiter, SeriesGuard, describe as describe_conflict
from plantwatch.ingest.codecs import Sample
from plantwatch.ingest.validate import CompiledNode, Policy, Rejection, check_message, check_sample
from plantwatch.mqtt import wire
from plantwatch.mqtt.client import BatchSubscriber
from plantwatch.plant.load import Plant, PlantError, load_plant
from plantwatch.plant.model import duration_seconds
from plantwatch.readings import AlertEvent, Reading
from plantwatch.rules.engine import RuleEngine
from plantwatch.rules.windows import window_start
from plantwatch.store.sqlite import EXPIRE_ROWS, SqliteStore, payload_record

log = logging.getLogger(__name__)

DEAD_LETTER_PREFIX = "plantwatch/dead-letter"
SPARKPLUG_PREFIX = sparkplug.NAMESPACE + "/"
#: The Sparkplug messages that carry readings (births carry their metrics' current values).
_SPARKPLUG_READINGS = frozenset({"NBIRTH", "DBIRTH", "NDATA", "DDATA"})
_TIMESTAMP = attrgetter("ts")
#: At most one rebirth request per edge node in this many seconds (the births take a moment).
REBIRTH_INTERVAL_S = 5.0
#: Sparkplug sessions kept for edge nodes no SensorNode describes (least recently heard from
#: forgotten first): enough to dead-letter a few strangers sensibly, and bounded, since anyone
#: may publish under the namespace. One forgotten and heard from again is asked for a rebirth.
MAX_STRANGER_SESSIONS = 1024
#: How long dead letters are kept in the embedded store by default (`--dead-letter-retention-days`).
DEAD_LETTER_RETENTION_S = 7 * 86400.0
#: Seconds between the tick's retention sweeps (sooner while a sweep finds a full chunk to delete).
DEAD_LETTER_SWEEP_S = 60.0
#: Dead letters and rebirth requests waiting to be published (mqtt.client.Publisher's max_queued):
#: under a flood of bad messages the rest are dropped from MQTT, and counted; stored all the same.
DEAD_LETTER_QUEUE = 10_000
#: Seconds between two tracebacks of one internal error (exception type and the line that raised
#: it): each such message is still dead-lettered and counted, and a bug stays visible in the log.
INTERNAL_ERROR_LOG_S = 60.0


def sparkplug_key(topic: str) -> tuple[str, str, str | None]:
    """(group, edge node, device) of a Sparkplug SensorNode's data topic; ValueError if it is not one."""
    try:
        t = sparkplug.parse_topic(topic)
    except sparkplug.SparkplugError as exc:
        raise ValueError(exc.detail) from None
    if t.message_type not in ("NDATA", "DDATA") or (t.message_type == "DDATA") != (t.device is not None):
        raise ValueError(f"topic {topic!r}: a sparkplug-b node's topic is its data topic, "
                         f"{sparkplug.NAMESPACE}/<group>/NDATA/<edge node> or .../DDATA/<edge node>/<device>")
    return t.group, t.edge_node, t.device


def check_plant(plant: Plant) -> list[str]:
    """What the gateway cannot run in this plant (beyond the schema), as actionable messages."""
    problems = []
    for n in plant.nodes:
        if n.spec.payload.format == "sparkplug-b":
            try:
                sparkplug_key(n.spec.payload.topic)
            except ValueError as exc:
                problems.append(f"SensorNode {n.name}: spec.payload.{exc}")
    return problems


def load_gateway_plant(*paths: str) -> Plant:
    """Load a plant and check what the gateway needs beyond the schema; PlantError lists every problem."""
    plant = load_plant(*paths)
    problems = check_plant(plant)
    if problems:
        raise PlantError(problems)
    return plant


def dead_letter(topic: str, payload: bytes, node: str | None, rejections: list[Rejection], now: float,
                correlation_id: str) -> bytes:
    """The DLQ message: the payload's first DEAD_LETTER_PAYLOAD_BYTES bytes, verbatim, its size and sha256, every reason."""
    prefix, size, sha256 = payload_record(payload)
    try:
        body, encoding = prefix.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if size > len(prefix) and exc.reason == "unexpected end of data":  # the cut split a character: drop its start
            body, encoding = prefix[:exc.start].decode("utf-8"), "utf-8"
        else:
            body, encoding = base64.b64encode(prefix).decode(), "base64"
    if encoding == "utf-8" and len(orjson.dumps(body)) > 2 * len(prefix) + 2:
        body, encoding = base64.b64encode(prefix).decode(), "base64"  # mostly control characters: \u0001 is six bytes
    return orjson.dumps({
        "correlation_id": correlation_id,
        "reason": rejections[0].reason,
        "rejections": [{"reason": r.reason, "detail": r.detail, "field": r.field} for r in rejections],
        "topic": topic,
        "node": node,
        "received_at": now,
        "payload": body,
        "payload_encoding": encoding,
        "payload_bytes": size,
        "payload_sha256": sha256,
        "payload_truncated": size > len(prefix),
    })


class PipelineFailed(RuntimeError):
    """A batch could not be committed, so the pipeline's rule state has run ahead of the store.

    It takes no further batch: one redelivered to the same pipeline would find its readings
    already applied (the event-time guard) and lose its alerts. The process stops instead,
    and its restart continues from what is stored (a shard: from its checkpoint) while the
    broker redelivers what was never acknowledged.
    """


@dataclass(slots=True, eq=False)
class PreparedBatch:
    """A batch decoded, validated and through the rules, on its way to the store."""

    messages: int
    now: float
    readings: list[Reading] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    dead: list[tuple[float, str, str, str, bytes]] = field(default_factory=list)
    #: Dead letters and Sparkplug commands to publish once the batch is stored.
    outbox: list[tuple[str, bytes]] = field(default_factory=list)
    results: Counter[str] = field(default_factory=Counter)
    #: The summary windows its readings fall in: (node, sensor, start).
    windows: set[tuple[str, str, float]] = field(default_factory=set)
    #: Readings that were new to the store (set by the commit).
    stored: int = 0


class Pipeline:
    """Processes batches of messages; owns per-series state.

    `process` does a whole batch on the calling thread. Its three steps may also run
    apart: `prepare` (decode, validate, rules) on one thread, and `commit` (the store's
    transaction) then `finish` (counters, alert routing, dead letters) on another, batch
    after batch in the order prepared: IngestService overlaps them that way.
    """

    def __init__(self, plant: Plant, store: SqliteStore, router: AlertRouter,
                 publish: Callable[[str, bytes], None] | None = None, policy: Policy = Policy(),
                 now: float | None = None, window_s: float = 60.0, window_grace_s: float = 5.0,
                 sinks: Sequence[Any] = (), scorers: Sequence[Any] = (), sinks_before_store: bool | None = None,
                 dead_letter_retention_s: float = DEAD_LETTER_RETENTION_S, dead_letter_store: SqliteStore | None = None):
        self.plant = plant
        self.store = store
        #: Dead letters older than the retention are deleted from the embedded store by the tick;
        #: `dead_letter_store` is that store when `store` is a view of it (a shard's ShardStore).
        self.dead_letter_retention_s = dead_letter_retention_s
        self._dead_letter_store = dead_letter_store or store
        self._next_sweep = 0.0
        #: Further stores every batch is written to beside the embedded one (InfluxDB): a sink
        #: that cannot take a batch raises, and the batch is not acknowledged.
        self.sinks = sinks
        #: Sinks are written while SQLite commits: both wait on I/O (a disk, a server) without
        #: the interpreter lock, so a batch costs the slower of the two, not their sum (not so
        #: with sinks_before_store, below: then it is the sum). Each
        #: sink still gets the batches one at a time, in order (`commit` waits for them).
        self._sink_writers = ThreadPoolExecutor(len(sinks), "pipeline-sink") if sinks else None
        #: Write the sinks first and the store only once they took the batch. A shard's store says
        #: so (ShardStore.sinks_before_store): its transaction carries the checkpoint, after which
        #: the batch's alerts are never computed again, so a sink failing after it would lose them.
        self._sinks_before_store = (getattr(store, "sinks_before_store", False) if sinks_before_store is None
                                    else sinks_before_store)
        #: Why a batch could not be committed; from then on the pipeline takes no batch (PipelineFailed).
        self.failed: BaseException | None = None
        #: Streaming detectors (inference.stream.StreamScorer): their `anomaly_score` readings go
        #: through the rules and into the store like any other reading.
        self.scorers = scorers
        self.router = router
        self.policy = policy
        self._publish = publish
        compiled = [CompiledNode.of(n) for n in plant.nodes]
        self._nodes = {c.topic: c for c in compiled if c.format != "sparkplug-b"}
        self._sparkplug = {sparkplug_key(c.topic): c for c in compiled if c.format == "sparkplug-b"}
        self._topics = {c.name: c.topic for c in compiled}
        #: Sparkplug sessions of the plant's edge nodes (a fixed set), and of strangers (bounded, LRU).
        self._sessions: dict[tuple[str, str], sparkplug.EdgeNodeSession] = {}
        #: The devices (None: the edge node itself) of each of the plant's edge nodes: a session keeps their aliases only.
        self._known_edges: dict[tuple[str, str], frozenset[str | None]] = {}
        for group, edge, device in self._sparkplug:
            self._known_edges[(group, edge)] = self._known_edges.get((group, edge), frozenset()) | {device}
        self._stranger_sessions: OrderedDict[tuple[str, str], sparkplug.EdgeNodeSession] = OrderedDict()
        self._rebirth_asked: dict[tuple[str, str], float] = {}
        #: How long each node may be silent before it is Offline: heartbeat interval × missed beats.
        self.silence = {n.name: duration_seconds(n.spec.heartbeat.interval) * n.spec.heartbeat.missed_beats for n in plant.nodes}
        self.readings_by_node: Counter[str] = Counter()
        self.engine = RuleEngine(plant, time.time() if now is None else now)
        self.last_seen: dict[str, float] = {}
        #: The newest (ts, value) per series, to refuse a same-key reading with another value.
        self._series = SeriesGuard()
        self._conflict_log = LogLimiter()
        self.window_s = window_s
        self._window_grace_s = window_grace_s
        #: Windows that received readings since they were last summarized: (node, sensor, start).
        self._dirty_windows: set[tuple[str, str, float]] = set()
        #: Prepared batches not yet finished (stored and routed), oldest first.
        self._uncommitted: deque[PreparedBatch] = deque()
        #: Guards what `finish` (possibly on a committing thread) shares with `prepare` and `tick`:
        #: the dirty windows, the batches in flight, the router and the counters.
        self._lock = threading.Lock()
        #: Messages whose batch is stored (and its alerts routed).
        self.messages = 0
        self.readings_stored = 0
        self.rejected: Counter[str] = Counter()
        #: When each internal error (type, file, line; bounded by the code) last logged its traceback.
        self._internal_errors_logged: dict[tuple[str, str, int], float] = {}

    @property
    def subscriptions(self) -> list[str]:
        """One `<first level>/#` filter per top-level topic the nodes use.

        Wider than the node topics on purpose: a message on an unknown topic under
        the plant's prefixes is a node misconfiguration worth a dead letter, not silence.
        Filters never overlap, so the broker delivers each message once.
        """
        return sorted({c.topic.split("/", 1)[0] + "/#" for c in (*self._nodes.values(), *self._sparkplug.values())})

    def process(self, batch: Sequence[tuple[str, bytes]], now: float) -> None:
        """Decode, validate, evaluate, store and route one batch, all on the calling thread."""
        prepared = self.prepare(batch, now)
        self.commit(prepared)
        self.finish(prepared)

    def prepare(self, batch: Sequence[tuple[str, bytes]], now: float) -> PreparedBatch:
        """Decode, validate and run the rules over a batch: everything but I/O (the pipeline's thread).

        Items are (topic, payload) pairs or anything indexed the same way (mqtt.wire.Publish).
        Raises PipelineFailed once a batch could not be committed.
        """
        if self.failed is not None:
            raise PipelineFailed(f"an earlier batch could not be committed ({self.failed!r}); "
                                 "its rule state is ahead of the store") from self.failed
        p = PreparedBatch(len(batch), now)
        readings, outbox, results = p.readings, p.outbox, p.results
        last_seen, by_node = self.last_seen, self.readings_by_node
        #: Each message's accepted readings, the message, and whether it was partly refused:
        #: a rule may still refuse it.
        per_message: list[tuple[list[Reading], Any, bool]] = []
        check_conflicts = self._series.check
        clock = time.perf_counter
        t0 = clock()
        for item in batch:
            topic, payload = item[0], item[1]
            if topic.startswith(DEAD_LETTER_PREFIX):
                continue  # our own dead letters, seen when a node topic shares their top level
            node = None
            try:  # free in CPython 3.11+ unless something raises
                if topic.startswith(SPARKPLUG_PREFIX):
                    node, accepted, rejections = self._sparkplug_message(topic, payload, now, outbox)
                else:
                    node = self._nodes.get(topic)
                    if node is None:
                        unknown = self.policy.unknown_node == "reject"
                        accepted, rejections = [], [Rejection("unknown_node", f"no SensorNode publishes to topic {topic!r}")] if unknown else []
                    else:
                        accepted, rejections = check_message(node, payload, now, self.policy)
            except Exception as exc:  # a bug met by this message: it alone is refused, never the batch
                accepted, rejections = [], [self._internal_error(exc, "decoding and validation", topic)]
            if accepted:
                accepted, conflicts = check_conflicts(accepted)
                if conflicts:
                    rejections = [*rejections, *self._conflicts(conflicts, now)]
            if accepted:
                per_message.append((accepted, item, bool(rejections)))
                node_name = accepted[0].node
                by_node[node_name] += len(accepted)
                newest = max(map(_TIMESTAMP, accepted))  # map and max in C: no generator per message
                if newest > last_seen.get(node_name, 0.0):
                    last_seen[node_name] = newest
            if not rejections:
                results["accepted"] += 1
                continue
            results["partial" if accepted else "rejected"] += 1
            self._reject(p, topic, payload, node.name if node else None, rejections)
        t1 = clock()
        # The rules after decoding the whole batch, in message order: two clock readings per
        # batch instead of two per message, and the loop below stays small.
        on_reading, alerts, windows = self.engine.on_reading, p.alerts, p.windows
        add_window, width = windows.add, self.window_s
        last_ts = start = None
        for accepted, item, partial in per_message:
            try:
                for r in accepted:
                    events = on_reading(r)
                    if events:
                        alerts.extend(events)
                    if r.ts != last_ts:  # the readings of one message share its timestamp
                        last_ts = r.ts
                        start = window_start(last_ts, width)
                    add_window((r.node, r.sensor, start))
            except Exception as exc:
                # The readings before this one went through the rules and stay (the rule state
                # has them); this one and the rest of its message are refused with the message.
                done = next(i for i, x in enumerate(accepted) if x is r)
                readings.extend(accepted[:done])
                results["partial" if partial else "accepted"] -= 1
                results["partial" if done or partial else "rejected"] += 1
                self._reject(p, item[0], item[1], r.node, [self._internal_error(exc, "the alert rules", item[0], r.sensor)])
                continue
            readings.extend(accepted)
        t2 = clock()
        for scorer in self.scorers:
            for score in scorer.score(readings):
                alerts.extend(on_reading(score))
                readings.append(score)
        if batch:
            metrics.STAGE.labels("decode_validate").observe((t1 - t0) / len(batch))
            metrics.STAGE.labels("rules").observe((t2 - t1) / len(batch))
        with self._lock:
            self._dirty_windows |= windows
            self._uncommitted.append(p)
        return p

    @property
    def in_flight(self) -> int:
        """Batches prepared and not yet finished."""
        return len(self._uncommitted)

    def commit(self, p: PreparedBatch) -> None:
        """Write a prepared batch to the store and the sinks; batches are committed in the order prepared.

        May run on another thread than `prepare` (IngestService does, so that decoding the
        next batch overlaps this one's transaction); raises if a store cannot take the batch.
        """
        t_store = time.perf_counter()
        committed = False
        try:
            if self._sinks_before_store:
                for sink in self.sinks:
                    sink.write(p.readings, p.alerts, p.dead)  # raises: nothing is stored, nothing checkpointed
                p.stored = self.store.write(p.readings, p.alerts, p.dead)
            else:
                sinks = [self._sink_writers.submit(sink.write, p.readings, p.alerts, p.dead) for sink in self.sinks]
                try:
                    p.stored = self.store.write(p.readings, p.alerts, p.dead)
                    committed = True
                finally:
                    wait(sinks)  # a sink never runs ahead into the next batch, even when the store failed
                for written in sinks:
                    written.result()  # raises what the sink raised: the batch is not acknowledged
        except BaseException as exc:
            with self._lock:
                self._uncommitted.remove(p)  # given up: the broker delivers it again
                self.failed = exc  # the rules have seen this batch: no further batch (PipelineFailed)
                if committed:
                    # Its alert events are stored; whether the restarted rules derive them again
                    # from the redelivered batch depends on history they no longer have, so the
                    # receivers hear of them now: notifications are at least once, never lost.
                    self._route(p.alerts, p.now)
            raise
        if p.stored < len(p.readings):  # re-deliveries, or conflicts with readings stored earlier
            self._stored_conflicts(p)
        for sink in self.sinks:
            depth = sink.spool_depth()
            metrics.SPOOL.labels("batches").set(depth.batches)
            metrics.SPOOL.labels("bytes").set(depth.bytes)
        metrics.STORE_WRITE.observe(time.perf_counter() - t_store)

    def abandon(self, p: PreparedBatch) -> None:
        """Forget a prepared batch that will not be committed (an earlier one failed)."""
        with self._lock:
            if p in self._uncommitted:
                self._uncommitted.remove(p)

    def finish(self, p: PreparedBatch) -> None:
        """After the commit: count, route the batch's alerts, publish its dead letters."""
        with self._lock:
            self._uncommitted.remove(p)
            self.messages += p.messages
            self.readings_stored += p.stored
            for result, count in p.results.items():  # a few metric updates per batch, not per message
                metrics.MESSAGES.labels(result).inc(count)
            metrics.READINGS.inc(p.stored)
            metrics.BATCH.observe(p.messages)
            self._route(p.alerts, p.now)
        if self._publish:
            for topic, body in p.outbox:
                self._publish(topic, body)

    def _stored_conflicts(self, p: PreparedBatch) -> None:
        """Dead-letter the conflicts the guard could not see (a late reading, one stored before a restart).

        The store kept its first value; the batch is not yet acknowledged, so if this process
        dies before these dead letters are written, the redelivered batch finds them again.
        """
        found = self.store.conflicting(p.readings)
        if not found:
            return
        rows = []
        for (reading, stored), rejection in zip(found, self._conflicts(found, p.now)):
            topic = self._topics.get(reading.node, "")
            payload = orjson.dumps(reading._asdict())
            self.rejected["conflict"] += 1
            metrics.REJECTED.labels("conflict").inc()
            rows.append((p.now, topic, "conflict", rejection.detail, payload))
            p.outbox.append((f"{DEAD_LETTER_PREFIX}/{reading.node}",
                             dead_letter(topic, payload, reading.node, [rejection], p.now, uuid.uuid4().hex[:16])))
        self.store.write(dead_letters=rows)

    def _conflicts(self, conflicts: list[tuple[Reading, float]], now: float) -> list[Rejection]:
        """Count and (once per series per interval) log conflicting readings; their rejections."""
        metrics.CONFLICTS.inc(len(conflicts))
        rejections = []
        for reading, stored in conflicts:
            detail = describe_conflict(reading, stored)
            if self._conflict_log.allow((reading.node, reading.sensor), now):
                log.warning("conflicting reading: %s", detail, extra={"node": reading.node, "reason": "conflict"})
            rejections.append(Rejection("conflict", detail, reading.sensor))
        return rejections

    def _reject(self, p: PreparedBatch, topic: str, payload: bytes, node_name: str | None, rejections: list[Rejection]) -> None:
        """Count a message's rejections and dead-letter it (stored with the batch, published after it)."""
        for rej in rejections:
            self.rejected[rej.reason] += 1
            metrics.REJECTED.labels(rej.reason).inc()
        detail = "; ".join(r.detail for r in rejections)
        correlation_id = uuid.uuid4().hex[:16]
        log.info("rejected: %s", detail, extra={"correlation_id": correlation_id, "node": node_name,
                                                "topic": topic, "reason": rejections[0].reason})
        p.dead.append((p.now, topic, rejections[0].reason, detail, payload))
        p.outbox.append((f"{DEAD_LETTER_PREFIX}/{node_name or 'unknown'}",
                         dead_letter(topic, payload, node_name, rejections, p.now, correlation_id)))

    def _internal_error(self, exc: Exception, stage: str, topic: str, field: str | None = None) -> Rejection:
        """The rejection of a message that met a bug; its traceback is logged once per kind per interval."""
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        kind = (type(exc).__name__, where.tb_frame.f_code.co_filename if where else "", where.tb_lineno if where else 0)
        now, last = time.monotonic(), self._internal_errors_logged.get(kind)
        if last is None or now - last >= INTERNAL_ERROR_LOG_S:
            self._internal_errors_logged[kind] = now
            log.error("internal error in %s of a message on %s (the message is dead-lettered; further ones "
                      "like it are counted, their tracebacks not logged for %gs)", stage, topic, INTERNAL_ERROR_LOG_S,
                      exc_info=exc)
        detail = f"{type(exc).__name__} in {stage}: {exc}"
        if len(detail) > 300:  # the exception may quote the payload
            detail = detail[:300] + "…"
        detail = detail.encode("utf-8", "backslashreplace").decode()  # a lone surrogate would fail the store
        return Rejection("internal_error", f"{detail} (a gateway bug: please report it with this payload)", field)

    def _sparkplug_message(self, topic: str, payload: bytes, now: float, outbox: list[tuple[str, bytes]]
                           ) -> tuple[CompiledNode | None, list[Reading], list[Rejection]]:
        """Advance the edge node's session; request a rebirth (into `outbox`) when it lost messages."""
        try:
            t = sparkplug.parse_topic(topic)
        except sparkplug.SparkplugError as exc:
            return None, [], [Rejection(exc.reason, exc.detail)]
        if t.message_type in ("NCMD", "DCMD", "STATE"):
            return None, [], []  # commands and host state: ours or another host's, not readings
        node = self._sparkplug.get((t.group, t.edge_node, t.device))
        limit = node.max_bytes if node else 65536
        if len(payload) > limit:
            return node, [], [Rejection("oversized", f"{len(payload)} bytes; this node's payload.maxBytes is {limit}")]
        try:
            message = sparkplug.decode_payload(payload)
        except sparkplug.SparkplugError as exc:
            return node, [], [Rejection(exc.reason, exc.detail)]
        session = self._session((t.group, t.edge_node))
        outcome = sparkplug.apply(session, t, message)
        if outcome.evicted:
            metrics.STATE_EVICTIONS.labels("sparkplug_aliases").inc(outcome.evicted)
        if outcome.offline:  # NDEATH takes the edge node's devices with it; DDEATH only its device
            for (group, edge, device), dead in self._sparkplug.items():
                if (group, edge) == (t.group, t.edge_node) and (t.device is None or device == t.device):
                    self.last_seen.pop(dead.name, None)
        rejections = []
        if outcome.rebirth:
            key = (t.group, t.edge_node)
            if now - self._rebirth_asked.get(key, -1e18) >= REBIRTH_INTERVAL_S:
                self._rebirth_asked[key] = now
                outbox.append(sparkplug.rebirth_request(t, int(now * 1000)))
            rejections.append(Rejection("sequence_gap", f"{outcome.problem}; rebirth requested from {t.edge_node}"))
        if node is None:
            # Judged by the message, not by what it resolves to: a stranger's aliases are never kept.
            if (outcome.rebirth or not message.metrics or t.message_type not in _SPARKPLUG_READINGS
                    or self.policy.unknown_node == "ignore"):
                return None, [], rejections
            return None, [], [*rejections, Rejection("unknown_node", f"no SensorNode is Sparkplug {t.group}/{t.edge_node}"
                                                                      + (f"/{t.device}" if t.device else ""))]
        if not outcome.values:
            return node, [], rejections
        ts = outcome.timestamp_ms / 1000.0 if outcome.timestamp_ms is not None else None
        readings: list[Reading] = []
        check_sample(node, Sample(outcome.values, ts), now, self.policy, readings, rejections)
        return node, readings, rejections

    def _session(self, key: tuple[str, str]) -> sparkplug.EdgeNodeSession:
        """The edge node's Sparkplug session; a stranger's is kept only among the most recent few, without aliases."""
        devices = self._known_edges.get(key)
        if devices is not None:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = sparkplug.EdgeNodeSession(devices=devices)
            return session
        strangers = self._stranger_sessions
        session = strangers.get(key)
        if session is not None:
            strangers.move_to_end(key)
            return session
        session = strangers[key] = sparkplug.EdgeNodeSession(devices=frozenset())
        if len(strangers) > MAX_STRANGER_SESSIONS:
            forgotten, _ = strangers.popitem(last=False)
            self._rebirth_asked.pop(forgotten, None)
            metrics.STATE_EVICTIONS.labels("sparkplug_stranger_sessions").inc()
        return session

    def tick(self, now: float) -> None:
        """Clock-driven work: window summaries, absence alerts, repeats, node online state.

        Does nothing once a batch could not be committed (the rule state is ahead of the store).
        """
        if self.failed is not None:
            return
        with self._lock:
            closed = {w for w in self._dirty_windows if w[2] + self.window_s + self._window_grace_s <= now}
            if closed and self._uncommitted:  # summaries are computed from stored readings only
                closed -= set().union(*(p.windows for p in self._uncommitted))
        # The store's work outside the lock, so that batches keep finishing (and being
        # acknowledged) meanwhile; windows and the engine change only on this thread.
        if closed:
            self.store.summarize((node, sensor, start, self.window_s) for node, sensor, start in sorted(closed))
            with self._lock:
                self._dirty_windows -= closed
        events = self.engine.tick(now)
        if events:
            try:
                if not self._sinks_before_store:
                    self.store.write(alerts=events)
                for sink in self.sinks:
                    sink.write(alerts=events)
                if self._sinks_before_store:
                    self.store.write(alerts=events)
            except BaseException as exc:
                self.failed = exc  # the engine has fired them: it must not go on as if they were stored
                raise
        with self._lock:
            if events:
                self._route(events, now)
            self.router.repeat_due(now)
        for node, silence in self.silence.items():
            metrics.NODE_ONLINE.labels(node).set(1 if now - self.last_seen.get(node, -1e18) <= silence else 0)
        if now >= self._next_sweep:
            expired = self._dead_letter_store.expire_dead_letters(now - self.dead_letter_retention_s)
            metrics.DEAD_LETTERS_EXPIRED.inc(expired)
            self._next_sweep = now if expired >= EXPIRE_ROWS else now + DEAD_LETTER_SWEEP_S

    def close_windows(self) -> None:
        """Summarize every window that has readings, open or not (at shutdown)."""
        self.store.summarize((node, sensor, start, self.window_s) for node, sensor, start in sorted(self._dirty_windows))
        self._dirty_windows.clear()

    def online(self, now: float) -> dict[str, bool]:
        return {node: now - self.last_seen.get(node, -1e18) <= s for node, s in self.silence.items()}

    def snapshot(self) -> dict[str, Any]:
        """Per-series state as plain values: what a shard checkpoints with each batch (ingest/scaleout.py)."""
        return {"rules": self.engine.snapshot(), "last_seen": self.last_seen, "windows": list(self._dirty_windows)}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue where the shard's previous owner committed: alerts, Online, windows still to summarize."""
        self.engine.restore(snapshot["rules"])
        self.last_seen.update(snapshot["last_seen"])
        self._dirty_windows.update(tuple(w) for w in snapshot["windows"])

    def _route(self, events: list[AlertEvent], now: float) -> None:
        for e in events:
            metrics.ALERTS.labels(e.rule, e.state, e.severity).inc()
        self.router.route(events, now)


#: The cyclic garbage collector's first-generation threshold while a gateway runs (process-wide,
#: only ever raised). A batch keeps about six container objects per message alive until it is
#: stored (readings, MQTT packets), none in a cycle, so at CPython's default of 700 the collector
#: runs every hundred messages for nothing: about a tenth of the decoding time (bench stage costs).
GC_THRESHOLD = 50_000


class IngestService:
    """Runs a Pipeline behind a subscription to the plant's topics, on two threads.

    One thread receives, decodes, validates and runs the rules (`Pipeline.prepare`); the
    other commits each batch to the store (`commit`), routes its alerts (`finish`) and
    then acknowledges it. So the next batch is decoded while the previous one is written
    (SQLite runs without the interpreter lock), and a message is still acknowledged only
    after its batch is committed.
    """

    #: Prepared batches that may wait for the committing thread: beyond, receiving waits.
    COMMIT_QUEUE = 2
    #: A batch smaller than this, with nothing in flight, is stored on the receiving thread:
    #: at a steady rate batches are a few messages, and handing each to the other thread
    #: would only add thread wake-ups to every alert's latency. Backlogs and bursts come in
    #: batches of thousands, and those overlap decoding with the commit.
    INLINE_BELOW = 64

    def __init__(self, pipeline: Pipeline, broker_url: str, client_id: str | None = None, tick_s: float = 0.5):
        self.pipeline = pipeline
        self.subscriber = BatchSubscriber(broker_url, pipeline.subscriptions, client_id)
        self._tick_s = tick_s
        self._next_tick = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._commits: queue.Queue[tuple[PreparedBatch, Future] | None] = queue.Queue(self.COMMIT_QUEUE)
        self._committer = threading.Thread(target=self._commit_loop, name="pipeline-commit", daemon=True)
        #: Batches handed to the committer whose Future is not yet completed (their PUBACKs not
        #: yet sent). The pipeline's in_flight drops when a batch is finished, just before
        #: that: an inline batch must wait for both, or its PUBACKs could overtake.
        self._queued = 0
        self._queued_lock = threading.Lock()
        self.error: BaseException | None = None

    def start(self, connect_timeout: float | None = 10.0) -> None:
        """Start receiving; wait until subscribed (None: do not wait, /readyz says when)."""
        gen0, gen1, gen2 = gc.get_threshold()
        if gen0 < GC_THRESHOLD:
            gc.set_threshold(GC_THRESHOLD, gen1, gen2)
        self._thread.start()
        if connect_timeout is not None and not self.subscriber.connected_once.wait(connect_timeout):
            self.stop()
            raise TimeoutError(f"could not subscribe at the broker within {connect_timeout:g}s")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ready(self) -> bool:
        return self.alive and self.subscriber.connected

    def _run(self) -> None:
        self._committer.start()
        try:
            self.subscriber.run(self._handle, self._stop, self._idle)
        except BaseException as exc:  # recorded for /healthz and the exit code; the thread must not die silently
            log.exception("pipeline stopped")
            self.error = exc
        finally:
            self._commits.put(None)
            self._committer.join()

    def _handle(self, batch: list[wire.Publish]) -> Future | None:
        metrics.INFLIGHT.inc(len(batch))
        if len(batch) < self.INLINE_BELOW and not self._queued and not self.pipeline.in_flight:
            try:
                self.pipeline.process(batch, time.time())
            finally:
                metrics.INFLIGHT.dec(len(batch))
            return None  # stored: the subscriber acknowledges it now
        try:
            prepared = self.pipeline.prepare(batch, time.time())
        except BaseException:
            metrics.INFLIGHT.dec(len(batch))  # never handed to the committer, so it never finishes
            raise
        stored: Future = Future()
        with self._queued_lock:
            self._queued += 1
        self._commits.put((prepared, stored))
        return stored

    def _commit_loop(self) -> None:
        """Commit and finish batches in order; after a failure, fail the rest (the broker keeps them)."""
        failure: BaseException | None = None
        while (item := self._commits.get()) is not None:
            prepared, stored = item
            if failure is None:
                try:
                    self.pipeline.commit(prepared)
                    self.pipeline.finish(prepared)
                except BaseException as exc:  # handed to the receiving thread, which stops with it
                    failure = exc
            else:
                self.pipeline.abandon(prepared)  # never committed: the broker keeps it
            metrics.INFLIGHT.dec(prepared.messages)
            if failure is None:
                stored.set_result(prepared.stored)  # its PUBACKs go out now, from this thread
            else:
                stored.set_exception(failure)
            with self._queued_lock:  # only now: set_result has sent its PUBACKs (its callbacks)
                self._queued -= 1

    def _idle(self) -> None:
        now = time.time()
        if now >= self._next_tick:
            self.pipeline.tick(now)
            self._next_tick = now + self._tick_s

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand is stored and acknowledged; the broker keeps the rest."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
