"""The ingestion pipeline's stages: MQTT messages → decode/validate → rules → store → alerts.

`Pipeline` keeps the per-series state (rule engine, conflict guard, summary windows,
last seen) and takes each batch through `prepare` (decode, validate, rules: no I/O),
`commit` (the store and the sinks, writes.py) and `finish` (counters,
dead letters published); `tick` does the clock's work. runner.py runs it behind an MQTT
subscription, scaleout.py once per shard. Both runtimes use them: `plantwatch up` (one
process) and `plantwatch serve ingest` (the gateway Deployment the operator renders).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol, runtime_checkable

import orjson

from plantwatch import metrics
from plantwatch.ingest import dead_letters
from plantwatch.ingest.conflicts import LOG_INTERVAL_S as CONFLICT_LOG_S
from plantwatch.ingest.conflicts import SeriesGuard
from plantwatch.ingest.conflicts import describe as describe_conflict
from plantwatch.ingest.dead_letters import DEAD_LETTER_PREFIX
from plantwatch.ingest.quality import Figures, QualityLedger
from plantwatch.ingest.sparkplug_sessions import SPARKPLUG_PREFIX, SparkplugSessions, sparkplug_key
from plantwatch.ingest.status_topics import Announcement, Presence, node_presence, parse_status, status_owners, topic_problem
from plantwatch.ingest.validate import CompiledNode, Policy, Rejection, check_message
from plantwatch.ingest.writes import BatchWriter, Sink, Store
from plantwatch.logs import LogLimiter, correlated
from plantwatch.plant.load import Plant, PlantError, load_plant
from plantwatch.plant.model import duration_seconds
from plantwatch.readings import AlertEvent, Reading
from plantwatch.rules.engine import RuleEngine
from plantwatch.rules.windows import window_start
from plantwatch.store.retention import Retention, Sweeper
from plantwatch.store.sqlite import DeadLetter

log = logging.getLogger(__name__)

_TIMESTAMP = attrgetter("ts")
#: Seconds between two summaries of one closed window while readings keep arriving for it (a backlog draining).
SUMMARY_INTERVAL_S = 5.0
#: Seconds between two tracebacks of one internal error (exception type and the line that raised
#: it): each such message is still dead-lettered and counted, and a bug stays visible in the log.
INTERNAL_ERROR_LOG_S = 60.0
#: Seconds between two WARNING lines for the dead letters of one (node, reason), or one alert's transitions to one state;
#: the others are logged at INFO.
#: One a node's misconfiguration is seen at the default level, and a flood of bad messages does not flood the log.
WARN_INTERVAL_S = 10.0


class Scorer(Protocol):
    """A streaming detector (inference.stream.StreamScorer): its scores are readings like any other."""

    #: The DetectorModel's name: its state's key in the checkpoint.
    detector: str

    def score(self, readings: list[Reading]) -> Iterable[Reading]: ...

    def snapshot(self) -> dict[str, Any]:
        """Per node, what scoring on needs (feature windows, alarm state), JSON-ready and bounded."""

    def restore(self, snapshot: dict[str, Any]) -> None: ...


@runtime_checkable
class FrameScorer(Scorer, Protocol):
    """An image detector (inference.frame_scorer.FrameScorer, or a DeferredScorer that may become one): it scores
    the frames of jpeg-frame nodes, given beside the batch's readings."""

    def score_frames(self, frames: Sequence[tuple[Reading, bytes]]) -> Iterable[Reading]: ...


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
    #: On every log line about this batch; its dead letters' ids are `<correlation_id>-<n>`.
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    readings: list[Reading] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    #: Its dead letters' rows, stored in its transaction.
    dead: list[DeadLetter] = field(default_factory=list)
    #: Dead letters and Sparkplug commands to publish once the batch is stored.
    outbox: list[tuple[str, bytes]] = field(default_factory=list)
    results: Counter[str] = field(default_factory=Counter)
    #: The summary windows its readings fall in: (node, sensor, start).
    windows: set[tuple[str, str, float]] = field(default_factory=set)
    #: Readings that were new to the store (set by the commit).
    stored: int = 0
    #: The pipeline's state right after this batch (`snapshot`, as JSON), taken when it was prepared: what a
    #: store that commits checkpoints (a shard's) commits with it, whatever batches were prepared since.
    state: bytes | None = None


class Pipeline:
    """Processes batches of messages; owns per-series state.

    `process` does a whole batch on the calling thread. Its three steps may also run
    apart: `prepare` (decode, validate, rules) on one thread, and `commit` (the store's
    transaction) then `finish` (counters, dead letters) on another, batch
    after batch in the order prepared: IngestService overlaps them that way.
    """

    def __init__(
        self,
        plant: Plant,
        store: Store,
        publish: Callable[[str, bytes], None] | None = None,
        policy: Policy = Policy(),
        now: float | None = None,
        window_s: float = 60.0,
        window_grace_s: float = 5.0,
        sinks: Sequence[Sink] = (),
        scorers: Sequence[Scorer] = (),
        retention: Retention = Retention(),
        on_alerts: Callable[[], None] | None = None,
        sweeper: Sweeper | None = None,
    ):
        self.plant = plant
        self.store = store
        #: Deletes from the store what the retention says is old, from the tick (`sweeper`: one shared by
        #: the pipelines of one store, which then sweeps by its own retention).
        self.sweeper = sweeper or Sweeper(store, retention)
        #: Further stores every batch is written to beside the embedded one (InfluxDB): a sink
        #: that cannot take a batch raises, and the batch is not acknowledged.
        self.sinks = sinks
        self._writes = BatchWriter(store, sinks)
        #: Why a batch could not be committed; from then on the pipeline takes no batch (PipelineFailed).
        self.failed: BaseException | None = None
        #: Streaming detectors: their `anomaly_score` readings go through the rules and into the
        #: store like any other reading.
        self.scorers = scorers
        self.policy = policy
        self._publish = publish
        #: Called once a batch with alert events is stored (the notifier steps at once instead of at its next tick).
        self._on_alerts = on_alerts
        compiled = [CompiledNode.of(n) for n in plant.nodes]
        self._nodes = {c.topic: c for c in compiled if c.format != "sparkplug-b"}
        #: Topics whose message is a frame (jpeg-frame): accepted ones go to the image detectors.
        self._frame_topics = frozenset(c.topic for c in compiled if c.format == "jpeg-frame")
        self._topics = {c.name: c.topic for c in compiled}
        self.last_seen: dict[str, float] = {}
        #: Each node's newest announcement (status topic or Sparkplug birth/death), and the nodes whose
        #: newest is `offline` with no reading since (ingest/status_topics.py).
        self.announced: dict[str, Announcement] = {}
        self._gone: set[str] = set()
        owners, self._ambiguous_status = status_owners((c.name, c.format, c.topic) for c in compiled)
        by_name = {c.name: c for c in compiled}
        self._status = {t: by_name[name] for t, name in owners.items()}
        self.sparkplug = SparkplugSessions([c for c in compiled if c.format == "sparkplug-b"], policy, self.announce)
        #: How long each node may be silent before it is Offline: heartbeat interval × missed beats.
        self.silence = {n.name: duration_seconds(n.spec.heartbeat.interval) * n.spec.heartbeat.missed_beats for n in plant.nodes}
        self.readings_by_node: Counter[str] = Counter()
        #: Each node's readings out of range, Sparkplug sequence breaks and clock skew over a sliding window.
        self.quality_ledger = QualityLedger(compiled)
        self.engine = RuleEngine(plant, time.time() if now is None else now)
        #: The newest (ts, value) per series, to refuse a same-key reading with another value.
        self._series = SeriesGuard()
        self._conflict_log = LogLimiter(CONFLICT_LOG_S)
        self._dead_letter_log = LogLimiter(WARN_INTERVAL_S)
        self._alert_log = LogLimiter(WARN_INTERVAL_S)
        self.window_s = window_s
        self._window_grace_s = window_grace_s
        #: Windows that received readings since they were last summarized: (node, sensor, start).
        self._dirty_windows: set[tuple[str, str, float]] = set()
        #: When (the tick's clock) each window summarized in the last SUMMARY_INTERVAL_S was.
        self._summarized_at: dict[tuple[str, str, float], float] = {}
        #: Prepared batches not yet finished (stored and counted), oldest first.
        self._uncommitted: deque[PreparedBatch] = deque()
        #: Guards what `finish` (possibly on a committing thread) shares with `prepare` and `tick`:
        #: the dirty windows, the batches in flight and the counters.
        self._lock = threading.Lock()
        #: Per series (node, sensor): its exported value and last-seen gauges and the newest timestamp
        #: they show; only `finish` touches it.
        self._exported: dict[tuple[str, str], list[Any]] = {}
        #: What this pipeline last added to ALERTS_FIRING, per (rule, severity).
        self._firing_exported: dict[tuple[str, str], int] = {}
        #: Messages whose batch is stored.
        self.messages = 0
        self.readings_stored = 0
        self.rejected: Counter[str] = Counter()
        #: When each internal error (type, file, line; bounded by the code) last logged its traceback.
        #: Tracebacks of internal errors, once per kind (exception type and where it was raised) per interval.
        self._internal_error_log = LogLimiter(INTERNAL_ERROR_LOG_S)

    @property
    def subscriptions(self) -> list[str]:
        """One `<first level>/#` filter per top-level topic the nodes use.

        Wider than the node topics on purpose: a message on an unknown topic under
        the plant's prefixes is a node misconfiguration worth a dead letter, not silence.
        Filters never overlap, so the broker delivers each message once.
        """
        return sorted({topic.split("/", 1)[0] + "/#" for topic in self._topics.values()})

    def process(self, batch: Sequence[tuple[str, bytes]], now: float) -> None:
        """Decode, validate, evaluate, and store one batch, all on the calling thread."""
        prepared = self.prepare(batch, now)
        self.commit(prepared)
        self.finish(prepared)

    def prepare(self, batch: Sequence[tuple[str, bytes]], now: float) -> PreparedBatch:
        """Decode, validate and run the rules over a batch: everything but I/O (the pipeline's thread).

        Items are (topic, payload) pairs or anything indexed the same way (mqtt.wire.Publish).
        Raises PipelineFailed once a batch could not be committed.
        """
        if self.failed is not None:
            raise PipelineFailed(
                f"an earlier batch could not be committed ({self.failed!r}); its rule state is ahead of the store"
            ) from self.failed
        p = PreparedBatch(len(batch), now)
        with correlated(p.correlation_id):
            self._prepare(p, batch, now)
        if self.store.commits_checkpoint:
            p.state = orjson.dumps(self.snapshot())
        return p

    def _prepare(self, p: PreparedBatch, batch: Sequence[tuple[str, bytes]], now: float) -> None:
        readings, outbox, results = p.readings, p.outbox, p.results
        last_seen, by_node = self.last_seen, self.readings_by_node
        #: Each message's accepted readings, the message, and whether it was partly refused:
        #: a rule may still refuse it.
        per_message: list[tuple[list[Reading], Any, bool]] = []
        #: Accepted frames (the reading each made, its JPEG), for the image detectors.
        frames: list[tuple[Reading, bytes]] = []
        frame_topics = self._frame_topics
        check_conflicts = self._series.check
        sparkplug_message = self.sparkplug.message
        observe = self.quality_ledger.observe
        gone = self._gone
        clock = time.perf_counter
        t0 = clock()
        for item in batch:
            topic, payload = item[0], item[1]
            if topic.startswith(DEAD_LETTER_PREFIX):
                continue  # our own dead letters, seen when a node topic shares their top level
            node = None
            try:  # free in CPython 3.11+ unless something raises
                if topic.startswith(SPARKPLUG_PREFIX):
                    node, accepted, rejections = sparkplug_message(topic, payload, now, outbox)
                else:
                    node = self._nodes.get(topic)
                    if node is None:
                        node, accepted, rejections = self._not_data(topic, payload, now)
                    else:
                        accepted, rejections = check_message(node, payload, now, self.policy)
            except Exception as exc:  # a bug met by this message: it alone is refused, never the batch
                accepted, rejections = [], [self._internal_error(exc, "decoding and validation", topic)]
            if node is not None and (accepted or rejections):
                observe(node.name, now, accepted, rejections)
            if accepted:
                accepted, conflicts = check_conflicts(accepted)
                if conflicts:
                    rejections = [*rejections, *self._conflicts(conflicts, now)]
            if accepted:
                per_message.append((accepted, item, bool(rejections)))
                if frame_topics and topic in frame_topics:
                    frames.append((accepted[0], payload))
                node_name = accepted[0].node
                by_node[node_name] += len(accepted)
                if gone and node_name in gone:  # it publishes again: its Last Will no longer holds
                    self._revive(node_name)
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
            scores = scorer.score(readings)
            if frames and isinstance(scorer, FrameScorer):
                scores = [*scores, *scorer.score_frames(frames)]
            for score in scores:
                alerts.extend(on_reading(score))
                readings.append(score)
        if batch:
            metrics.STAGE.labels("decode_validate").observe((t1 - t0) / len(batch))
            metrics.STAGE.labels("rules").observe((t2 - t1) / len(batch))
        with self._lock:
            self._dirty_windows |= windows
            self._uncommitted.append(p)

    @property
    def in_flight(self) -> int:
        """Batches prepared and not yet finished."""
        return len(self._uncommitted)

    def commit(self, p: PreparedBatch) -> None:
        """Write a prepared batch to the store and the sinks; batches are committed in the order prepared.

        May run on another thread than `prepare` (IngestService does, so that decoding the
        next batch overlaps this one's transaction); raises if a store cannot take the batch.
        """
        with correlated(p.correlation_id):
            self._commit(p)

    def _commit(self, p: PreparedBatch) -> None:
        t_store = time.perf_counter()
        committed = False

        def stored(count: int) -> None:
            nonlocal committed
            p.stored, committed = count, True

        try:
            self._writes.write(p.readings, p.alerts, p.dead, stored, p.state)
        except BaseException as exc:
            with self._lock:
                self._uncommitted.remove(p)  # given up: the broker delivers it again
                self.failed = exc  # the rules have seen this batch: no further batch (PipelineFailed)
                if committed:
                    # Its alert events are stored: the notifier, which follows the stored events
                    # (alerts/notifier.py), announces them whatever the restarted rules derive.
                    self._count_alerts(p.alerts)
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
        """After the commit: count, publish its dead letters."""
        with correlated(p.correlation_id):
            self._finish(p)

    def _finish(self, p: PreparedBatch) -> None:
        with self._lock:
            self._uncommitted.remove(p)
            self.messages += p.messages
            self.readings_stored += p.stored
            for result, count in p.results.items():  # a few metric updates per batch, not per message
                metrics.MESSAGES.labels(result).inc(count)
            metrics.READINGS.inc(p.stored)
            metrics.BATCH.observe(p.messages)
            self._count_alerts(p.alerts)
        if p.alerts:
            self._log_alerts(p.alerts)
            if self._on_alerts:
                self._on_alerts()
        self._export(p.readings)
        if self._publish:
            for topic, body in p.outbox:
                self._publish(topic, body)

    def _export(self, readings: list[Reading]) -> None:
        """Each stored series' newest value and time as gauges (what a PrometheusRule reads): one update
        per series per batch, however many readings it brought; a late reading leaves them as they are."""
        newest: dict[tuple[str, str], Reading] = {}
        for r in readings:
            key = (r.node, r.sensor)
            seen = newest.get(key)
            if seen is None or r.ts >= seen.ts:
                newest[key] = r
        exported = self._exported
        for key, r in newest.items():
            series = exported.get(key)
            if series is None:
                value, seen_at = metrics.SENSOR_VALUE.labels(r.node, r.sensor, r.type, r.unit), metrics.SENSOR_LAST_SEEN.labels(*key)
                series = exported[key] = [value, seen_at, float("-inf")]
            elif r.ts <= series[2]:
                continue
            series[0].set(r.value)
            series[1].set(r.ts)
            series[2] = r.ts

    def _stored_conflicts(self, p: PreparedBatch) -> None:
        """Dead-letter the conflicts the guard could not see (a late reading, one stored before a restart).

        The store kept its first value; the batch is not yet acknowledged, so if this process
        dies before these dead letters are written, the redelivered batch finds them again.
        """
        found = self.store.conflicting(p.readings)
        if not found:
            return
        rows: list[DeadLetter] = []
        for (reading, _), rejection in zip(found, self._conflicts(found, p.now)):
            self.rejected["conflict"] += 1
            metrics.REJECTED.labels("conflict").inc()
            row, message = dead_letters.letter(
                self._topics.get(reading.node, ""),
                orjson.dumps(reading._asdict()),
                reading.node,
                [rejection],
                p.now,
                f"{p.correlation_id}-{len(p.dead) + len(rows)}",
            )
            rows.append(row)
            p.outbox.append(message)
        if p.state is not None:  # with the batch's own checkpoint again: later batches may be prepared already
            self.store.write(dead_letters=rows, state=p.state)
        else:
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
        correlation_id = f"{p.correlation_id}-{len(p.dead)}"
        row, message = dead_letters.letter(topic, payload, node_name, rejections, p.now, correlation_id)
        log.log(
            logging.WARNING if self._dead_letter_log.allow((node_name, rejections[0].reason), time.monotonic()) else logging.INFO,
            "rejected: %s",
            row[3],
            extra={"correlation_id": correlation_id, "node": node_name, "topic": topic, "reason": rejections[0].reason},
        )
        p.dead.append(row)
        p.outbox.append(message)

    def _not_data(self, topic: str, payload: bytes, now: float) -> tuple[CompiledNode | None, list[Reading], list[Rejection]]:
        """A message on no node's data topic: a node's status, a topic no node can have, or an unknown node's."""
        node = self._status.get(topic)
        if node is not None:
            said = parse_status(topic, payload, now)
            if isinstance(said, Rejection):
                return node, [], [said]
            self.announce(node.name, said)
            return node, [], []
        problem = topic_problem(topic)
        if problem is not None:  # refused whatever the unknown-node policy: no node, nor a misconfigured one, sends it
            return None, [], [Rejection("bad_topic", f"topic {topic!r} {problem}")]
        if self.policy.unknown_node == "ignore":
            return None, [], []
        shared = self._ambiguous_status.get(topic)
        if shared:
            detail = (
                f"topic {topic!r} would be the status topic of SensorNodes {', '.join(shared)} (their data topics "
                "share its prefix, or it is another node's data topic), so it names none; give each node its own topic prefix"
            )
            return None, [], [Rejection("unknown_node", detail)]
        return None, [], [Rejection("unknown_node", f"no SensorNode publishes to topic {topic!r}")]

    def announce(self, node: str, said: Announcement) -> None:
        """Record a node's birth or death (its status topic, Sparkplug); an `offline` holds until its next reading."""
        self.announced[node] = said
        if said.online:
            self._gone.discard(node)
        else:
            self._gone.add(node)

    def _revive(self, node: str) -> None:
        self._gone.discard(node)
        self.announced.pop(node, None)

    def _internal_error(self, exc: Exception, stage: str, topic: str, field: str | None = None) -> Rejection:
        """The rejection of a message that met a bug; its traceback is logged once per kind per interval."""
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        kind = (type(exc).__name__, where.tb_frame.f_code.co_filename if where else "", where.tb_lineno if where else 0)
        if self._internal_error_log.allow(kind, time.monotonic()):
            log.error(
                "internal error in %s of a message on %s (the message is dead-lettered; further ones "
                "like it are counted, their tracebacks not logged for %gs)",
                stage,
                topic,
                INTERNAL_ERROR_LOG_S,
                exc_info=exc,
            )
        detail = f"{type(exc).__name__} in {stage}: {exc}"
        if len(detail) > 300:  # the exception may quote the payload
            detail = detail[:300] + "…"
        detail = detail.encode("utf-8", "backslashreplace").decode()  # a lone surrogate would fail the store
        return Rejection("internal_error", f"{detail} (a gateway bug: please report it with this payload)", field)

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
            closed = self._due(closed, now)
        # The store's work outside the lock, so that batches keep finishing (and being
        # acknowledged) meanwhile; windows and the engine change only on this thread.
        if closed:
            self.store.summarize((node, sensor, start, self.window_s) for node, sensor, start in sorted(closed))
            with self._lock:
                self._dirty_windows -= closed
        events = self.engine.tick(now)
        if events:
            try:
                self._writes.write(alerts=events)
            except BaseException as exc:
                self.failed = exc  # the engine has fired them: it must not go on as if they were stored
                raise
        if events:
            with self._lock:
                self._count_alerts(events)
            self._log_alerts(events)
            if self._on_alerts:
                self._on_alerts()
        for node, online in self.online(now).items():
            metrics.NODE_ONLINE.labels(node).set(1 if online else 0)
        for node, seen in list(self.last_seen.items()):
            if node in self.silence:  # declared nodes only: a message names its node, the plant bounds them
                metrics.NODE_LAST_SEEN.labels(node).set(seen)
        self.sweeper.tick(now)

    def _due(self, closed: set[tuple[str, str, float]], now: float) -> set[tuple[str, str, float]]:
        """Of the closed dirty windows, those to summarize now: not one summarized less than SUMMARY_INTERVAL_S ago.

        A backlog draining through old windows (a gateway catching up after an outage) fills them batch after
        batch: each is summarized when it first has readings, then at most every SUMMARY_INTERVAL_S, not read
        back from the store at every tick. Late data for a window summarized longer ago counts at once.
        """
        summarized = self._summarized_at
        for w in [w for w, at in summarized.items() if now - at >= SUMMARY_INTERVAL_S]:
            del summarized[w]
        due = {w for w in closed if w not in summarized}
        summarized.update(dict.fromkeys(due, now))
        return due

    def close_windows(self) -> None:
        """Summarize every window that has readings, open or not (at shutdown)."""
        self.store.summarize((node, sensor, start, self.window_s) for node, sensor, start in sorted(self._dirty_windows))
        self._dirty_windows.clear()

    def presence(self, now: float) -> dict[str, Presence]:
        """Each node's Online state and why: its heartbeat and its newest announcement (status_topics.node_presence)."""
        last_seen, announced = self.last_seen, self.announced
        return {node: node_presence(now, s, last_seen.get(node), announced.get(node)) for node, s in self.silence.items()}

    def online(self, now: float) -> dict[str, bool]:
        return {node: p.online for node, p in self.presence(now).items()}

    def quality(self, now: float) -> dict[str, Figures]:
        """Each node's data quality over the last few minutes (ingest/quality.py), for the node status writer's thread."""
        return self.quality_ledger.figures(now)

    def snapshot(self) -> dict[str, Any]:
        """Per-series state as plain values: what a shard checkpoints with each batch (ingest/scaleout.py)."""
        return {
            "rules": self.engine.snapshot(),
            "last_seen": self.last_seen,
            "announced": {node: [a.online, a.at, a.reason, a.message] for node, a in self.announced.items()},
            "windows": list(self._dirty_windows),
            "scorers": {s.detector: s.snapshot() for s in self.scorers},
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue where the shard's previous owner committed: alerts, Online, windows still to summarize,
        and the detectors' feature windows and alarms (so a moved node is not warmed up again)."""
        self.engine.restore(snapshot["rules"])
        self.last_seen.update(snapshot["last_seen"])
        for node, said in snapshot.get("announced", {}).items():  # absent from checkpoints written before births were kept
            self.announce(node, Announcement(*said))
        self._dirty_windows.update(tuple(w) for w in snapshot["windows"])
        scorers = snapshot.get("scorers", {})  # absent from checkpoints written before scorers were kept
        for s in self.scorers:
            if s.detector in scorers:
                s.restore(scorers[s.detector])
        self._export_firing()

    def _log_alerts(self, events: list[AlertEvent]) -> None:
        """A stored alert transition at WARNING, once per alert, state and level per interval (the rest at INFO: a
        flapping alert does not flood the default log, an escalation is still seen); notifying is the notifier's."""
        now = time.monotonic()
        for e in events:
            log.log(
                logging.WARNING if self._alert_log.allow((e.fingerprint, e.state, e.severity), now) else logging.INFO,
                "alert %s: %s %s (%s)",
                e.state,
                e.severity,
                e.fingerprint,
                e.summary,
                extra={"node": e.node, "rule": e.rule, "sensor": e.sensor, "severity": e.severity, "state": e.state},
            )

    def _count_alerts(self, events: list[AlertEvent]) -> None:
        for e in events:
            metrics.ALERTS.labels(e.rule, e.state, e.severity).inc()
        if events:  # only a transition changes what fires
            self._export_firing()

    def _export_firing(self) -> None:
        now, exported = self.engine.firing_counts(), self._firing_exported
        for key in now.keys() | exported.keys():
            if now.get(key, 0) != exported.get(key, 0):
                metrics.ALERTS_FIRING.labels(*key).inc(now.get(key, 0) - exported.get(key, 0))
                exported[key] = now.get(key, 0)
