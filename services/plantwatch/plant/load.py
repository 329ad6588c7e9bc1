"""Read a plant folder (the same YAML `kubectl apply -f` takes) into a validated Plant."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plantwatch.contracts.names import BUILTIN_RECEIVERS
from plantwatch.plant.model import (
    AlertReceiver,
    AlertRule,
    DetectorModel,
    ManifestError,
    SensorNode,
    is_plantwatch,
    parse_resource,
    selector_matches,
)
from plantwatch.rules import summary


@dataclass(frozen=True)
class Plant:
    """Every resource of one plant, validated."""

    nodes: tuple[SensorNode, ...] = ()
    rules: tuple[AlertRule, ...] = ()
    detectors: tuple[DetectorModel, ...] = ()
    receivers: tuple[AlertReceiver, ...] = ()
    #: Other Kubernetes objects in the folder (ConfigMaps holding models, Secrets...).
    others: tuple[dict[str, Any], ...] = ()

    def rules_for(self, node: SensorNode, sensor_name: str, sensor_type: str) -> list[AlertRule]:
        """Rules whose selector matches this node's series."""
        return [rule for rule in self.rules if rule_selects(rule, node, sensor_name, sensor_type)]


#: The type of the readings a DetectorModel's scores become (sensor = the DetectorModel's name).
SCORE_TYPE = "anomaly_score"


def rule_selects(rule: AlertRule, node: SensorNode, sensor_name: str, sensor_type: str) -> bool:
    """Whether the rule watches this series: every criterion of its selector matches, an
    AnomalyScore rule watches only its own detector's scores (sensor = the DetectorModel's name)
    and an Absence rule only the node's own sensors (the rule engine's absence watches)."""
    sel = rule.spec.selector
    kind = rule.spec.condition.type
    return (
        (sel.sensor_type is None or sel.sensor_type == sensor_type)
        and (sel.sensor is None or sel.sensor == sensor_name)
        and (kind != "AnomalyScore" or rule.spec.condition.anomaly_score.detector == sensor_name)
        and (kind != "Absence" or any(s.name == sensor_name for s in node.spec.sensors))
        and selector_matches(sel.node_selector, node.meta.labels)
    )


def scored_nodes(detector: DetectorModel, nodes: Iterable[SensorNode]) -> list[SensorNode]:
    """The nodes a DetectorModel scores: those its features.nodeSelector selects that have every
    sensor of its features.sensors (the inference service builds an input only from all of them)."""
    wanted = set(detector.spec.features.sensors)
    return [
        n
        for n in nodes
        if selector_matches(detector.spec.features.node_selector, n.meta.labels) and wanted <= {s.name for s in n.spec.sensors}
    ]


def scores_nothing(detector: DetectorModel, nodes: Iterable[SensorNode]) -> str | None:
    """Why the DetectorModel scores no node, naming the sensors each node it selects lacks (or the
    nodes its selector passed over), or None when it scores some."""
    nodes = list(nodes)
    if scored_nodes(detector, nodes):
        return None
    features = detector.spec.features
    named = lambda ns: ", ".join(ns[:5]) + (f" and {len(ns) - 5} more" if len(ns) > 5 else "")  # noqa: E731
    if not nodes:
        return "there is no SensorNode, so the DetectorModel scores nothing until one has its sensors"
    selected = [n for n in nodes if selector_matches(features.node_selector, n.meta.labels)]
    if not selected:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(features.node_selector.match_labels.items()))
        return (
            f"spec.features.nodeSelector ({labels}) selects none of the {len(nodes)} SensorNode(s) "
            f"({named(sorted(n.name for n in nodes))}), so the DetectorModel scores nothing; "
            f"give a node these labels or change the selector"
        )
    lacks = [
        f"{n.name} lacks {', '.join(s for s in features.sensors if s not in {x.name for x in n.spec.sensors})}"
        for n in sorted(selected, key=lambda n: n.name)
    ]
    among = "SensorNode" if features.node_selector is None else "SensorNode its nodeSelector selects"
    return (
        f"spec.features.sensors: no {among} has all of {', '.join(features.sensors)}, so the DetectorModel "
        f"scores nothing ({named(lacks)}); a node is scored only when it has every one of these sensors: "
        f"fix the names or add the sensors to a node"
    )


def plant_series(nodes: Iterable[SensorNode], detectors: Iterable[DetectorModel]) -> list[tuple[SensorNode, str, str]]:
    """Every (node, sensor, type) series a plant produces: each node's sensors, and the scores of each
    DetectorModel for the nodes it scores (`scored_nodes`)."""
    nodes = list(nodes)
    out = [(n, s.name, s.type) for n in nodes for s in n.spec.sensors]
    for d in detectors:
        out.extend((n, d.name, SCORE_TYPE) for n in scored_nodes(d, nodes))
    return out


def matched_series(rule: AlertRule, series: Iterable[tuple[SensorNode, str, str]]) -> int:
    """How many of the series the rule watches."""
    return sum(1 for node, sensor, type_ in series if rule_selects(rule, node, sensor, type_))


def known_receivers(receivers: Iterable[AlertReceiver] = ()) -> tuple[str, ...]:
    """Receiver names an AlertRule may use: the built-in ones (`console`) and the plant's AlertReceivers."""
    return BUILTIN_RECEIVERS + tuple(sorted(r.name for r in receivers))


def selects_nothing(rule: AlertRule, series: list[tuple[SensorNode, str, str]]) -> str | None:
    """Why the rule's selector matches no series of the plant (a typo in sensor, sensorType or
    labels, or a detector that scores no node), or None when it matches some."""
    if matched_series(rule, series):
        return None
    sel = rule.spec.selector
    shown = lambda values: ", ".join(sorted(set(values))) or "none"  # noqa: E731
    criteria = [f"sensor {sel.sensor!r} (sensors: {shown(s for _, s, _ in series)})"] if sel.sensor is not None else []
    if sel.sensor_type is not None:
        criteria.append(f"sensorType {sel.sensor_type!r} (types: {shown(t for _, _, t in series)})")
    if sel.node_selector is not None:
        criteria.append("its nodeSelector")
    if rule.spec.condition.type == "AnomalyScore":
        detector = rule.spec.condition.anomaly_score.detector
        scored = {n.name for n, s, t in series if t == SCORE_TYPE and s == detector}
        criteria.append(f"the scores of DetectorModel {detector!r}, which it scores on {len(scored)} node(s)")
    return f"spec.selector matches no sensor of any SensorNode: nothing has {' and '.join(criteria) or 'a sensor'}"


def rule_receivers(rule: AlertRule) -> list[str]:
    """Every receiver the rule may notify: spec.receivers and those of its escalation tiers."""
    names = list(rule.spec.receivers)
    for tier in rule.spec.escalation or ():
        names.extend(n for n in tier.receivers if n not in names)
    return names


def unknown_receivers(rule: AlertRule, receivers: Iterable[AlertReceiver] = ()) -> str | None:
    """Why some of the rule's receivers cannot be used (no AlertReceiver has the name), or None when all are known."""
    known = known_receivers(receivers)
    unknown = [r for r in rule_receivers(rule) if r not in known]
    if not unknown:
        return None
    return (
        f"spec.receivers: no AlertReceiver named {', '.join(map(repr, unknown))} in the plant "
        f"(known: {', '.join(known)}); define an AlertReceiver of that name or use one of these"
    )


class PlantError(ValueError):
    """The plant folder cannot be used; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the plant is invalid:\n" + "\n".join(problems))


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    """YAML files named by the paths, folders searched recursively, in a stable order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml")))
        elif p.exists():
            files.append(p)
        else:
            raise PlantError([f"{p}: no such file or folder"])
    return files


def plant_from_documents(docs: Iterable[tuple[str, dict[str, Any]]], whole_plant: bool = False) -> Plant:
    """Build a Plant from (where, document) pairs; every error of every document is reported.

    `whole_plant`: the documents are a whole plant, as `load_plant` reads, so an AlertRule whose
    selector matches no series and a DetectorModel that scores none of their SensorNodes are errors
    (a test may build a rule or detector for series it does not declare).
    """
    placed: list[tuple[str, Any]] = []
    others, problems = [], []
    for where, doc in docs:
        if not isinstance(doc, dict):
            problems.append(f"{where}: not a Kubernetes object (expected a mapping with apiVersion and kind)")
            continue
        if not is_plantwatch(doc):
            others.append(doc)
            continue
        try:
            placed.append((where, parse_resource(doc, where)))
        except ManifestError as exc:
            problems.append(str(exc))
    problems.extend(_cross_checks(placed, whole_plant))
    if problems:
        raise PlantError(problems)
    of = lambda kind: tuple(r for _, r in placed if r.kind == kind)  # noqa: E731
    return Plant(of("SensorNode"), of("AlertRule"), of("DetectorModel"), of("AlertReceiver"), tuple(others))


def _cross_checks(placed: list[tuple[str, Any]], whole_plant: bool) -> list[str]:
    """What no single manifest can show: duplicate names and topics, dangling references, rules that
    watch nothing or notify nobody, detectors that score no node. Each problem names the file (and document) and the resource."""
    problems = []
    label = lambda where, r: f"{where} ({r.kind} {r.name})"  # noqa: E731
    seen: dict[tuple[str, str, str], str] = {}
    for where, r in placed:
        key = (r.kind, r.meta.namespace, r.meta.name)
        if key in seen:
            problems.append(f"{where} ({r.kind} {r.meta.namespace}/{r.meta.name}): defined twice (first in {seen[key]})")
        seen.setdefault(key, where)
    nodes = [r for _, r in placed if r.kind == "SensorNode"]
    detectors = [r for _, r in placed if r.kind == "DetectorModel"]
    receivers = [r for _, r in placed if r.kind == "AlertReceiver"]
    topics: dict[str, str] = {}
    for where, n in placed:
        if n.kind != "SensorNode":
            continue
        topic = n.spec.payload.topic
        if topic in topics:
            problems.append(f"{label(where, n)}: spec.payload.topic {topic!r} is already used by SensorNode {topics[topic]}")
        topics[topic] = n.name
    detector_names = {d.name for d in detectors}
    series = plant_series(nodes, detectors)
    for where, d in placed:
        # A DetectorModel checked without SensorNodes (a published model alone) has no plant to score yet.
        if d.kind == "DetectorModel" and whole_plant and nodes and (nothing := scores_nothing(d, nodes)):
            problems.append(f"{label(where, d)}: {nothing}")
    for where, r in placed:
        if r.kind != "AlertRule":
            continue
        score = r.spec.condition.anomaly_score
        if score is not None and score.detector not in detector_names:
            problems.append(
                f"{label(where, r)}: spec.condition.anomalyScore.detector {score.detector!r} names no DetectorModel "
                f"(defined: {', '.join(sorted(detector_names)) or 'none'})"
            )
        elif whole_plant and (nothing := selects_nothing(r, series)):
            problems.append(f"{label(where, r)}: {nothing}")
        if unknown := unknown_receivers(r, receivers):
            problems.append(f"{label(where, r)}: {unknown}")
        if r.spec.annotations and r.spec.annotations.summary and (bad := summary.check(r.spec.annotations.summary)):
            problems.append(f"{label(where, r)}: {bad}")
    return problems


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records a key given twice in one mapping instead of keeping the last value
    silently: the API server's strict decoding (and so `kubectl apply`) rejects such manifests."""

    def __init__(self, stream: str):
        super().__init__(stream)
        #: (line, column, key, first line), 1-based, since the last `take_duplicates`.
        self.duplicates: list[tuple[int, int, Any, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            # merge keys (`<<: *base`) may legitimately repeat keys of the merged mapping
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                self.duplicates.append((line, key_node.start_mark.column + 1, key, first[key]))
            first.setdefault(key, line)
        return super().construct_mapping(node, deep)

    def take_duplicates(self) -> list[tuple[int, int, Any, int]]:
        out, self.duplicates = self.duplicates, []
        return out


def _where(f: Path, i: int, doc: Any) -> str:
    """`file` or `file#i` for the i-th document, with the resource's kind and name when it has them."""
    where = f"{f}#{i}" if i else str(f)
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    return f"{where} ({doc.get('kind')} {meta.get('name')})" if isinstance(meta, dict) and meta.get("name") else where


def _yaml_problem(f: Path, exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"{f}: offset {exc.position}: not valid YAML: character {exc.character:#06x} is not allowed "
            f"(a binary file?); a plant file must be UTF-8 YAML"
        )
    mark = getattr(exc, "problem_mark", None)
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{f}: {at}not valid YAML: {problem}" + (f" ({context})" if context else "")


def read_manifests(f: Path) -> tuple[list[tuple[str, Any]] | None, list[str]]:
    """The (where, document) pairs of one YAML file and its problems. The documents are None when
    the file cannot be used at all (unreadable, not UTF-8, not YAML); a key given twice in a
    mapping is a problem, but the file's documents are still checked, so all is reported at once."""
    try:
        text = f.read_bytes().decode("utf-8")
    except OSError as exc:
        return None, [f"{f}: cannot be read: {exc.strerror or exc}"]
    except UnicodeDecodeError as exc:
        return None, [
            f"{f}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            f"a plant file must be UTF-8 YAML, as kubectl reads it"
        ]
    docs, problems = [], []
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(f, exc)]
    try:
        i = 0
        while loader.check_data():
            doc = loader.get_data()
            problems.extend(
                f"{_where(f, i, doc)}: line {line}, column {col}: duplicate key {key!r} (first at line {before}); "
                f"a key may appear once per mapping, as the API server requires"
                for line, col, key, before in loader.take_duplicates()
            )
            if doc is not None:
                docs.append((f"{f}#{i}" if i else str(f), doc))
            i += 1
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(f, exc)]
    finally:
        loader.dispose()
    return docs, problems


def load_plant(*paths: str | Path, runnable: bool = True) -> Plant:
    """Load and validate every manifest under the given files or folders; PlantError lists every problem.

    A plant to run without a SensorNode is an error: nothing would be subscribed to, stored or
    alerted on, so a wrong path or an empty folder must not look like a running plant. With
    `runnable=False` (checking some resources of a plant, e.g. a published DetectorModel) the
    files must hold at least one Plantwatch resource.
    """
    files = manifest_files(paths)
    docs: list[tuple[str, Any]] = []
    problems: list[str] = []
    unusable = False
    for f in files:
        found, wrong = read_manifests(f)
        unusable |= found is None
        docs.extend(found or ())
        problems.extend(wrong)
    if unusable:
        raise PlantError(problems)  # the resources of an unusable file are unknown: cross-checks would mislead
    ours = [d.get("kind") for _, d in docs if isinstance(d, dict) and is_plantwatch(d)]
    if ("SensorNode" not in ours) if runnable else not ours:
        shown = ", ".join(map(str, files[:5])) + (", ..." if len(files) > 5 else "")
        wanted = "SensorNode" if runnable else "Plantwatch resource"
        problems.append(
            f"{', '.join(map(str, paths))}: no {wanted} in the {len(files)} YAML file(s) found"
            + (f" ({shown})" if files else "")
            + (
                "; a plant needs at least one SensorNode (apiVersion plantwatch.io/v1alpha1, kind SensorNode) "
                if runnable
                else "; expected apiVersion plantwatch.io/v1alpha1 and kind SensorNode, AlertRule or DetectorModel "
            )
            + "in a .yaml or .yml file (folders are searched recursively)"
        )
    try:
        plant = plant_from_documents(docs, whole_plant=True)
    except PlantError as exc:
        raise PlantError(problems + exc.problems) from None
    if problems:
        raise PlantError(problems)
    return plant
