"""`plantwatch detector retrain`: a candidate for a plant's DetectorModel, trained on its newest stored readings, and
compared with the serving model on the newest rows it did not train on.

The readings come from the embedded store (`--store DB`) or, the same rows, from a running
gateway's readings API (`--gateway URL`, alerts/readings_api.py): every node the
DetectorModel scores (`plant.load.scored_nodes`), only the sensors its features name,
over the last `--window` up to the newest stored reading. Each node's readings become one
recording of one row per time stamp (a node's message carries its sensors at one time),
the rows the stream scores (inference/stream.py). The recipe is the one the serving
model's card records, decisions included, so the candidate differs from the serving model
only by the data. Each node's newest `--holdout` share of rows is held out; the other rows,
node after node, train the candidate (the first windows after a join see the previous
node's last rows). Both models then score every node's rows through their cards (features,
smoothing, hold: the gateway's alarms), and their alarms on the held-out rows are compared
by the shadow rule (inference/shadow.py). Nothing is promoted: that stays a spec change.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import numpy as np
from kubernetes import client
from kubernetes.client.rest import ApiException

from plantwatch import kube
from plantwatch.cliargs import number
from plantwatch.contracts import model_card
from plantwatch.contracts.model_card import ModelCard
from plantwatch.contracts.names import CARD_FILE, MODEL_FILE
from plantwatch.detect import bundle
from plantwatch.detect.publish import CONFIG_MAP_LIMIT, manifests
from plantwatch.detect.recipes import Recipe, fit_recipe
from plantwatch.features import FeatureSpec
from plantwatch.inference.models import ModelError, load_model, sha256_of
from plantwatch.inference.plant_scorers import model_source
from plantwatch.inference.shadow import compare
from plantwatch.plant.load import load_plant, scored_nodes, scores_nothing
from plantwatch.store import readings as stored

COMPARISON_FILE = "comparison.json"
TOKEN_ENV = "PLANTWATCH_API_TOKEN"
_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

Readings = list[tuple[str, float, float]]


# --- pure parts ---


def window_seconds(text: str) -> float:
    """`30m`, `12h`, `7d`, `1d12h` → seconds (integers with s, m, h or d)."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip() or not sum(int(n) for n, _ in parts):
        raise ValueError(f"--window {text!r}: expected a positive duration of integers with s, m, h or d, e.g. 30m, 12h, 7d or 1d12h")
    return float(sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def recipe_of(card: ModelCard) -> Recipe:
    """The recipe a card records (its features, smoothing, threshold rule and the default's decision)."""
    known = {f.name for f in fields(Recipe)}
    saved = {k: v for k, v in card["recipe"].items() if k in known}
    return Recipe(**{**saved, "features": FeatureSpec(**saved["features"])})


def rows_of(readings: Readings, channels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(time stamps, [rows, channels]): one row per distinct time stamp, in time order, NaN where a channel has no reading."""
    stamps = np.unique(np.fromiter((ts for _, ts, _ in readings), dtype=np.float64, count=len(readings)))
    values = np.full((len(stamps), len(channels)), np.nan)
    column = {c: j for j, c in enumerate(channels)}
    for sensor, ts, value in readings:
        if sensor in column:
            values[np.searchsorted(stamps, ts), column[sensor]] = value
    return stamps, values


def held_out_rows(rows: int, holdout: float) -> int:
    """The newest rows held out of training: the `holdout` share, at least one."""
    return max(1, math.ceil(rows * holdout))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- where the readings come from ---


class Source(Protocol):
    where: str

    def newest(self, node: str, sensors: tuple[str, ...]) -> float | None: ...

    def readings(self, node: str, sensors: tuple[str, ...], since: float, until: float) -> Readings: ...


@dataclass(frozen=True)
class StoreSource:
    """The embedded store file (read-only)."""

    path: str

    @property
    def where(self) -> str:
        return f"store {self.path}"

    def newest(self, node: str, sensors: tuple[str, ...]) -> float | None:
        return stored.newest(self.path, node, sensors)

    def readings(self, node: str, sensors: tuple[str, ...], since: float, until: float) -> Readings:
        return [row for page in stored.pages(self.path, node, sensors, since, until) for row in page]


@dataclass(frozen=True)
class GatewaySource:
    """A running gateway's readings API (`plantwatch up`, `serve ingest`), with its API token when reads need one."""

    url: str
    token: str | None = None
    timeout_s: float = 60.0

    @property
    def where(self) -> str:
        return f"gateway {self.url}"

    def _get(self, path: str, params: list[tuple[str, str]]) -> bytes:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        req = urllib.request.Request(f"{self.url.rstrip('/')}{path}?{urlencode(params)}", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            try:
                body = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            raise ValueError(f"gateway {self.url} answered {exc.code} to {path}: {body}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ValueError(
                f"cannot reach the gateway {self.url} ({getattr(exc, 'reason', exc)}); is `plantwatch up` or `serve ingest` running there?"
            ) from None

    def newest(self, node: str, sensors: tuple[str, ...]) -> float | None:
        answer = json.loads(self._get("/api/v1/readings/newest", [("node", node), *(("sensor", s) for s in sensors)]))
        return answer["newest"]

    def readings(self, node: str, sensors: tuple[str, ...], since: float, until: float) -> Readings:
        params = [("node", node), ("since", repr(since)), ("until", repr(until)), *(("sensor", s) for s in sensors)]
        lines = csv.reader(io.StringIO(self._get("/api/v1/readings", params).decode()))
        next(lines, None)  # sensor,ts,value
        return [(sensor, float(ts), float(value)) for sensor, ts, value in lines]


# --- the retraining ---


@dataclass(frozen=True)
class NodeRows:
    node: str
    stamps: np.ndarray
    values: np.ndarray  # [rows, channels] in the card's channel order
    train: int  # the first `train` rows train; the rest are held out


@dataclass(frozen=True)
class Retrained:
    card: ModelCard
    comparison: dict[str, Any]
    nodes: list[NodeRows]


def _refuse_short(nodes: list[NodeRows], need: int, window: str, source: Source) -> None:
    short = [f"{n.node} has {len(n.stamps)} rows ({n.train} to train on)" for n in nodes if n.train < need]
    if short:
        raise ValueError(
            f"too few rows in the last {window} of {source.where}: {'; '.join(short)}; the recipe needs at least {need} "
            f"training rows per node (its warm-up and calibration folds) besides the held-out share: widen --window, "
            "lower --holdout, or wait for more readings"
        )


def retrain(
    plant_paths: list[str],
    name: str,
    source: Source,
    window: str,
    holdout: float,
    out: str | Path,
    progress: Callable[[str], None] | None = None,
) -> Retrained:
    """Train the candidate into `out` (model, card with its provenance, comparison); ValueError when it cannot, saying why."""
    if not 0 < holdout < 1:
        raise ValueError(f"--holdout {holdout}: accepted is a share between 0 and 1, e.g. 0.2")
    span = window_seconds(window)
    plant = load_plant(*plant_paths)
    detector = next((d for d in plant.detectors if d.name == name), None)
    if detector is None:
        have = ", ".join(sorted(d.name for d in plant.detectors)) or "none"
        raise ValueError(f"DetectorModel {name!r} is not in the plant ({', '.join(plant_paths)}); its DetectorModels: {have}")
    try:
        serving = model_source(plant, detector)
    except ModelError as exc:
        raise ValueError(f"DetectorModel {name}: its serving model: {exc}") from None
    if serving.card is None:
        raise ValueError(
            f"DetectorModel {name}: its serving model ({serving.where}) has no {CARD_FILE}, so there is no recipe to train again "
            "(a starter or hand-made model); train one with `plantwatch detector train` and `detector publish` it first"
        )
    nodes = [n.name for n in scored_nodes(detector, plant.nodes)]
    if not nodes:
        raise ValueError(f"DetectorModel {name}: {scores_nothing(detector, plant.nodes)}")
    channels = tuple(serving.card["channels"])
    recipe = recipe_of(serving.card)
    newest = [t for t in (source.newest(n, channels) for n in nodes) if t is not None]
    if not newest:
        raise ValueError(f"{source.where} holds no readings of {', '.join(channels)} from the nodes {name} scores ({', '.join(nodes)})")
    until = max(newest)
    since = until - span
    rows: list[NodeRows] = []
    for node in nodes:
        readings = source.readings(node, channels, since, math.nextafter(until, math.inf))
        if not readings:
            raise ValueError(
                f"{source.where} holds no readings of node {node} ({', '.join(channels)}) in the last {window} "
                f"({iso(since)} .. {iso(until)}); widen --window, or leave the node out of the DetectorModel's selector"
            )
        stamps, values = rows_of(readings, channels)
        rows.append(NodeRows(node, stamps, values, len(stamps) - held_out_rows(len(stamps), holdout)))
    _refuse_short(rows, recipe.features.warmup + 10 * recipe.folds, window, source)
    train_values = np.concatenate([n.values[: n.train] for n in rows])
    fitted = fit_recipe(recipe, train_values, progress=progress)
    serving_sha = sha256_of(serving.model)
    first, last = min(float(n.stamps[0]) for n in rows), max(float(n.stamps[-1]) for n in rows)
    described = (
        f"{source.where}, nodes {', '.join(nodes)}, {iso(first)} .. {iso(last)} (the last {window}), "
        f"{len(train_values)} rows after holding out the newest {holdout:g} of each node's; "
        f"retrained from DetectorModel {name}'s serving model sha256 {serving_sha}"
    )
    card = bundle.save(out, fitted, channels, len(train_values), described, train_values)
    # Beside training.source's sentence, the same facts for a program (the card's readers take what they know).
    card["provenance"] = {
        "detectorModel": name,
        "source": source.where,
        "nodes": [
            {"node": n.node, "rows": len(n.stamps), "trainRows": n.train, "from": iso(n.stamps[0]), "until": iso(n.stamps[-1])}
            for n in rows
        ],
        "window": window,
        "from": iso(first),
        "until": iso(last),
        "trainRows": len(train_values),
        "holdout": holdout,
        "servingSha256": serving_sha,
    }
    model_card.write(out, card)
    comparison = _compare(rows, serving.card, serving.model, Path(out), name)
    (Path(out) / COMPARISON_FILE).write_text(json.dumps(comparison, indent=2) + "\n")
    return Retrained(card, comparison, rows)


def _compare(rows: list[NodeRows], serving_card: ModelCard, serving_model: bytes, out: Path, name: str) -> dict[str, Any]:
    """Both models' alarms (through their cards) on each node's held-out rows, their rows before as history."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MODEL_FILE).write_bytes(serving_model)
        serving = bundle.Scorer(serving_card, load_model("serving", Path(tmp) / MODEL_FILE))
    candidate = bundle.load(out)
    pairs = [(serving.score(n.values).alarm[n.train :], candidate.score(n.values).alarm[n.train :]) for n in rows]
    both = np.concatenate([s for s, _ in pairs]), np.concatenate([c for _, c in pairs])
    return {
        "detectorModel": name,
        "servingSha256": serving_card["model"]["sha256"],
        "candidateSha256": candidate.card["model"]["sha256"],
        "heldOut": [
            {"node": n.node, "rows": len(n.stamps) - n.train, "from": iso(n.stamps[n.train]), "until": iso(n.stamps[-1])} for n in rows
        ],
        # The shadow rule's verdict (inference/shadow.py); here on the smoothed, held alarms the gateway raises.
        **compare(*both),
    }


def summary(r: Retrained, out: str | Path) -> str:
    """What was trained on what, and how it compares with the serving model, for a person."""
    p, c = r.card["provenance"], r.comparison
    lines = [
        f"retrained {p['detectorModel']} ({r.card['recipe']['name']}) on {p['trainRows']} rows x {len(r.card['channels'])} channels "
        f"({', '.join(r.card['channels'])}) from {len(p['nodes'])} node(s) ({', '.join(n['node'] for n in p['nodes'])}), "
        f"{p['from']} .. {p['until']}, {p['source']}; threshold {r.card['alarm']['threshold']:.4g}; wrote {out}",
    ]
    if "servingAlarmRate" in c:
        lines.append(
            f"held out the newest {c['rows']} rows: serving alarms on {100 * c['servingAlarmRate']:.1f} %, "
            f"candidate on {100 * c['shadowAlarmRate']:.1f} %, disagreement {100 * c['disagreement']:.1f} %"
        )
    lines.append(f"verdict: {c['reason']} ({c['message']}); promoting is a spec change, made by a person")
    return "\n".join(lines)


# --- the ConfigMap in the cluster ---


def config_map(out: str | Path, name: str, cm_name: str, namespace: str) -> dict[str, Any]:
    """The candidate as `detector publish`'s ConfigMap (named `cm_name`), with comparison.json beside the card."""
    cm = manifests(out, name, namespace)[0]
    cm["metadata"]["name"] = cm_name
    cm["data"][COMPARISON_FILE] = (Path(out) / COMPARISON_FILE).read_text()
    size = len(cm["binaryData"][MODEL_FILE]) + sum(len(v) for v in cm["data"].values())
    if size > CONFIG_MAP_LIMIT:
        raise ValueError(
            f"the candidate takes {size} bytes in a ConfigMap with its card and comparison, over the ~1 MiB a ConfigMap can hold; "
            f"use {out} from a url or pvc source instead"
        )
    return cm


def apply_config_map(cm: dict[str, Any]) -> str:
    """Create the ConfigMap, or replace the one of that name; returns what was done."""
    api = client.CoreV1Api(kube.api_client())
    meta = cm["metadata"]
    try:
        api.replace_namespaced_config_map(meta["name"], meta["namespace"], cm)
        return "replaced"
    except ApiException as exc:
        if exc.status != 404:
            raise ValueError(f"ConfigMap {meta['namespace']}/{meta['name']}: the API server answered {exc.status}: {exc.reason}") from None
    api.create_namespaced_config_map(meta["namespace"], cm)
    return "created"


# --- the command ---


def _token(path: str | None) -> str | None:
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ValueError(f"--token-file {path}: {exc.strerror}") from None
    return os.environ.get(TOKEN_ENV) or None


def add_command(sub, user_errors: Callable) -> None:
    """Register `detector retrain` on the `detector` subparsers; `user_errors`: the CLI's message-and-exit-2 wrapper."""

    def run(args) -> int:
        if (args.store is None) == (args.gateway is None):
            raise ValueError("give --store DB (the embedded store file) or --gateway URL (a running gateway's API), not both")
        if (args.to_configmap is None) != (args.namespace is None):
            raise ValueError("--to-configmap CM_NAME and --namespace NS go together")
        source: Source = StoreSource(args.store) if args.store else GatewaySource(args.gateway, _token(args.token_file))
        say = lambda line: print(f"detector retrain: {line}", file=sys.stderr, flush=True)  # noqa: E731
        result = retrain(args.plant, args.model, source, args.window, args.holdout, args.out, say)
        print(summary(result, args.out))
        if args.to_configmap:
            done = apply_config_map(config_map(args.out, args.model, args.to_configmap, args.namespace))
            print(f"{done} ConfigMap {args.namespace}/{args.to_configmap} (model, card, {COMPARISON_FILE})")
        return 0

    retrain_ = sub.add_parser(
        "retrain",
        help="train a candidate for a plant's DetectorModel on its newest stored readings and compare it with the serving model",
    )
    retrain_.add_argument("-f", dest="plant", action="append", required=True, metavar="PLANT_DIR", help="the plant (files or folders)")
    retrain_.add_argument("--model", required=True, metavar="NAME", help="the DetectorModel to retrain")
    retrain_.add_argument("--store", metavar="DB", help="read the embedded store file")
    retrain_.add_argument("--gateway", metavar="URL", help="or: a running gateway's API, e.g. http://127.0.0.1:9464")
    retrain_.add_argument("--token-file", metavar="F", help=f"with --gateway: file holding the API token (default: ${TOKEN_ENV})")
    retrain_.add_argument("--window", default="7d", help="train on the last DURATION up to the newest reading: 30m, 12h, 7d (default)")
    retrain_.add_argument(
        "--holdout",
        type=number(float, 0, 0.9, above=True),
        default=0.2,
        help="newest share of each node's rows held out to compare (default 0.2)",
    )
    retrain_.add_argument("--out", required=True, metavar="DIR", help=f"writes DIR/{MODEL_FILE}, DIR/{CARD_FILE}, DIR/{COMPARISON_FILE}")
    retrain_.add_argument(
        "--to-configmap", metavar="CM_NAME", help="also create or replace this ConfigMap (shaped as by `detector publish`)"
    )
    retrain_.add_argument("--namespace", metavar="NS", help="with --to-configmap: its namespace")
    retrain_.set_defaults(func=user_errors(run))
