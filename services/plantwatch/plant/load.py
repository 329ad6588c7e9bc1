"""Read a plant folder (the same YAML `kubectl apply -f` takes) into a validated Plant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from plantwatch.plant.model import (
    AlertRule,
    DetectorModel,
    ManifestError,
    SensorNode,
    is_plantwatch,
    parse_resource,
    selector_matches,
)


@dataclass(frozen=True)
class Plant:
    """Every resource of one plant, validated."""

    nodes: tuple[SensorNode, ...] = ()
    rules: tuple[AlertRule, ...] = ()
    detectors: tuple[DetectorModel, ...] = ()
    #: Other Kubernetes objects in the folder (ConfigMaps holding models, Secrets...).
    others: tuple[dict[str, Any], ...] = ()

    def rules_for(self, node: SensorNode, sensor_name: str, sensor_type: str) -> list[AlertRule]:
        """Rules whose selector matches this node's series."""
        out = []
        for rule in self.rules:
            sel = rule.spec.selector
            if sel.sensor_type and sel.sensor_type != sensor_type:
                continue
            if sel.sensor and sel.sensor != sensor_name:
                continue
            if not selector_matches(sel.node_selector, node.meta.labels):
                continue
            out.append(rule)
        return out


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


def plant_from_documents(docs: Iterable[tuple[str, dict[str, Any]]]) -> Plant:
    """Build a Plant from (where, document) pairs; every error of every document is reported."""
    nodes, rules, detectors, others, problems = [], [], [], [], []
    for where, doc in docs:
        if not isinstance(doc, dict):
            problems.append(f"{where}: not a Kubernetes object (expected a mapping with apiVersion and kind)")
            continue
        if not is_plantwatch(doc):
            others.append(doc)
            continue
        try:
            resource = parse_resource(doc, where)
        except ManifestError as exc:
            problems.append(str(exc))
            continue
        {"SensorNode": nodes, "AlertRule": rules, "DetectorModel": detectors}[resource.kind].append(resource)
    problems.extend(_cross_checks(nodes, rules, detectors))
    if problems:
        raise PlantError(problems)
    return Plant(tuple(nodes), tuple(rules), tuple(detectors), tuple(others))


def _cross_checks(nodes: list[SensorNode], rules: list[AlertRule], detectors: list[DetectorModel]) -> list[str]:
    """What no single manifest can show: duplicate names and topics, dangling references."""
    problems = []
    seen: dict[tuple[str, str, str], bool] = {}
    for r in [*nodes, *rules, *detectors]:
        key = (r.kind, r.meta.namespace, r.meta.name)
        if key in seen:
            problems.append(f"{r.kind} {r.meta.namespace}/{r.meta.name}: defined twice")
        seen[key] = True
    topics: dict[str, str] = {}
    for n in nodes:
        topic = n.spec.payload.topic
        if topic in topics:
            problems.append(f"SensorNode {n.name}: spec.payload.topic {topic!r} is already used by SensorNode {topics[topic]}")
        topics[topic] = n.name
    detector_names = {d.name for d in detectors}
    for r in rules:
        score = r.spec.condition.anomaly_score
        if score is not None and score.detector not in detector_names:
            problems.append(
                f"AlertRule {r.name}: spec.condition.anomalyScore.detector {score.detector!r} names no DetectorModel "
                f"(defined: {', '.join(sorted(detector_names)) or 'none'})"
            )
    return problems


def load_plant(*paths: str | Path) -> Plant:
    """Load and validate every manifest under the given files or folders."""
    docs: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for f in manifest_files(paths):
        try:
            for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
                if doc is not None:
                    docs.append((f"{f}#{i}" if i else str(f), doc))
        except yaml.YAMLError as exc:
            problems.append(f"{f}: not valid YAML: {exc}")
    if problems:
        raise PlantError(problems)
    return plant_from_documents(docs)
