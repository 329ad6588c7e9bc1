"""Validate and default plant manifests against the CRDs in crds/, as the API server does.

The CRD files are the single source of truth: the Kubernetes API server enforces them
on `kubectl apply`, and this module enforces the very same files for `plantwatch up`,
so a plant that runs locally is accepted by a cluster and vice versa. It covers the
parts of a structural schema the CRDs use (types, required, enums, patterns, bounds,
list-map keys, unknown fields) and evaluates the `x-kubernetes-validations` CEL rules
with cel-python. Error messages follow the API server's `path: reason` form.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import celpy
import yaml

from plantwatch.contracts.names import GROUP


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with a manifest: where (a field path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class CRDSchema:
    """The served schema of one custom resource kind."""

    kind: str
    version: str
    root: dict[str, Any]

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{self.version}"

    def defaulted(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Return a copy of `obj` with the schema's defaults filled in."""
        out = copy.deepcopy(obj)
        _apply_defaults(self.root, out)
        return out

    def validate(self, obj: dict[str, Any]) -> list[FieldError]:
        """Return every error in a (defaulted) object; empty when it is valid."""
        errors: list[FieldError] = []
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
        _validate(self.root, body, "", errors, root=True)
        return errors


@cache
def crd_schemas() -> dict[str, CRDSchema]:
    """Load the CRDs shipped with the package (the same files as crds/), keyed by kind."""
    out: dict[str, CRDSchema] = {}
    for entry in resources.files("plantwatch").joinpath("crds").iterdir():
        if not entry.name.endswith(".yaml"):
            continue
        crd = yaml.safe_load(entry.read_text())
        names = crd["spec"]["names"]
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        out[names["kind"]] = CRDSchema(
            kind=names["kind"],
            version=version["name"],
            root=version["schema"]["openAPIV3Schema"],
        )
    return out


def _apply_defaults(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _apply_defaults(schema["items"], item)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _quote(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f'"{type(value).__name__ if not isinstance(value, dict) else "object"}"'
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


#: What an `x-kubernetes-int-or-string` field of these CRDs takes (all of them are decimal numbers).
INT_OR_STRING = 'a whole number such as 85 or -40, or a decimal string such as "85.5" or "-40.5"'


def _validate(schema: dict[str, Any], value: Any, path: str, errors: list[FieldError], root: bool = False) -> None:
    expected = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        # The API server reads JSON, where 85.0 is the integer 85; any other fraction is a number it refuses.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            shown = {dict: "object", list: "array", bool: "boolean"}.get(type(value), "number")
            errors.append(FieldError(path, f'Invalid value: "{shown}": must be of type integer,string: {INT_OR_STRING}'))
            return
    elif expected:
        ok = isinstance(value, _TYPES[expected]) and not (expected in ("integer", "number") and isinstance(value, bool))
        if not ok:
            errors.append(FieldError(path or "<root>", f"Invalid value: {_quote(value)}: must be of type {expected}"))
            return
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    before = len(errors)
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_quote(v) for v in schema["enum"])
        errors.append(FieldError(path, f"Unsupported value: {_quote(value)}: supported values: {supported}"))
    if isinstance(value, str):
        _check_string(schema, value, path, errors)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(FieldError(path, f"Invalid value: {value}: must be greater than or equal to {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(FieldError(path, f"Invalid value: {value}: must be less than or equal to {schema['maximum']}"))
    elif isinstance(value, dict):
        _check_object(schema, value, path, errors, root)
    elif isinstance(value, list):
        _check_array(schema, value, path, errors)
    # Like the API server, rules only run on values that are structurally valid.
    if before == len(errors) and "x-kubernetes-validations" in schema:
        _check_rules(schema["x-kubernetes-validations"], value, path, errors)


def _check_string(schema: dict[str, Any], value: str, path: str, errors: list[FieldError]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(FieldError(path, f"Invalid value: {_quote(value)}: must be at least {schema['minLength']} chars long"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(FieldError(path, f"Too long: may not be more than {schema['maxLength']} bytes"))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(FieldError(path, f"Invalid value: {_quote(value)}: should match '{schema['pattern']}'"))
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors.append(FieldError(path, f"Invalid value: {_quote(value)}: must be an RFC 3339 date-time, e.g. 2026-01-31T08:00:00Z"))


def _check_object(schema: dict[str, Any], value: dict[str, Any], path: str, errors: list[FieldError], root: bool) -> None:
    props = schema.get("properties")
    for name in schema.get("required", []):
        if name not in value:
            errors.append(FieldError(_join(path, name), "Required value"))
    if props is None:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                _validate(extra, item, _join(path, key), errors)
        return
    for name, item in value.items():
        if name in props:
            _validate(props[name], item, _join(path, name), errors)
        elif not root:
            errors.append(FieldError(_join(path, name), f"unknown field; accepted fields: {', '.join(props)}"))
        else:
            errors.append(FieldError(name, "unknown field"))


def _check_array(schema: dict[str, Any], value: list[Any], path: str, errors: list[FieldError]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(FieldError(path, f"Invalid value: {len(value)}: must have at least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(FieldError(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
    for i, item in enumerate(value):
        _validate(schema.get("items", {}), item, f"{path}[{i}]", errors)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
            if key in seen:
                shown = ", ".join(f'"{k}":{_quote(v)}' for k, v in zip(keys, key))
                errors.append(FieldError(f"{path}[{i}]", f"Duplicate value: map[string]interface {{}}{{{shown}}}"))
            seen.add(key)
    elif list_type == "set":
        seen_items: list[Any] = []
        for i, item in enumerate(value):
            if item in seen_items:
                errors.append(FieldError(f"{path}[{i}]", f"Duplicate value: {_quote(item)}"))
            seen_items.append(item)


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _check_rules(rules: list[dict[str, Any]], value: Any, path: str, errors: list[FieldError]) -> None:
    activation = {"self": celpy.json_to_cel(value)}
    for rule in rules:
        detail = ""
        try:
            result = _program(rule["rule"]).evaluate(activation)
        except celpy.CELEvalError as exc:  # a runtime error rejects the object, as on the API server
            result, detail = None, f" (evaluating the rule failed: {exc})"
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            field = path + rule.get("fieldPath", "") if rule.get("fieldPath") else path
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            shown = _quote(value) if not isinstance(value, dict) else '"object"'
            errors.append(FieldError(field, f"Invalid value: {shown}: {message}{detail}"))
