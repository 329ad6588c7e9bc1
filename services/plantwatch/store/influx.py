"""The InfluxDB store: readings, alert events and dead letters as line protocol, with an on-disk spool.

Same `write()` interface as `SqliteStore`. Line protocol is formatted here by a pure
function (`to_line_protocol`) and posted, gzip'd (level 1), in batches of thousands through
influxdb-client's write service, synchronously, so every batch is either acknowledged by the
server or on disk when `write()` returns.

Two layouts (`layout=`). `narrow` (the default): a reading is the point
`reading,node=..,sensor=..,type=..,unit=.. value=..` at its timestamp. `wide`: the readings
of one node at one timestamp (one message's, for the JSON formats) are one point
`node_readings,node=.. <sensor>=<value>,...`, as Telegraf's JSON parser writes a message:
a quarter of the points and series keys for a four-sensor node, and about half of influxd's
CPU (bench: the cluster's gateway), but no type or unit tags (they are in the SensorNode).

Idempotence: InfluxDB keeps one point per (series, timestamp), field by field — the last write
wins. So a reading written twice (a re-delivered MQTT message, a spooled batch replayed
after a write whose acknowledgement was lost) is still one point, exactly as SQLite's
(node, sensor, ts) key makes it one row.

While InfluxDB is down (connection refused, timeout, 5xx, 429) batches go to a bounded
spool directory, one fsync'd file per batch named by a monotonic sequence, and are
replayed in that order before any new data once the server answers again. When the
spool would exceed its byte limit, `write()` raises `SpoolFullError`: the caller does not
acknowledge the messages, so the broker keeps them, instead of the store dropping data.
Batches the server refuses as malformed (400, 413, 422) are never retried: they are
moved to `<spool_dir>/rejected/`, logged and counted (`rejected_batches`).
"""

from __future__ import annotations

import base64
import gzip
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision, WriteService
from influxdb_client.rest import ApiException

from plantwatch.contracts.names import INFLUX_LAYOUTS
from plantwatch.readings import AlertEvent, Reading
from plantwatch.store.sqlite import DeadLetter, payload_record

log = logging.getLogger(__name__)

#: Compression of a write's body: level 1, see InfluxStore.__init__.
GZIP_LEVEL = 1
#: Statuses after which the same batch may succeed later: the server is down, overloaded or restarting.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that say the batch itself is wrong (bad syntax, too large, field type conflict): never retried.
REJECTED_STATUSES = frozenset({400, 413, 422})

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": r"\\"})


class SpoolFullError(RuntimeError):
    """InfluxDB is unreachable and the spool has no room left for the batch in hand."""


class BatchRejected(Exception):
    """InfluxDB refused a batch as malformed (400, 413, 422): retrying the same bytes cannot succeed."""


class InfluxWriteError(RuntimeError):
    """InfluxDB refused a write for a reason that retrying cannot fix (bad token, unknown bucket, ...)."""


@dataclass(frozen=True, slots=True)
class SpoolDepth:
    batches: int
    bytes: int


# --- line protocol (pure) ---------------------------------------------------------------------


def ns(ts: float) -> int:
    """Epoch seconds → nanoseconds, rounded to the microsecond.

    A float epoch carries ~0.2 µs of noise (1700000000.123 * 1e9 is ...123000064), so
    whole microseconds are the timestamp the device meant, and the same float always
    maps to the same point.
    """
    return round(ts * 1_000_000) * 1000


def _tag(value: str) -> str:
    """Escape a tag value as influxdb-client's Point does.

    Line protocol has no escape for newline, CR or tab: they become the two characters `\\n`
    etc. Node and sensor names (DNS labels) and types (an enum) cannot contain them, nor a
    trailing backslash, which no escape can write; a unit is free text up to 32 characters.
    """
    return value.translate(_TAG_ESCAPES)


def _string(value: str) -> str:
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def _float(value: float) -> str:
    """A float field that stays a float: `21` is written `21.0` (not an integer field, which would conflict)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"line protocol has no {value!r}; validation rejects non-finite readings before the store")
    return repr(value)


def _tags(pairs: Iterable[tuple[str, str]]) -> str:
    """`,k=v` per non-empty value (line protocol has no empty tag values), keys in the sorted order InfluxDB wants."""
    return "".join(f",{k}={_tag(v)}" for k, v in pairs if v)


@lru_cache(maxsize=65536)
def _series(node: str, sensor: str, type_: str, unit: str) -> str:
    """`reading,<tags> value=`: the same for every reading of a series, so escaped once."""
    return f"reading{_tags((('node', node), ('sensor', sensor), ('type', type_), ('unit', unit)))} value="


def alert_line(a: AlertEvent) -> str:
    tags = _tags((("node", a.node), ("rule", a.rule), ("sensor", a.sensor), ("severity", a.severity), ("state", a.state)))
    fields = f"fingerprint={_string(a.fingerprint)},summary={_string(a.summary)}"
    if a.value is not None:
        fields += f",value={_float(a.value)}"
    return f"alert_event{tags} {fields} {ns(a.ts)}"


def dead_letter_lines(dead_letters: Iterable[DeadLetter]) -> Iterator[str]:
    """Dead letters, the payload's prefix in base64 with its full size and sha256 (as SQLite keeps them);
    the i-th of a batch at received + i ns, so that letters received together stay apart."""
    for i, (received, topic, reason, detail, payload) in enumerate(dead_letters):
        prefix, size, sha256 = payload_record(payload)
        fields = (
            f"topic={_string(topic)},detail={_string(detail)},"
            f"payload={_string(base64.b64encode(prefix).decode())},payload_bytes={size}i,payload_sha256={_string(sha256)}"
        )
        yield f"dead_letter{_tags((('reason', reason),))} {fields} {ns(received) + i}"


def to_line_protocol(readings: Iterable[Reading]) -> bytes:
    """Readings as line protocol: measurement `reading`, tags node/sensor/type/unit, field `value`, ns timestamps."""
    series, number, finite = _series, float.__repr__, math.isfinite
    lines = []
    append = lines.append
    last_ts, stamp = None, ""
    for node, sensor, type_, value, ts, unit in readings:
        if type(value) is not float:
            value = float(value)
        if not finite(value):
            _float(value)  # raises, saying why
        if ts != last_ts:  # the readings of one message share its timestamp
            last_ts, stamp = ts, f" {ns(ts)}"
        append(series(node, sensor, type_, unit) + number(value) + stamp)
    return "\n".join(lines).encode()


#: The wide layout's measurement: one point per node and timestamp, a field per sensor.
WIDE_MEASUREMENT = "node_readings"


@lru_cache(maxsize=65536)
def _node_series(node: str) -> str:
    return f"{WIDE_MEASUREMENT}{_tags((('node', node),))} "


@lru_cache(maxsize=65536)
def _field_key(sensor: str) -> str:
    """A sensor's name as a field key (a DNS label needs no escape; anything else is escaped as line protocol wants)."""
    return sensor.translate(_TAG_ESCAPES) + "="


def to_wide_line_protocol(readings: Iterable[Reading]) -> bytes:
    """Readings as line protocol, one point per run of readings of one node at one timestamp (a message's readings
    come together): measurement `node_readings`, tag node, a float field per sensor, ns timestamps. A sensor seen
    twice in one run (a redelivered message in the same batch) ends the run: a point names each field once."""
    number, finite = float.__repr__, math.isfinite
    lines: list[str] = []
    append = lines.append
    key: tuple[str, float] | None = None
    fields: list[str] = []
    sensors: set[str] = set()
    for node, sensor, _type, value, ts, _unit in readings:
        if type(value) is not float:
            value = float(value)
        if not finite(value):
            _float(value)  # raises, saying why
        if (node, ts) != key or sensor in sensors:
            if key is not None:
                append(_node_series(key[0]) + ",".join(fields) + f" {ns(key[1])}")
            key, fields, sensors = (node, ts), [], set()
        sensors.add(sensor)
        fields.append(_field_key(sensor) + number(value))
    if key is not None:
        append(_node_series(key[0]) + ",".join(fields) + f" {ns(key[1])}")
    return "\n".join(lines).encode()


def alerts_line_protocol(alerts: Iterable[AlertEvent]) -> bytes:
    """Alert events as line protocol: measurement `alert_event`, tags node/rule/sensor/severity/state."""
    return "\n".join(map(alert_line, alerts)).encode()


def chunks(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- spool ------------------------------------------------------------------------------------


class Spool:
    """Batches waiting for InfluxDB: one file per batch, `<sequence>.lp`, oldest first.

    Each file is written to a temporary name, fsync'd, renamed and the directory fsync'd,
    so a batch is either wholly in the spool or not at all after a crash.
    """

    SUFFIX = ".lp"

    def __init__(self, directory: str | Path, max_bytes: int):
        self.dir = Path(directory)
        self.rejected_dir = self.dir / "rejected"
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        for tmp in self.dir.glob("*.tmp"):  # a batch whose write did not finish was never acknowledged
            tmp.unlink()
        self._files = deque(sorted(self.dir.glob("*" + self.SUFFIX)))
        self._bytes = sum(p.stat().st_size for p in self._files)
        last = max((int(p.stem) for p in (*self._files, *self.rejected_dir.glob("*" + self.SUFFIX))), default=0)
        self._next = last + 1

    def depth(self) -> SpoolDepth:
        return SpoolDepth(len(self._files), self._bytes)

    def __bool__(self) -> bool:
        return bool(self._files)

    def append(self, body: bytes) -> None:
        if self._bytes + len(body) > self.max_bytes:
            raise SpoolFullError(
                f"InfluxDB is unreachable and the spool {self.dir} holds {len(self._files)} batches, {self._bytes} bytes; "
                f"a batch of {len(body)} bytes would exceed spool_max_bytes={self.max_bytes}. Nothing was dropped: "
                f"the batch is not acknowledged. Bring InfluxDB back or raise the limit."
            )
        path = self._write(self.dir, body)
        self._files.append(path)
        self._bytes += len(body)

    def oldest(self) -> tuple[Path, bytes]:
        path = self._files[0]
        return path, path.read_bytes()

    def pop_oldest(self) -> None:
        """Forget the oldest batch once InfluxDB has it."""
        self._take_oldest().unlink()
        _fsync_dir(self.dir)

    def reject(self, body: bytes) -> Path:
        """Keep a batch the server refused, for a person to look at; it is never replayed."""
        return self._write(self.rejected_dir, body)

    def reject_oldest(self) -> Path:
        target = self.rejected_dir / self._files[0].name
        self._take_oldest().rename(target)
        _fsync_dir(self.dir)
        return target

    def _take_oldest(self) -> Path:
        path = self._files.popleft()
        self._bytes -= path.stat().st_size
        return path

    def _write(self, directory: Path, body: bytes) -> Path:
        path = directory / f"{self._next:020d}{self.SUFFIX}"
        self._next += 1
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
        _fsync_dir(directory)
        return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the store --------------------------------------------------------------------------------


class InfluxStore:
    """Writes batches to one InfluxDB bucket; spools them while it is down. One thread calls it."""

    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        spool_dir: str | Path,
        spool_max_bytes: int,
        batch_size: int = 5000,
        timeout_s: float = 10.0,
        retry_interval_s: float = 1.0,
        layout: str = "narrow",
    ):
        if layout not in INFLUX_LAYOUTS:
            raise ValueError(f"InfluxDB layout {layout!r}: expected one of {', '.join(INFLUX_LAYOUTS)}")
        #: Readings as line protocol in the chosen layout (see the module's docstring).
        self._lines = to_wide_line_protocol if layout == "wide" else to_line_protocol
        self.url = url
        self.bucket = bucket
        self.org = org
        self.batch_size = batch_size
        #: After a transient failure, batches go straight to the spool for this long instead of
        #: each waiting for its own connection error or timeout.
        self.retry_interval_s = retry_interval_s
        self.spool = Spool(spool_dir, spool_max_bytes)
        self.rejected_batches = 0
        # The client's own gzip is level 9, which costs four times as much CPU as level 1 for a
        # body two thirds the size, on the machine that also decodes the stream: the store
        # compresses the body itself and posts it through the client's write service.
        self._client = InfluxDBClient(url, token=token, org=org, enable_gzip=False, timeout=int(timeout_s * 1000))
        self._writes = WriteService(self._client.api_client)
        self._retry_at = 0.0

    def write(self, readings: Iterable[Reading] = (), alerts: Iterable[AlertEvent] = (), dead_letters: Iterable[DeadLetter] = ()) -> int:
        """Write (or spool) one pipeline batch; return how many readings were accepted.

        Accepted means acknowledged by InfluxDB or fsync'd in the spool. InfluxDB cannot
        tell a new point from an overwritten one, so unlike `SqliteStore` a re-delivered
        reading is counted again (and still stored once). Raises `SpoolFullError` (batches of
        this call may already be stored or spooled: re-delivering them is harmless).
        """
        self.flush(force=False)
        accepted = 0
        for batch in chunks(readings, self.batch_size):
            if self._send_or_spool(self._lines(batch)):
                accepted += len(batch)
        for batch in chunks(alerts, self.batch_size):
            self._send_or_spool(alerts_line_protocol(batch))
        for batch in chunks(dead_letters, self.batch_size):
            self._send_or_spool("\n".join(dead_letter_lines(batch)).encode())
        return accepted

    def flush(self, force: bool = True) -> bool:
        """Replay the spool, oldest first, until it is empty or InfluxDB fails again; True when empty.

        `force=False` (from `write`) waits out `retry_interval_s` after the last failure.
        """
        while self.spool and (force or time.monotonic() >= self._retry_at):
            path, body = self.spool.oldest()
            try:
                if not self._post(body):
                    return False
            except BatchRejected as exc:
                self._rejected(exc, self.spool.reject_oldest())
            else:
                self.spool.pop_oldest()
        return not self.spool

    def spool_depth(self) -> SpoolDepth:
        """Batches and bytes waiting in the spool (for the metrics)."""
        return self.spool.depth()

    def close(self) -> None:
        self._client.close()

    def _send_or_spool(self, body: bytes) -> bool:
        """True when InfluxDB has the batch or it is spooled; False when the server refused it as malformed."""
        if self.spool:
            self.spool.append(body)  # behind older batches: order is kept
            return True
        try:
            if not self._post(body):
                self.spool.append(body)
        except BatchRejected as exc:
            self._rejected(exc, self.spool.reject(body))
            return False
        return True

    def _post(self, body: bytes) -> bool:
        """True when InfluxDB has the batch, False when it is down (retry later).

        Raises BatchRejected (never retry this batch) or InfluxWriteError (nothing will succeed until fixed).
        """
        try:
            self._writes.post_write(
                self.org,
                self.bucket,
                gzip.compress(body, GZIP_LEVEL),
                precision=WritePrecision.NS,
                content_encoding="gzip",
                content_type="text/plain; charset=utf-8",
            )
        except ApiException as exc:
            if exc.status in TRANSIENT_STATUSES:
                return self._down(f"HTTP {exc.status}")
            message = f"InfluxDB at {self.url} refused a write to bucket {self.bucket!r}: HTTP {exc.status} {_body(exc)}"
            raise (BatchRejected if exc.status in REJECTED_STATUSES else InfluxWriteError)(message) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return self._down(type(exc).__name__)
        self._retry_at = 0.0
        return True

    def _down(self, why: str) -> bool:
        if self._retry_at == 0.0:
            log.warning("InfluxDB at %s is unreachable (%s); spooling batches in %s", self.url, why, self.spool.dir)
        self._retry_at = time.monotonic() + self.retry_interval_s
        return False

    def _rejected(self, exc: BatchRejected, kept: Path) -> None:
        self.rejected_batches += 1
        log.error("%s; the batch is kept in %s and not retried", exc, kept)


def _body(exc: ApiException) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
    return body.strip()
