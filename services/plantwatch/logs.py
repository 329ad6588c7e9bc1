"""Logging: structured JSON lines (for log shippers) or text (for people), secrets masked.

A JSON line carries the labels log stores index on: `plant` (from $PLANTWATCH_PLANT, else the pod's
namespace, $POD_NAMESPACE: one plant per namespace), `component` (the subsystem that logged: ingest,
alerts, store, inference, operator...), `node` where a line is about one SensorNode, and
`correlation_id` on every line logged while a batch is handled (`correlated`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_SECRET_KEYS = re.compile(r"(password|passwd|token|secret|api[_-]?key)", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/\s]*)@", re.IGNORECASE)
_KEY_VALUE = re.compile(
    r"(?P<key>\b\w*(?:password|passwd|token|secret|api[_-]?key)\w*\b)(?P<sep>\s*[=:]\s*)(?P<value>[^\s,;]+)", re.IGNORECASE
)
#: LogRecord attributes that are not user-supplied `extra` fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
#: The batch being handled on this thread (a context variable: each thread, and each asyncio task, has its own).
_CORRELATION: ContextVar[str | None] = ContextVar("plantwatch_correlation_id", default=None)
#: Labels of the whole process, on every JSON line (set by `configure`).
_LABELS: dict[str, str] = {}


@contextmanager
def correlated(correlation_id: str) -> Iterator[None]:
    """Every line logged in this block, on this thread, carries `correlation_id` (unless it names its own)."""
    token = _CORRELATION.set(correlation_id)
    try:
        yield
    finally:
        _CORRELATION.reset(token)


def component(logger: str) -> str:
    """The subsystem a logger belongs to: `plantwatch.ingest.pipeline` → `ingest`, `plantwatch_operator.x` → `operator`,
    a library's logger → its top-level name (`kopf`, `urllib3`)."""
    parts = logger.split(".")
    if parts[0] == "plantwatch" and len(parts) > 1:
        return parts[1]
    return "operator" if parts[0] == "plantwatch_operator" else parts[0]


class LogLimiter:
    """Says whether something may be logged now: once per key per `interval_s`, in bounded memory.

    Keys beyond `max_keys` forget the one logged longest ago (which may then be logged again
    sooner). Thread-safe: a gateway's preparing and committing threads may share one.
    """

    __slots__ = ("_last", "_interval_s", "_max", "_lock")

    def __init__(self, interval_s: float, max_keys: int = 10_000):
        self._last: dict[Hashable, float] = {}
        self._interval_s = interval_s
        self._max = max_keys
        self._lock = threading.Lock()

    def allow(self, key: Hashable, now: float) -> bool:
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                return False
            self._last.pop(key, None)
            self._last[key] = now  # re-inserted: the dict's order is the order of last logging
            if len(self._last) > self._max:
                del self._last[next(iter(self._last))]
            return True


def _mask_userinfo(m: re.Match[str]) -> str:
    """`scheme://user:password@` → `scheme://user:***@`: the user info runs to the authority's last `@`
    (a password may hold `@`, `:` or `/`-free anything), and whatever follows the first `:` is the password."""
    user, colon, _ = m["userinfo"].partition(":")
    return f"{m['scheme']}{user}:***@" if colon else m.group(0)


def mask(text: str) -> str:
    """Hide credentials in URLs (`mqtt://user:***@host`) and `password=...`-style pairs."""
    text = _URL_CREDENTIALS.sub(_mask_userinfo, text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}***", text)


def _mask_value(key: str, value: object) -> object:
    if _SECRET_KEYS.search(key):
        return "***"
    return mask(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every `extra` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
            **_LABELS,
            "component": component(record.name),
        }
        correlation_id = _CORRELATION.get()
        if correlation_id is not None:
            entry["correlation_id"] = correlation_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _mask_value(key, value)
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


#: Libraries whose DEBUG lines are their own internals, not Plantwatch's: at most INFO from them.
#: (celpy logs every step of every CEL rule the plant loader evaluates: tens of thousands of lines.)
_CHATTY = ("celpy",)


def process_labels(environ: Mapping[str, str]) -> dict[str, str]:
    """The labels of every line of this process: its plant, named by $PLANTWATCH_PLANT, else its pod's namespace."""
    plant = environ.get("PLANTWATCH_PLANT") or environ.get("POD_NAMESPACE")
    return {"plant": plant} if plant else {}


def configure(level: str = "WARNING", fmt: str = "text") -> None:
    _LABELS.clear()
    _LABELS.update(process_labels(os.environ))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.INFO))
