"""The plant as typed values: parse manifests (validated against crds/) into resources.

`parse_resource` is shared by both runtimes: `plantwatch up` feeds it YAML documents,
the operator feeds it the objects kopf hands over, so both read a spec the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from plantwatch.plant.schema import GROUP, FieldError, crd_schemas
from plantwatch.plant.specs import AlertReceiverSpec, AlertRuleSpec, DetectorModelSpec, SensorNodeSpec

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SpecT = TypeVar("SpecT")


@dataclass(frozen=True)
class Meta:
    """The parts of `metadata` the platform uses."""

    name: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


@dataclass(frozen=True)
class Resource(Generic[SpecT]):
    """A custom resource: its kind, metadata and typed spec."""

    kind: str
    meta: Meta
    spec: SpecT

    @property
    def name(self) -> str:
        return self.meta.name


SensorNode = Resource[SensorNodeSpec]
AlertRule = Resource[AlertRuleSpec]
DetectorModel = Resource[DetectorModelSpec]
AlertReceiver = Resource[AlertReceiverSpec]

_SPEC_CLASSES: dict[str, Any] = {
    "SensorNode": SensorNodeSpec,
    "AlertRule": AlertRuleSpec,
    "DetectorModel": DetectorModelSpec,
    "AlertReceiver": AlertReceiverSpec,
}


class ManifestError(ValueError):
    """A manifest the CRD schema rejects; lists every problem with its field path."""

    def __init__(self, where: str, errors: list[FieldError]):
        self.where = where
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{where} is invalid:\n{lines}")


def is_plantwatch(doc: dict[str, Any]) -> bool:
    """True for documents of our API group (other kinds in a plant folder are passed through)."""
    return str(doc.get("apiVersion", "")).startswith(GROUP + "/")


def parse_resource(doc: dict[str, Any], where: str = "manifest") -> Resource[Any]:
    """Validate one manifest against its CRD, apply defaults and return the typed resource."""
    kind = doc.get("kind")
    schemas = crd_schemas()
    if kind not in schemas:
        raise ManifestError(where, [FieldError("kind", f'Unsupported value: "{kind}": supported values: {", ".join(sorted(schemas))}')])
    schema = schemas[kind]
    meta = doc.get("metadata") or {}
    name = meta.get("name", "")
    label = f"{where} ({kind} {name or '<unnamed>'})"
    errors: list[FieldError] = []
    if doc.get("apiVersion") != schema.api_version:
        errors.append(FieldError("apiVersion", f'Unsupported value: "{doc.get("apiVersion")}": supported values: "{schema.api_version}"'))
    if not name:
        errors.append(FieldError("metadata.name", "Required value"))
    elif len(name) > 253 or not _NAME.match(name):
        errors.append(
            FieldError(
                "metadata.name",
                f"Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            )
        )
    defaulted = schema.defaulted(doc)
    errors.extend(schema.validate(defaulted))
    if errors:
        raise ManifestError(label, errors)
    return Resource(
        kind=kind,
        meta=Meta(
            name=name,
            namespace=meta.get("namespace") or "default",
            labels=dict(meta.get("labels") or {}),
            generation=meta.get("generation"),
            uid=meta.get("uid"),
        ),
        spec=_SPEC_CLASSES[kind].from_dict(defaulted["spec"]),
    )


def device_id(node: SensorNode) -> str:
    """The id the node writes into its payloads (defaults to the object's name)."""
    return node.spec.device_id or node.meta.name


def selector_matches(selector: Any, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics for matchLabels and matchExpressions."""
    if selector is None:
        return True
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expr in getattr(selector, "match_expressions", ()):
        present = expr.key in labels
        if expr.operator == "In" and labels.get(expr.key) not in expr.values:
            return False
        if expr.operator == "NotIn" and present and labels[expr.key] in expr.values:
            return False
        if expr.operator == "Exists" and not present:
            return False
        if expr.operator == "DoesNotExist" and present:
            return False
    return True


_DURATION = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """`1m30s` → 90.0 (the CRDs' duration pattern: integers with ms, s, m or h)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"duration {text!r}: expected integers with units ms, s, m, h, e.g. 30s or 1m30s")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def decimal_text(value: float) -> str:
    """A level or bound as a person writes it: 85.0 → `85`, 85.5 → `85.5` (the shortest text that reads back equal)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
