"""A plant's AlertRules as one Prometheus Operator PrometheusRule (pure): PromQL over the series the
gateway exports (`plantwatch_sensor_value`, `plantwatch_sensor_last_seen_timestamp_seconds`).

Values in, a manifest and the reasons out; docs/alerting.md says what each condition becomes.
Every selector names the plant's namespace (the label a ServiceMonitor or PodMonitor in that
namespace puts on the gateway's series) and resolves the rule's nodeSelector to node names,
since Prometheus does not know SensorNode labels. One group per AlertRule; a Threshold rule is
one alert per level, each a `severity`, and a level that fires mutes the lower ones, so only
the most severe level fires, as in Plantwatch. The alerts read their own `ALERTS` series (the
state of the previous evaluation) for what PromQL has no other memory of: which level fires,
for the `unless` and for a threshold's hysteresis.
"""

from __future__ import annotations

import re
from typing import Any

from plantwatch.plant.load import SCORE_TYPE, Plant, plant_series, rule_selects
from plantwatch.plant.model import AlertRule, SensorNode, decimal_text, duration_seconds
from plantwatch.rules import summary as summaries
from plantwatch.rules.engine import LEVELS

API_VERSION = "monitoring.coreos.com/v1"
KIND = "PrometheusRule"
#: The CRD whose presence says the Prometheus Operator (or its CRDs) is installed.
CRD = "prometheusrules.monitoring.coreos.com"
VALUE = "plantwatch_sensor_value"
LAST_SEEN = "plantwatch_sensor_last_seen_timestamp_seconds"
#: Why a RateOfChange rule is not rendered (the AlertRule's PrometheusRule condition says so).
RATE_NOT_EXPRESSIBLE = (
    "RateOfChange compares each reading with the one before it (|Δvalue|/Δt between consecutive readings); "
    "Prometheus sees plantwatch_sensor_value only at its scrape interval, so a jump and its return between two "
    "scrapes never reaches PromQL, and deriv() over a window is a smoothed slope that fires on other changes: "
    "Plantwatch's own rule engine evaluates this rule"
)
_PRINTF_SPEC = re.compile(r"^(\.[0-9]+)?[eEfFgG]$")


def prometheus_rule_name(namespace: str) -> str:
    return f"plantwatch-{namespace}-rules"


def render_prometheus_rule(plant: Plant, namespace: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The namespace's PrometheusRule (one group per expressible AlertRule; None when the plant has no
    rule) and, per AlertRule name, why it is not expressible ('' for those rendered)."""
    if not plant.rules:
        return None, {}
    series = plant_series(plant.nodes, plant.detectors)
    thresholds = {d.name: d.spec.threshold for d in plant.detectors if d.spec.threshold is not None}
    groups, why = [], {}
    for rule in sorted(plant.rules, key=lambda r: r.name):
        matched = [(n, s, t) for n, s, t in series if rule_selects(rule, n, s, t)]
        rules, why[rule.name] = _alerts(rule, namespace, matched, thresholds, plant.nodes)
        if rules:
            groups.append({"name": rule.name, "rules": rules})
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": prometheus_rule_name(namespace), "namespace": namespace},
        "spec": {"groups": groups},
    }
    return manifest, why


def _alerts(
    rule: AlertRule,
    namespace: str,
    matched: list[tuple[SensorNode, str, str]],
    thresholds: dict[str, str],
    plant_nodes: tuple[SensorNode, ...],
) -> tuple[list[dict[str, Any]], str]:
    """The rule's alerting rules, or none and why."""
    spec, cond = rule.spec, rule.spec.condition
    if not matched:
        return [], "its selector matches no series of the plant's SensorNodes and DetectorModels"
    if cond.type == "RateOfChange":
        return [], RATE_NOT_EXPRESSIBLE
    nodes = sorted({n.name for n, _, _ in matched})
    sel = spec.selector
    matchers = [f'namespace="{namespace}"', _node_matcher(nodes)]
    if sel.sensor is not None:
        matchers.append(f'sensor="{_quote(sel.sensor)}"')
    if cond.type == "AnomalyScore":
        matchers += [f'sensor="{_quote(cond.anomaly_score.detector)}"', f'type="{SCORE_TYPE}"']
    elif sel.sensor_type is not None:
        matchers.append(f'type="{_quote(sel.sensor_type)}"')
    selector = "{" + ",".join(dict.fromkeys(matchers)) + "}"
    template = spec.annotations.summary if spec.annotations and spec.annotations.summary else None
    runbook = spec.annotations.runbook if spec.annotations else None
    for_ = _duration(duration_seconds(spec.for_))
    watched = [n for n in plant_nodes if n.name in nodes]

    def alert(
        expr: str, severity: str, for_: str, threshold: float, direction: str = "above", sensor: str | None = None, **labels: str
    ) -> dict[str, Any]:
        summary = _summary(template, rule.name, cond.type, severity, threshold, direction, watched, sensor)
        annotations = {"summary": summary}
        if runbook:
            annotations["runbook_url"] = runbook
        return {
            "alert": rule.name,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, "namespace": namespace, **labels},
            "annotations": annotations,
        }

    if cond.type == "Threshold":
        t = cond.threshold
        levels = [(lvl, getattr(t, lvl)) for lvl in LEVELS if getattr(t, lvl) is not None]
        above, hysteresis = t.direction == "Above", t.hysteresis
        out = []
        for i, (level, threshold) in reversed(list(enumerate(levels))):  # the most severe first: the lower ones read its ALERTS
            reached = f"{VALUE}{selector} {'>=' if above else '<='} {decimal_text(threshold)}"
            if hysteresis > 0:
                # A firing level holds until the value is back past the hysteresis, as CompiledRule.level does.
                back = threshold - hysteresis if above else threshold + hysteresis
                held = f"{VALUE}{selector} {'>' if above else '<'} {_number(back)}"
                reached = f"({reached} or ({held} and on(node, sensor) {_alerts_series(rule.name, namespace, [level])}))"
            higher = [lvl for lvl, _ in levels[i + 1 :]]
            if higher:
                reached = f"{reached} unless on(node, sensor) {_alerts_series(rule.name, namespace, higher)}"
            out.append(alert(reached, level, for_, threshold, "above" if above else "below"))
        return out, ""
    if cond.type == "AnomalyScore":
        score = cond.anomaly_score
        above = score.above if score.above is not None else thresholds.get(score.detector, 0.5)
        return [alert(f"{VALUE}{selector} > {decimal_text(above)}", spec.severity, for_, above)], ""
    # Absence: per node when the selector names no sensor or type (the engine's node-wide watch), else per series.
    after = duration_seconds(cond.absence.after)
    node_wide = sel.sensor is None and sel.sensor_type is None
    by = "node" if node_wide else "node, sensor"
    seen = f'{LAST_SEEN}{{namespace="{namespace}",{_node_matcher(nodes)}}}'
    if sel.sensor is not None:
        seen = seen[:-1] + f',sensor="{_quote(sel.sensor)}"}}'
    if sel.sensor_type is not None:  # the last-seen series carry no type: the value series of the same sensor do
        seen = f"({seen} and on(node, sensor) {VALUE}{selector})"
    silent = f"time() - max by ({by}) ({seen}) >= {_number(after)}"
    # A series that has never been exported (a node silent since the gateway started, or the gateway
    # restarted meanwhile) is absent, not old: each one is named, as absent() needs equality matchers.
    # Label `absence` tells the two alerts apart: `silent` (its last reading is too old) or `unseen`.
    pairs = sorted({(n.name, None if node_wide else s) for n, s, _ in matched})
    missing = " or ".join(
        f'absent({LAST_SEEN}{{namespace="{namespace}",node="{_quote(node)}"'
        + (f',sensor="{_quote(sensor)}"' if sensor is not None else "")
        + "})"
        for node, sensor in pairs
    )
    star = "*" if node_wide else None
    return [
        alert(silent, spec.severity, "0s", after, sensor=star, absence="silent"),
        alert(missing, spec.severity, _duration(after), after, sensor=star, absence="unseen"),
    ], ""


def _alerts_series(rule: str, namespace: str, severities: list[str]) -> str:
    """The rule's firing alerts of these levels as Prometheus records them (the previous evaluation's,
    or this one's for an alert evaluated earlier in the group)."""
    severity = f'severity="{severities[0]}"' if len(severities) == 1 else f'severity=~"{"|".join(severities)}"'
    return f'ALERTS{{alertname="{_quote(rule)}",alertstate="firing",namespace="{namespace}",{severity}}}'


def _node_matcher(nodes: list[str]) -> str:
    if len(nodes) == 1:
        return f'node="{_quote(nodes[0])}"'
    return 'node=~"' + "|".join(_quote(re.sub(r"([.\\+*?()|\[\]{}^$])", r"\\\1", n)) for n in nodes) + '"'


def _quote(text: str) -> str:
    """Text inside a PromQL double-quoted string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float) -> str:
    return format(value, ".17g")


def _duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (`1h30m`, `2s`, `500ms`; `0s`)."""
    ms = round(seconds * 1000)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0s"


class _Expression:
    """A number the summary shows, formatted as a Prometheus template expression (`{{ printf "%.1f" $value }}`)."""

    def __init__(self, expr: str):
        self.expr = expr

    def __format__(self, spec: str) -> str:
        return f'{{{{ printf "%{spec}" {self.expr} }}}}' if _PRINTF_SPEC.match(spec) else f"{{{{ {self.expr} }}}}"


def _per_node(nodes: list[SensorNode], field: str) -> str | None:
    """A SensorNode field as the alert's node has it: the text itself when every node agrees, else one
    `{{ if eq $labels.node ... }}` per node (Prometheus knows no SensorNode)."""
    values = {n.name: getattr(n.spec, field) for n in nodes if getattr(n.spec, field)}
    if not values:
        return None
    if len(values) == len(nodes) and len(set(values.values())) == 1:
        return next(iter(values.values()))
    return "".join(f'{{{{ if eq $labels.node "{_quote(node)}" }}}}{value}{{{{ end }}}}' for node, value in values.items())


def _summary(
    template: str | None,
    rule: str,
    condition: str,
    level: str,
    threshold: float,
    direction: str,
    nodes: list[SensorNode],
    sensor: str | None,
) -> str:
    """The summary Plantwatch's engine writes for a firing alert (summary.render_or_default, the rule's
    template or the default of its condition type) as a Prometheus template: node, sensor, unit and
    value from the alert's labels and `$value`, the rest as the rule has it. How long the condition has
    held is not known to a Prometheus template: `{duration}` is empty."""
    facts = summaries.Facts(
        rule=rule,
        condition=condition,
        node="{{ $labels.node }}",
        sensor="{{ $labels.sensor }}" if sensor is None else sensor,
        state="firing",
        severity=level,
        value=_Expression("$value"),  # type: ignore[arg-type]  # formats like a float, into a template
        unit="{{ $labels.unit }}" if condition != "Absence" else "",
        threshold=threshold,
        direction=direction,
        equipment=_per_node(nodes, "equipment"),
        location=_per_node(nodes, "location"),
    )
    return summaries.render_or_default(template, facts)
