"""`plantwatch alerts list|get|history|ack|unack|silence|unsilence|silences`: registered by `add_commands(subparsers)`.

Talks to the alerts API (alerts/api.py) of a local `plantwatch up` (`--url`, default
http://127.0.0.1:9464) or of a Kubernetes deployment's gateway (`--kube`, through the API
server's service proxy with the kubeconfig's credentials). The token comes from
`--token-file` or $PLANTWATCH_API_TOKEN. Tables for people by default, `--json` for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from typing import Any

from plantwatch.cliargs import positive_float

TOKEN_ENV = "PLANTWATCH_API_TOKEN"
URL_ENV = "PLANTWATCH_URL"
#: Where `plantwatch up` serves (its default --http-port).
DEFAULT_URL = "http://127.0.0.1:9464"


def _me() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "unknown"


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError as exc:
            raise ValueError(f"--token-file {args.token_file}: {exc.strerror}") from None
    return os.environ.get(TOKEN_ENV) or None


def _run(args: argparse.Namespace) -> int:
    from plantwatch.alerts import client, tables

    try:
        token = _token(args)
    except ValueError as exc:
        print(f"plantwatch alerts {args.alerts_command}: {exc}", file=sys.stderr)
        return 2
    if args.kube:
        api: client.Transport = client.Kube(args.namespace or client.kube_namespace(), token, args.timeout)
    else:
        api = client.Direct(args.url, token, args.timeout)
    now = time.time()
    a = args.alerts_command
    try:
        if a == "list":
            got: Any = api.request("GET", client.alerts_path(None if args.status == "all" else args.status))
            text = tables.alerts_table(got, now)
        elif a == "get":
            got = api.request("GET", client.alert_path(args.fingerprint))
            text = tables.alert_text(got, now)
        elif a == "history":
            got = api.request("GET", client.alert_path(args.fingerprint, "history"))
            text = tables.history_table(got)
        elif a in ("ack", "unack"):
            got = api.request("POST", client.alert_path(args.fingerprint, a), {"by": args.by, "comment": args.comment})
            text = tables.alert_text(got, now)
        elif a == "silence":
            body = {"matchers": args.matchers, "createdBy": args.by, "comment": args.comment}
            body.update({"endsAt": args.until} if args.until else {"duration": args.duration})
            if args.start:
                body["startsAt"] = args.start
            got = api.request("POST", client.silences_path(), body)
            text = got["id"]
        elif a == "unsilence":
            got = api.request("DELETE", client.silences_path(args.id))
            text = f"silence {got['id']} expired at {got['endsAt']}"
        else:
            got = api.request("GET", client.silences_path())
            got = [s for s in got if args.expired or s["status"] != "expired"]
            text = tables.silences_table(got)
    except client.ClientError as exc:
        print(f"plantwatch alerts {a}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(got, indent=2) if args.json else text)
    return 0


def add_commands(subparsers) -> None:
    """Register `alerts ...` on the `plantwatch` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the alerts API: a plantwatch up's --http-port (default ${URL_ENV} or {DEFAULT_URL})",
    )
    common.add_argument("--token-file", metavar="FILE", help=f"file holding the API token (default: ${TOKEN_ENV})")
    common.add_argument(
        "--kube",
        action="store_true",
        help="reach the gateway of a Kubernetes deployment through the API server's service proxy (kubeconfig's credentials)",
    )
    common.add_argument("-n", "--namespace", help="with --kube: the plant's namespace (default: the kubeconfig context's)")
    common.add_argument("--timeout", type=positive_float, default=10.0, help="seconds to wait for an answer (default 10)")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")

    alerts = subparsers.add_parser("alerts", help="list, acknowledge and silence alerts (a running plantwatch up, or --kube)")
    sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    fp_help = "the alert's fingerprint, rule/node/sensor (as `alerts list` shows it)"

    ls = sub.add_parser("list", parents=[common], help="alerts, firing first")
    ls.add_argument("--status", choices=("firing", "resolved", "all"), default="all", help="which alerts (default all)")
    get = sub.add_parser("get", parents=[common], help="one alert: its current (else latest) episode")
    get.add_argument("fingerprint", help=fp_help)
    hist = sub.add_parser("history", parents=[common], help="what happened to an alert: firing, notifications, deliveries, acks")
    hist.add_argument("fingerprint", help=fp_help)
    for name, what in (("ack", "acknowledge a firing alert: no more repeats or escalation"), ("unack", "withdraw an acknowledgement")):
        p = sub.add_parser(name, parents=[common], help=what)
        p.add_argument("fingerprint", help=fp_help)
        p.add_argument("--by", default=_me(), help="who (default: your user name)")
        p.add_argument("-c", "--comment", default="", help="why, for the next person on call")
    sil = sub.add_parser("silence", parents=[common], help="mute alerts matching labels for a while; prints the silence's id")
    sil.add_argument(
        "matchers",
        nargs="+",
        metavar="MATCHER",
        help="LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX, all must match (labels: alertname, rule, node, "
        "sensor, severity, plant, equipment, location and the SensorNode's labels)",
    )
    until = sil.add_mutually_exclusive_group()
    until.add_argument("-d", "--duration", default="1h", help="for how long, e.g. 30m, 2h, 1h30m (default 1h)")
    until.add_argument("--until", metavar="TIME", help="or until this RFC 3339 time")
    sil.add_argument("--start", metavar="TIME", help="from this RFC 3339 time (default: now)")
    sil.add_argument("-c", "--comment", required=True, help="why (required: the next person on call reads it)")
    sil.add_argument("--by", default=_me(), help="who (default: your user name)")
    unsil = sub.add_parser("unsilence", parents=[common], help="end a silence now")
    unsil.add_argument("id", help="the silence's id (as `alerts silence` printed it, or `alerts silences` shows it)")
    sils = sub.add_parser("silences", parents=[common], help="the silences, pending and active")
    sils.add_argument("--expired", action="store_true", help="also the expired ones")
    for p in sub.choices.values():
        p.set_defaults(func=_run)
