"""The readings route of the gateway's HTTP API: a node's stored readings as CSV, for `detector retrain --gateway`.

    GET /api/v1/readings?node=N[&since=EPOCH][&until=EPOCH][&sensor=S]...
        text/csv `sensor,ts,value`, sensor by sensor, each in time order, ts in epoch seconds,
        readings in [since, until); streamed in chunks (one store page each), so a week of a node is fine
    GET /api/v1/readings/newest?node=N[&sensor=S]...
        {"node": N, "sensors": [...], "newest": EPOCH | null}: where a window that ends at the newest reading starts from

Read-only; mounted by the alerts API (`alerts/api.py`), which applies its token rules for
reads. Parameters are checked before anything is sent: a bad one is a 400 naming it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from plantwatch.health import Handler
from plantwatch.store import readings as stored

READINGS_PARAMS = ("node", "since", "until", "sensor")
ROUTES = ("GET /api/v1/readings?node=N[&since=EPOCH][&until=EPOCH][&sensor=S...]", "GET /api/v1/readings/newest?node=N[&sensor=S...]")
CSV_HEADER = "sensor,ts,value\n"


@dataclass(frozen=True)
class ReadingsQuery:
    node: str
    sensors: tuple[str, ...] = ()
    since: float = -math.inf
    until: float = math.inf


def _epoch(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{name}={text!r}: expected epoch seconds, e.g. {name}=1767225600 or 1767225600.5")
    return value


def readings_query(query: dict[str, list[str]], times: bool = True) -> ReadingsQuery:
    """The request's parameters (urllib's parse_qs of the query string); ValueError saying which is wrong and what is accepted."""
    accepted = READINGS_PARAMS if times else ("node", "sensor")
    unknown = sorted(set(query) - set(accepted))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; accepted: {', '.join(accepted)}")
    for name in ("node", "since", "until"):
        if len(query.get(name, ())) > 1:
            raise ValueError(f"{name} given {len(query[name])} times; give it once (sensor may repeat)")
    node = query.get("node", [""])[0]
    if not node:
        raise ValueError("node is required: the SensorNode whose readings to read, e.g. node=esp32-press-01")
    sensors = tuple(query.get("sensor", ()))
    if any(not s for s in sensors):
        raise ValueError("sensor= is empty; name a sensor, or leave sensor out for all of the node's")
    since = _epoch("since", query["since"][0]) if "since" in query else -math.inf
    until = _epoch("until", query["until"][0]) if "until" in query else math.inf
    if until <= since:
        raise ValueError(f"until ({until:g}) must be after since ({since:g}): readings are read from since up to, not including, until")
    return ReadingsQuery(node, sensors, since, until)


def csv_chunks(pages: Iterable[list[stored.Row]]) -> Iterator[bytes]:
    """The header, then one chunk of `sensor,ts,value` lines per page (repr: floats come back exactly)."""
    yield CSV_HEADER.encode()
    for page in pages:
        if not page:
            continue  # an empty chunk would end the chunked body
        yield "".join(f"{sensor},{ts!r},{value!r}\n" for sensor, ts, value in page).encode()


def send_readings(h: Handler, store_path: str, q: ReadingsQuery) -> None:
    """Stream the CSV with chunked transfer encoding: its length is not known until the last page."""
    pages = stored.pages(store_path, q.node, q.sensors, q.since, q.until)
    first = next(pages, [])  # the store is read (or says why it cannot be) before the 200 goes out
    h.send_response(200)
    h.send_header("Content-Type", "text/csv; charset=utf-8")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for chunk in csv_chunks(itertools.chain([first], pages)):
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    h.wfile.write(b"0\r\n\r\n")


def newest_json(store_path: str, q: ReadingsQuery) -> dict:
    return {"node": q.node, "sensors": list(q.sensors), "newest": stored.newest(store_path, q.node, q.sensors)}
