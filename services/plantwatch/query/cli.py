"""`plantwatch query readings|alerts|dead-letters|summary`: what a plant's store holds, registered by `add_commands(subparsers)`.

Reads the store directly (read-only), so it works after `plantwatch up` has stopped; the
running alerts are `plantwatch alerts`, over the alerts API. The store is `--db`, else the
default store of `-f PLANT`, else the default store written last (local/paths.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from plantwatch.cliargs import positive_int
from plantwatch.local.paths import default_db, latest_db, state_dir
from plantwatch.query import render


def _store(args: argparse.Namespace) -> str:
    if args.db:
        return args.db
    if args.file:
        return default_db([args.file])
    if found := latest_db():
        return found
    raise ValueError(
        f"no store to read: no `plantwatch up` has written one under {state_dir()} yet; "
        "pass --db FILE|URL (the store up --db or serve ingest --db filled) or -f PLANT (that plant's default store)"
    )


def _run(args: argparse.Namespace) -> int:
    from plantwatch.query import read  # psycopg, imported by the command that reads rather than by every command

    now = time.time()
    try:
        since = -float("inf") if args.since is None else render.parse_when(args.since, now)
        until = float("inf") if args.until is None else render.parse_when(args.until, now)
    except ValueError as exc:
        print(f"plantwatch query {args.what}: --from/--to: {exc}", file=sys.stderr)
        return 2
    f = read.Filter(getattr(args, "node", None), getattr(args, "sensor", None), since, until, args.limit)
    reads: dict[str, tuple[Callable[[], list[dict[str, Any]]], Callable[[list], str]]] = {
        "readings": (lambda: read.readings(db, f), render.readings_table),
        "summary": (lambda: read.summary(db, f), render.summary_table),
        "alerts": (lambda: read.alerts(db, f, args.rule), render.alerts_table),
        "dead-letters": (lambda: read.dead_letters(db, f, args.reason), render.dead_letters_table),
    }
    what = "summary" if args.what == "readings" and args.summary else args.what
    try:
        db = _store(args)
        rows = reads[what][0]()
    except ValueError as exc:
        print(f"plantwatch query {args.what}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print(f"store: {db}", file=sys.stderr)
        print(reads[what][1](rows))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "query",
        help="look at what a plant's store holds: readings, a summary per series, alert events, dead letters",
        description="Read the store `plantwatch up` (or `serve ingest`) filled, read-only, even after it stopped. "
        f"Times: {render.ACCEPTED_TIMES}.",
    )
    q_sub = q.add_subparsers(dest="what", required=True, metavar="WHAT")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="FILE|URL",
        help="the store: a SQLite file or postgresql://user@host/db (default: -f's default store, else the one "
        f"`plantwatch up` wrote last under {state_dir()})",
    )
    common.add_argument("-f", "--file", metavar="PLANT", help="read the default store of `plantwatch up -f PLANT` (ignored with --db)")
    common.add_argument("--from", dest="since", metavar="T", help="only from this time on (e.g. 15m: 15 minutes ago; 2026-01-05T08:00:00Z)")
    common.add_argument("--to", dest="until", metavar="T", help="only up to this time (default: now and later)")
    common.add_argument("--limit", type=positive_int, default=50, help="at most this many rows, the newest (default 50)")
    common.add_argument("--json", action="store_true", help="print a JSON list of objects (times as RFC 3339 `time` and epoch `ts`)")
    series = argparse.ArgumentParser(add_help=False)
    series.add_argument("--node", help="only this SensorNode")
    series.add_argument("--sensor", help="only this sensor (its name in the SensorNode)")

    r = q_sub.add_parser("readings", parents=[common, series], help="stored readings, newest last")
    r.add_argument("--summary", action="store_true", help="one line per series instead: as `plantwatch query summary`")
    s = q_sub.add_parser(
        "summary",
        parents=[common, series],
        help="per node and sensor: count, min/mean/max, last value and a sparkline of the range (--limit counts series)",
    )
    a = q_sub.add_parser("alerts", parents=[common, series], help="alert events: fired, escalated, eased, resolved")
    a.add_argument("--rule", help="only this AlertRule")
    d = q_sub.add_parser("dead-letters", parents=[common], help="refused messages: reason, topic, payload excerpt, time")
    d.add_argument("--reason", help="only this reason (e.g. malformed, bad_timestamp, out_of_range)")
    for p in (r, s, a, d):
        p.set_defaults(summary=False, rule=None, reason=None)
    q.set_defaults(func=_run)
