"""What the operator concludes about a plant's resources (pure): which nodes and rules go into the
gateway's config and why the others do not, and whether a DetectorModel's source holds its model.

Values in, verdicts out: the handlers read the cluster and hand the bodies over; nothing here
calls the API server or reads the clock.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from plantwatch.plant.load import matched_series, plant_series, selects_nothing, unknown_receivers
from plantwatch.plant.model import ManifestError, Resource, parse_resource


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

    @property
    def valid_nodes(self) -> list[dict[str, Any]]:
        """The SensorNodes that go into the gateway's config (and own its objects)."""
        return [body for body, parsed in self.nodes if not isinstance(parsed, str)]

    @property
    def accepted_rules(self) -> list[dict[str, Any]]:
        """The AlertRules that go into the gateway's config."""
        return [body for body, verdict, _ in self.rules if verdict.status == "True"]


def parse(body: dict[str, Any]) -> Resource[Any] | str:
    """The typed resource, or the validation message when it is invalid."""
    try:
        return parse_resource(body, f"{body['kind']} {body['metadata']['name']}")
    except ManifestError as exc:
        return str(exc)


def live(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects not being deleted: one being deleted has already left the plant."""
    return [b for b in bodies if not b["metadata"].get("deletionTimestamp")]


def judge_plant(nodes: list[dict[str, Any]], rules: list[dict[str, Any]], detectors: list[dict[str, Any]]) -> PlantVerdicts:
    """Judge a namespace's SensorNodes, AlertRules and DetectorModels (as listed, deleted ones included)."""
    nodes, rules, detectors = live(nodes), live(rules), live(detectors)
    parsed_nodes = [(n, parse(n)) for n in nodes]
    parsed_detectors = [p for p in map(parse, detectors) if not isinstance(p, str)]
    series = plant_series([p for _, p in parsed_nodes if not isinstance(p, str)], parsed_detectors)
    names = {d["metadata"]["name"] for d in detectors}
    judged = []
    for body in rules:
        parsed = parse(body)
        matched = 0 if isinstance(parsed, str) else matched_series(parsed, series)
        judged.append((body, rule_verdict(body, names, series), matched))
    return PlantVerdicts(nodes=parsed_nodes, rules=judged, detectors=detectors)


def rule_verdict(body: dict[str, Any], detectors: set[str], series: list[Any]) -> Verdict:
    """Accepted or not, and why. A refused rule stays out of the gateway's config, whose `load_plant`
    refuses the same things (a rule watching no series, an unknown receiver): the gateway never
    crash-loops on a plant the operator rendered, and the rule is accepted once nodes match it."""
    parsed = parse(body)
    if isinstance(parsed, str):
        return Verdict("False", "InvalidSpec", parsed)
    score = parsed.spec.condition.anomaly_score
    if score is not None and score.detector not in detectors:
        return Verdict(
            "False", "DetectorNotFound", f"condition.anomalyScore.detector {score.detector!r} names no DetectorModel in this namespace"
        )
    if unknown := unknown_receivers(parsed):
        return Verdict("False", "UnknownReceiver", unknown)
    if nothing := selects_nothing(parsed, series):
        return Verdict("False", "NoMatchingSeries", f"in this namespace: {nothing}")
    return Verdict("True", "Loaded", "the rule is part of the gateway's config")


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
