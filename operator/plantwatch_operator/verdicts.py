"""What the operator concludes about a plant's resources (pure): which nodes, rules and receivers go
into the gateway's config and why the others do not, whether a receiver's Secrets hold the keys it
names, and whether a DetectorModel's source holds its model and which nodes it scores.

Values in, verdicts out: the handlers read the cluster and hand the bodies over; nothing here
calls the API server or reads the clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from plantwatch.alerts.promrule import CRD as PROMETHEUS_RULE_CRD
from plantwatch.plant.load import (
    Plant,
    plant_series,
    rule_selects,
    scored_nodes,
    scores_nothing,
    selects_nothing,
    unknown_receivers,
)
from plantwatch.plant.model import AlertReceiver, ManifestError, Resource, SensorNode, parse_resource
from plantwatch.secrets import MOUNT_DIR


class Verdict(NamedTuple):
    """A condition's status (`"True"`/`"False"`), its CamelCase reason and a message for people."""

    status: str
    reason: str
    message: str


class SourceVerdict(NamedTuple):
    """ModelValid as the operator sees a DetectorModel's source, and the model's sha256 when known."""

    status: str
    reason: str
    message: str
    sha256: str | None


@dataclass(frozen=True)
class PlantVerdicts:
    """One namespace's plant as the operator judges it, from its live resources."""

    #: Every live SensorNode body and its typed resource, or the validation message when it is invalid.
    nodes: list[tuple[dict[str, Any], Resource[Any] | str]]
    #: Every live AlertRule body, its `Accepted` verdict and how many of the plant's series it watches.
    rules: list[tuple[dict[str, Any], Verdict, int]]
    #: The live DetectorModel bodies: each one's scores are series of the plant.
    detectors: list[dict[str, Any]]
    #: Every live AlertReceiver body and its `Accepted` verdict.
    receivers: list[tuple[dict[str, Any], Verdict]]
    #: Every live DetectorModel body and its `Scoring` verdict.
    scoring: list[tuple[dict[str, Any], Verdict]]

    @property
    def valid_nodes(self) -> list[dict[str, Any]]:
        """The SensorNodes that go into the gateway's config (and own its objects)."""
        return [body for body, parsed in self.nodes if not isinstance(parsed, str)]

    @property
    def accepted_rules(self) -> list[dict[str, Any]]:
        """The AlertRules that go into the gateway's config."""
        return [body for body, verdict, _ in self.rules if verdict.status == "True"]

    @property
    def scoring_detectors(self) -> list[dict[str, Any]]:
        """The DetectorModels that go into the gateway's config: those that score some node. The gateway's
        `load_plant` refuses one that scores nothing, as `validate` does; its `Scoring` says why."""
        return [body for body, verdict in self.scoring if verdict.status == "True"]

    @property
    def configured_receivers(self) -> list[dict[str, Any]]:
        """The AlertReceivers that go into the gateway's config: every valid one, a missing Secret included.

        A receiver whose Secret is missing stays (its Secret volume is optional, its `Accepted`
        says what is missing): leaving it out would refuse every rule naming it, and a typo in a
        Secret name would silence the plant's alerts instead of one receiver's.
        """
        return [body for body, verdict in self.receivers if verdict.reason != "InvalidSpec"]

    @property
    def accepted_plant(self) -> Plant:
        """The plant the gateway runs: its valid nodes, accepted rules and valid detectors, typed."""
        detectors = [p for p in map(parse, self.detectors) if not isinstance(p, str)]
        return Plant(
            nodes=tuple(p for _, p in self.nodes if not isinstance(p, str)),
            rules=tuple(parse_resource(b) for b in self.accepted_rules),
            detectors=tuple(detectors),
        )


#: Each object's verdict by what it is made of: a plant's re-render validates (schema and CEL) only the
#: objects that changed since, not the whole plant. Cleared when it grows past the bound.
_parsed: dict[str, Resource[Any] | str] = {}
_PARSED_MAX = 50_000


def parse(body: dict[str, Any]) -> Resource[Any] | str:
    """The typed resource, or the validation message when it is invalid; remembered by everything
    parse_resource reads (kind, identity, labels, spec), so a changed object is judged afresh."""
    meta = body.get("metadata") or {}
    key = json.dumps(
        [
            body.get("apiVersion"),
            body.get("kind"),
            meta.get("name"),
            meta.get("namespace"),
            meta.get("uid"),
            meta.get("generation"),
            meta.get("labels"),
            body.get("spec"),
        ],
        sort_keys=True,
    )
    if key in _parsed:
        return _parsed[key]
    try:
        verdict: Resource[Any] | str = parse_resource(body, f"{body['kind']} {meta['name']}")
    except ManifestError as exc:
        verdict = str(exc)
    if len(_parsed) >= _PARSED_MAX:
        _parsed.clear()
    _parsed[key] = verdict
    return verdict


def live(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects not being deleted: one being deleted has already left the plant."""
    return [b for b in bodies if not b["metadata"].get("deletionTimestamp")]


def judge_plant(
    nodes: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    detectors: list[dict[str, Any]],
    receivers: Sequence[dict[str, Any]] = (),
    secret_keys: Mapping[str, Collection[str] | None] | None = None,
) -> PlantVerdicts:
    """Judge a namespace's SensorNodes, AlertRules, DetectorModels and AlertReceivers (as listed, deleted
    ones included). `secret_keys` are the data keys of each Secret the receivers reference (None: the
    Secret does not exist); `referenced_secrets` says which to read."""
    nodes, rules, detectors, receivers = live(nodes), live(rules), live(detectors), live(list(receivers))
    parsed_nodes = [(n, parse(n)) for n in nodes]
    parsed_detectors = [p for p in map(parse, detectors) if not isinstance(p, str)]
    parsed_receivers = [p for p in map(parse, receivers) if not isinstance(p, str)]
    valid = [p for _, p in parsed_nodes if not isinstance(p, str)]
    series = plant_series(valid, parsed_detectors)
    kinds = series_kinds(series)
    names = {d["metadata"]["name"] for d in detectors}
    judged = []
    for body in rules:
        parsed = parse(body)
        matched = 0 if isinstance(parsed, str) else sum(n for (node, s, t), n in kinds if rule_selects(parsed, node, s, t))
        judged.append((body, rule_verdict(body, names, series, parsed_receivers, matched), matched))
    judged_receivers = [(body, receiver_verdict(body, secret_keys or {})) for body in receivers]
    scoring = [(body, scoring_verdict(body, nodes, valid)) for body in detectors]
    return PlantVerdicts(nodes=parsed_nodes, rules=judged, detectors=detectors, receivers=judged_receivers, scoring=scoring)


def series_kinds(series: list[tuple[SensorNode, str, str]]) -> list[tuple[tuple[SensorNode, str, str], int]]:
    """The plant's series, one of each kind a rule's selector tells apart, with how many there are of it:
    `rule_selects` reads a series' sensor and type and its node's labels and sensor names, nothing else, so
    a rule's matched series counted over these kinds equal `matched_series` over every series, at the
    cost of a few dozen kinds where a thousand nodes have thousands of series."""
    counts: dict[tuple[Any, ...], list[Any]] = {}
    for node, sensor, type_ in series:
        key = (tuple(sorted(node.meta.labels.items())), frozenset(s.name for s in node.spec.sensors), sensor, type_)
        if key in counts:
            counts[key][1] += 1
        else:
            counts[key] = [(node, sensor, type_), 1]
    return [(first, n) for first, n in counts.values()]


def secret_refs(spec: Any, path: str = "spec") -> Iterator[tuple[str, str, str]]:
    """Every `*SecretRef` ({name, key}) in an AlertReceiver's spec, as (field path, Secret name, key):
    the receiver kinds' own fields, found by the CRD's naming rule rather than listed per kind."""
    if isinstance(spec, dict):
        for field, value in sorted(spec.items()):
            if field.endswith("SecretRef") and isinstance(value, dict) and "name" in value and "key" in value:
                yield f"{path}.{field}", value["name"], value["key"]
            else:
                yield from secret_refs(value, f"{path}.{field}")


def referenced_secrets(receivers: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """The Secrets the receivers reference, each with the keys they name (sorted): what the gateway mounts."""
    keys: dict[str, set[str]] = {}
    for body in receivers:
        for _, name, key in secret_refs(body.get("spec")):
            keys.setdefault(name, set()).add(key)
    return {name: tuple(sorted(keys[name])) for name in sorted(keys)}


def receiver_verdict(body: dict[str, Any], secret_keys: Mapping[str, Collection[str] | None]) -> Verdict:
    """Accepted when the receiver is valid and every Secret key it references exists; otherwise why not,
    naming each missing Secret or key and the field that references it."""
    parsed = parse(body)
    if isinstance(parsed, str):
        return Verdict("False", "InvalidSpec", parsed)
    refs = list(secret_refs(body["spec"]))
    problems = []
    for path, name, key in refs:
        keys = secret_keys.get(name)
        if keys is None:
            problems.append(f"{path}: Secret {name!r} does not exist in this namespace")
        elif key not in keys:
            problems.append(f"{path}: Secret {name!r} has no key {key!r} (keys: {', '.join(sorted(keys)) or 'none'})")
    if problems:
        return Verdict("False", "SecretNotFound", "; ".join(problems) + "; the gateway cannot send to this receiver until they exist")
    mounted = sorted({name for _, name, _ in refs})
    where = f"; its Secrets {', '.join(mounted)} are mounted at {MOUNT_DIR}/<secret>" if mounted else ""
    return Verdict("True", "Loaded", f"the receiver is part of the gateway's config{where}")


def rule_verdict(
    body: dict[str, Any], detectors: set[str], series: list[Any], receivers: Sequence[AlertReceiver] = (), matched: int | None = None
) -> Verdict:
    """Accepted or not, and why. A refused rule stays out of the gateway's config, whose `load_plant`
    refuses the same things (a rule watching no series, an unknown receiver): the gateway never
    crash-loops on a plant the operator rendered, and the rule is accepted once nodes match it.
    `matched`: the rule's matched series, when the caller has counted them."""
    parsed = parse(body)
    if isinstance(parsed, str):
        return Verdict("False", "InvalidSpec", parsed)
    score = parsed.spec.condition.anomaly_score
    if score is not None and score.detector not in detectors:
        return Verdict(
            "False", "DetectorNotFound", f"condition.anomalyScore.detector {score.detector!r} names no DetectorModel in this namespace"
        )
    if unknown := unknown_receivers(parsed, receivers):
        return Verdict("False", "UnknownReceiver", unknown)
    if not matched and (nothing := selects_nothing(parsed, series)):
        return Verdict("False", "NoMatchingSeries", f"in this namespace: {nothing}")
    return Verdict("True", "Loaded", "the rule is part of the gateway's config")


def prometheus_rule_verdict(accepted: Verdict, rule: str, rendered: Mapping[str, str] | None, where: str) -> Verdict:
    """`PrometheusRule`: whether the rule is also a group of the namespace's PrometheusRule `where`.
    `rendered` is render_prometheus_rule's reasons per rule ('' when rendered); None when the cluster
    has no PrometheusRule CRD."""
    if rendered is None:
        return Verdict(
            "False",
            "PrometheusOperatorAbsent",
            f"the cluster has no CRD {PROMETHEUS_RULE_CRD} (the Prometheus Operator); Plantwatch evaluates the rule either way",
        )
    if accepted.status != "True":
        return Verdict("False", "NotAccepted", "only Accepted rules are rendered (see the Accepted condition)")
    why = rendered.get(rule, "")
    if why:
        return Verdict("False", "NotExpressible", why)
    return Verdict("True", "Rendered", f"group {rule} of PrometheusRule {where}")


def source_verdict(source: dict[str, Any], configmap: dict[str, Any] | None) -> SourceVerdict:
    """ModelValid for a DetectorModel's `spec.source`. `configmap` is the ConfigMap a `configMap`
    source names, as read from the cluster (None when it does not exist); other sources ignore it."""
    if "configMap" in source:
        ref = source["configMap"]
        key = ref.get("key", "model.onnx")
        if configmap is None:
            return SourceVerdict("False", "SourceNotFound", f"ConfigMap {ref['name']} does not exist", None)
        binary = configmap.get("binaryData") or configmap.get("binary_data") or {}
        data = base64.b64decode(binary[key]) if key in binary else ((configmap.get("data") or {}).get(key) or "").encode() or None
        if data is None:
            return SourceVerdict("False", "SourceNotFound", f"ConfigMap {ref['name']} has no key {key!r}", None)
        digest = hashlib.sha256(data).hexdigest()
        expected = source.get("sha256")
        if expected and expected != digest:
            return SourceVerdict("False", "ChecksumMismatch", f"the model's sha256 is {digest}, spec.source.sha256 says {expected}", digest)
        return SourceVerdict("True", "SourceVerified", f"ConfigMap {ref['name']}/{key}, {len(data)} bytes, sha256 {digest[:12]}", digest)
    if "url" in source:
        return SourceVerdict(
            "True",
            "NotVerifiedByOperator",
            "the inference pods download the model and refuse it unless its sha256 matches",
            source["url"]["sha256"],
        )
    return SourceVerdict(
        "True", "NotVerifiedByOperator", "the inference pods read the model from the volume and check it at load", source.get("sha256")
    )


def scoring_verdict(detector: dict[str, Any], nodes: list[dict[str, Any]], valid: list[SensorNode] | None = None) -> Verdict:
    """`Scoring` for a DetectorModel: which of the namespace's valid SensorNodes (as listed) it scores, or
    why none (a sensor no selected node has, a selector that selects no node), as `validate` refuses it.
    `valid`: those nodes already parsed, the valid ones."""
    parsed = parse(detector)
    if isinstance(parsed, str):
        return Verdict("False", "InvalidSpec", parsed)
    if valid is None:
        valid = [p for p in map(parse, live(nodes)) if not isinstance(p, str)]
    if nothing := scores_nothing(parsed, valid):
        return Verdict("False", "SensorsNotFound", nothing)
    names = sorted(n.name for n in scored_nodes(parsed, valid))
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return Verdict("True", "NodesMatched", f"scores {len(names)} SensorNode(s): {shown}")
