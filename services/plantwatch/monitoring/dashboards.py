"""Plantwatch's Grafana dashboards as code, built with the Grafana Foundation SDK (Apache-2.0).

`dashboards()` returns each dashboard's JSON model by file name; tools/generate.py writes them to
charts/plantwatch/dashboards/, which the chart ships as ConfigMaps for Grafana's dashboard sidecar
(docs/monitoring.md, Dashboards). Every query reads the series docs/monitoring.md lists, selected by the
`namespace` label the chart's ServiceMonitors give (one plant per namespace), from the Prometheus the
`datasource` variable names. `panel_queries` lists what each panel asks Prometheus, for the test that
evaluates them against a real one.

A counter whose label values appear only with the first event (a rejection reason, a refusal) is
queried `... or on() vector(0)`: the panel draws 0 until the first event instead of "No data".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, heatmap, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The plant: each plant is a namespace, and the chart's ServiceMonitors label every series with it.
NS = 'namespace="$namespace"'
RATE = "$__rate_interval"
TAGS = ["plantwatch"]


def _query(expr: str, legend: str = "") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    return q.legend_format(legend) if legend else q


def _panel(builder: Any, title: str, description: str, queries: list[prometheus.Dataquery], unit: str = "", span: int = 12) -> Any:
    p = builder.title(title).description(description).datasource(DATASOURCE).span(span).height(8)
    for ref, q in zip("ABCDEFGH", queries):
        p = p.with_target(q.ref_id(ref))
    return p.unit(unit) if unit else p


def graph(title: str, description: str, *queries: prometheus.Dataquery, unit: str = "", span: int = 12, stacked: bool = False) -> Any:
    p = _panel(timeseries.Panel(), title, description, list(queries), unit, span)
    if stacked:
        p = p.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(30)
    return p


def number(title: str, description: str, *queries: prometheus.Dataquery, unit: str = "", span: int = 6) -> Any:
    return _panel(stat.Panel(), title, description, list(queries), unit, span).graph_mode(common.BigValueGraphMode.AREA)


def states(title: str, description: str, *queries: prometheus.Dataquery, span: int = 24) -> Any:
    return _panel(statetimeline.Panel(), title, description, list(queries), span=span)


def bars(title: str, description: str, *queries: prometheus.Dataquery, unit: str = "", span: int = 12) -> Any:
    return _panel(bargauge.Panel(), title, description, [q.instant() for q in queries], unit, span)


def listing(title: str, description: str, *queries: prometheus.Dataquery, unit: str = "", span: int = 12) -> Any:
    instant = [q.instant().format(PromQueryFormat.TABLE) for q in queries]
    return _panel(table.Panel(), title, description, instant, unit, span)


def _variables(with_node: bool) -> list[Any]:
    variables = [
        dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        dashboard.QueryVariable("namespace")
        .label("Plant (namespace)")
        .datasource(DATASOURCE)
        .query("label_values(plantwatch_node_online, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC),
    ]
    if with_node:
        variables.append(
            dashboard.QueryVariable("node")
            .label("Node")
            .datasource(DATASOURCE)
            .query(f"label_values(plantwatch_node_online{{{NS}}}, node)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
    return variables


def _dashboard(uid: str, title: str, description: str, panels: list[Any], with_node: bool = False) -> dict[str, Any]:
    d = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .variables(_variables(with_node))
    )
    for number, p in enumerate(panels, 1):  # ids, which Grafana's links and the test name panels by
        d = d.with_panel(p.id(number))
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def sensor_type(kind: str, what: str, unit: str) -> list[Any]:
    """The panels of one sensor type across the plant's nodes."""
    series = f'plantwatch_sensor_value{{{NS}, type="{kind}"}}'
    return [
        graph(f"{what} by node", f"The newest stored value of every `{kind}` sensor.", _query(series, "{{node}} {{sensor}}"), unit=unit),
        bars(
            f"{what} now",
            f"Each `{kind}` sensor's newest value, highest first.",
            _query(f"sort_desc({series})", "{{node}} {{sensor}}"),
            unit=unit,
        ),
    ]


def overview() -> dict[str, Any]:
    return _dashboard(
        "plantwatch-overview",
        "Plantwatch / Plant overview",
        "Is the plant reporting, and is Plantwatch keeping up: nodes, readings, alerts, dead letters.",
        [
            number("Nodes online", "Nodes reporting within their heartbeat.", _query(f"sum(plantwatch_node_online{{{NS}}})")),
            number("Nodes declared", "SensorNodes of the plant.", _query(f"count(plantwatch_node_online{{{NS}}})")),
            number("Alerts firing", "Plant alerts firing now, every rule and severity.", _query(f"sum(plantwatch_alerts_firing{{{NS}}})")),
            number(
                "Readings stored",
                "Readings accepted and stored per second.",
                _query(f"sum(rate(plantwatch_readings_total{{{NS}}}[{RATE}]))"),
                unit="reqps",
            ),
            graph(
                "Messages by result",
                "MQTT messages the gateway processed: accepted, partial (some values rejected), rejected (dead-lettered).",
                _query(f"sum by (result) (rate(plantwatch_messages_total{{{NS}}}[{RATE}]))", "{{result}}"),
                unit="reqps",
                stacked=True,
            ),
            graph(
                "Alerts firing by severity",
                "Plant alerts firing now.",
                _query(f"sum by (severity) (plantwatch_alerts_firing{{{NS}}})", "{{severity}}"),
                stacked=True,
            ),
            states("Nodes online", "1 while the node reports within its heartbeat.", _query(f"plantwatch_node_online{{{NS}}}", "{{node}}")),
            number("Gateway up", "Prometheus scrapes the gateway.", _query(f'up{{{NS}, job="gateway"}}'), span=8),
            number("Inference up", "Inference services Prometheus scrapes.", _query(f'sum(up{{{NS}, job="inference"}})'), span=8),
            number("Broker up", "The broker exporter is connected to the broker.", _query(f"max(plantwatch_broker_up{{{NS}}})"), span=8),
        ],
    )


def node_sensors() -> dict[str, Any]:
    node = f'{NS}, node="$node"'
    return _dashboard(
        "plantwatch-node",
        "Plantwatch / Node sensors",
        "One node (the `node` variable): each of its sensors' values, and when it was last heard from.",
        [
            states("Online", "1 while the node reports within its heartbeat.", _query(f"plantwatch_node_online{{{node}}}", "{{node}}")),
            number(
                "Last heard from",
                "Seconds since the node's newest message (its own timestamp).",
                _query(f"time() - plantwatch_node_last_seen_timestamp_seconds{{{node}}}"),
                unit="s",
                span=12,
            ),
            number(
                "Anomaly score",
                "Each DetectorModel's newest score of this node, where one scores it.",
                _query(f'max(plantwatch_sensor_value{{{node}, type="anomaly_score"}}) or on() vector(0)'),
                span=12,
            ),
            graph(
                "Sensors",
                "Every declared sensor of the node; the legend gives each one's unit.",
                _query(f'plantwatch_sensor_value{{{node}, type!="anomaly_score"}}', "{{sensor}} ({{unit}})"),
                span=24,
            ),
            listing(
                "Newest values",
                "Each sensor's newest stored value.",
                _query(f"plantwatch_sensor_value{{{node}}}"),
            ),
            listing(
                "Seconds since each sensor's newest reading",
                "A sensor that stays silent while its node reports is a broken sensor, not a broken node.",
                _query(f"time() - plantwatch_sensor_last_seen_timestamp_seconds{{{node}}}"),
                unit="s",
            ),
        ],
        with_node=True,
    )


def temperature() -> dict[str, Any]:
    series = f'plantwatch_sensor_value{{{NS}, type="temperature"}}'
    return _dashboard(
        "plantwatch-temperature",
        "Plantwatch / Temperature",
        "Every temperature sensor of the plant: how the temperatures spread over time, and each sensor's.",
        [
            _panel(
                heatmap.Panel(),
                "Temperature distribution",
                "How many temperature sensors read each temperature band over time (Grafana buckets the values).",
                [_query(series, "{{node}} {{sensor}}")],
                unit="celsius",
                span=24,
            ).calculate(True),
            *sensor_type("temperature", "Temperature", "celsius"),
        ],
    )


def vibration() -> dict[str, Any]:
    series = f'plantwatch_sensor_value{{{NS}, type="vibration"}}'
    return _dashboard(
        "plantwatch-vibration",
        "Plantwatch / Vibration",
        "Every vibration sensor of the plant: values and their peaks.",
        [
            *sensor_type("vibration", "Vibration", ""),
            graph(
                "Peak vibration",
                "The highest value of each vibration sensor in each interval, where short shocks show.",
                _query(f"max_over_time({series}[{RATE}])", "{{node}} {{sensor}}"),
                span=24,
            ),
        ],
    )


def current() -> dict[str, Any]:
    series = f'plantwatch_sensor_value{{{NS}, type="current"}}'
    return _dashboard(
        "plantwatch-current",
        "Plantwatch / Current and energy",
        "Every current sensor of the plant, and the charge drawn over the dashboard's time range.",
        [
            *sensor_type("current", "Current", "amp"),
            graph(
                "Total current",
                "The sum of the plant's current sensors.",
                _query(f"sum({series})", "total"),
                unit="amp",
            ),
            bars(
                "Charge drawn in the time range",
                "Mean current over the time range times its length, in ampere-hours (multiply by the supply voltage for energy).",
                _query(f"avg_over_time({series}[$__range]) * $__range_s / 3600", "{{node}} {{sensor}}"),
            ),
        ],
    )


def alerts() -> dict[str, Any]:
    return _dashboard(
        "plantwatch-alerts",
        "Plantwatch / Alerts",
        "The plant's AlertRules: what fires now, what changed, and the notifications sent.",
        [
            graph(
                "Firing by rule",
                "Alerts firing now per rule and severity.",
                _query(f"plantwatch_alerts_firing{{{NS}}}", "{{rule}} ({{severity}})"),
                span=24,
                stacked=True,
            ),
            listing(
                "Transitions in the time range",
                "How often each rule fired and resolved.",
                _query(f"sum by (rule, severity, state) (increase(plantwatch_alert_events_total{{{NS}}}[$__range]))"),
            ),
            graph(
                "Notifications",
                "Notification deliveries per receiver and result (sent, failed, circuit_open).",
                _query(
                    f"sum by (receiver, result) (rate(plantwatch_notifications_total{{{NS}}}[{RATE}])) or on() vector(0)",
                    "{{receiver}} {{result}}",
                ),
                unit="reqps",
            ),
        ],
    )


def dead_letters() -> dict[str, Any]:
    messages = f"plantwatch_messages_total{{{NS}}}"
    return _dashboard(
        "plantwatch-dead-letters",
        "Plantwatch / Dead letters",
        "What the gateway rejects and why; the dead letters themselves are on plantwatch/dead-letter/#.",
        [
            number(
                "Share rejected",
                "Messages rejected wholly or in part, of all processed (PlantwatchDeadLettersRising fires above 5%).",
                _query(f'sum(rate({messages[:-1]}, result!="accepted"}}[{RATE}])) / sum(rate({messages}[{RATE}]))'),
                unit="percentunit",
            ),
            number(
                "Dead letters expired",
                "Dead letters deleted from the embedded store after their retention, in the time range.",
                _query(f"sum(increase(plantwatch_dead_letters_expired_total{{{NS}}}[$__range]))"),
            ),
            number(
                "Readings refused as conflicts",
                "Readings whose node, sensor and timestamp already had another value, in the time range.",
                _query(f"sum(increase(plantwatch_reading_conflicts_total{{{NS}}}[$__range]))"),
                span=12,
            ),
            graph(
                "Rejections by reason",
                "Rejected values or messages per reason code.",
                _query(f"sum by (reason) (rate(plantwatch_rejected_total{{{NS}}}[{RATE}])) or on() vector(0)", "{{reason}}"),
                unit="reqps",
                stacked=True,
            ),
            graph(
                "Unreadable payloads at the broker",
                "Messages the broker exporter could not decode, per topic pattern and reason.",
                _query(
                    f"sum by (pattern, reason) (rate(plantwatch_broker_topic_payload_errors_total{{{NS}}}[{RATE}])) or on() vector(0)",
                    "{{pattern}} {{reason}}",
                ),
                unit="reqps",
            ),
        ],
    )


def broker() -> dict[str, Any]:
    def per_second(metric: str, legend: str) -> prometheus.Dataquery:
        return _query(f"sum(rate({metric}{{{NS}}}[{RATE}]))", legend)

    return _dashboard(
        "plantwatch-broker",
        "Plantwatch / Broker",
        "Mosquitto, from its $SYS topics and the plant's traffic per topic pattern (the broker exporter).",
        [
            number("Connected", "1 while the exporter is connected to the broker.", _query(f"max(plantwatch_broker_up{{{NS}}})")),
            number("Clients", "Clients connected now.", _query(f"sum(plantwatch_broker_clients_connected{{{NS}}})")),
            number("Subscriptions", "Subscriptions active.", _query(f"sum(plantwatch_broker_subscriptions{{{NS}}})")),
            number("Uptime", "Seconds since the broker started.", _query(f"max(plantwatch_broker_uptime_seconds{{{NS}}})"), unit="s"),
            graph(
                "PUBLISH messages",
                "PUBLISH messages received, sent and dropped (a client's queue or in-flight window full) per second.",
                per_second("plantwatch_broker_publish_messages_received_total", "received"),
                per_second("plantwatch_broker_publish_messages_sent_total", "sent"),
                per_second("plantwatch_broker_publish_messages_dropped_total", "dropped"),
                unit="reqps",
            ),
            graph(
                "Bytes",
                "Bytes received and sent per second.",
                per_second("plantwatch_broker_received_bytes_total", "received"),
                per_second("plantwatch_broker_sent_bytes_total", "sent"),
                unit="Bps",
            ),
            graph(
                "Stored messages",
                "Messages in the broker's store: retained, queued and in flight (PlantwatchBrokerSaturated above 1,000 and growing).",
                _query(f"sum(plantwatch_broker_stored_messages{{{NS}}})", "stored"),
                _query(f"sum(plantwatch_broker_retained_messages{{{NS}}})", "retained"),
            ),
            graph(
                "Messages by topic pattern",
                "Messages per second on each configured topic pattern.",
                _query(f"sum by (pattern) (rate(plantwatch_broker_topic_messages_total{{{NS}}}[{RATE}]))", "{{pattern}}"),
                unit="reqps",
            ),
            graph(
                "Latency by topic pattern",
                "Seconds from a payload's timestamp to its arrival at the broker exporter: median and 99th percentile.",
                *(
                    _query(
                        f"histogram_quantile({q}, sum by (pattern, le) "
                        f"(rate(plantwatch_broker_topic_latency_seconds_bucket{{{NS}}}[{RATE}])))",
                        f"{{{{pattern}}}} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ),
                unit="s",
                span=24,
            ),
        ],
    )


def pipeline() -> dict[str, Any]:
    def quantile(q: float, metric: str, by: str = "") -> str:
        return f"histogram_quantile({q}, sum by (le{by}) (rate({metric}_bucket{{{NS}}}[{RATE}])))"

    return _dashboard(
        "plantwatch-pipeline",
        "Plantwatch / Pipeline",
        "The gateway's work: batches, time per stage, store writes, what waits.",
        [
            graph(
                "Time per message by stage",
                "Mean time per message of each pipeline stage, 99th percentile over batches.",
                _query(quantile(0.99, "plantwatch_stage_seconds_per_message", ", stage"), "{{stage}}"),
                unit="s",
                span=24,
            ),
            graph(
                "Batch size",
                "Messages per pipeline batch: median and 99th percentile.",
                _query(quantile(0.5, "plantwatch_pipeline_batch_messages"), "p50"),
                _query(quantile(0.99, "plantwatch_pipeline_batch_messages"), "p99"),
            ),
            graph(
                "Store write time",
                "Time to write one batch to the store: median and 99th percentile.",
                _query(quantile(0.5, "plantwatch_store_write_seconds"), "p50"),
                _query(quantile(0.99, "plantwatch_store_write_seconds"), "p99"),
                unit="s",
            ),
            graph(
                "In flight",
                "Messages received and not yet stored and acknowledged.",
                _query(f"sum(plantwatch_pipeline_inflight_messages{{{NS}}})", "in flight"),
            ),
            graph(
                "Readings stored",
                "Readings stored per second.",
                _query(f"sum(rate(plantwatch_readings_total{{{NS}}}[{RATE}]))", "readings"),
                unit="reqps",
            ),
            graph(
                "InfluxDB spool",
                "Bytes waiting in the InfluxDB store's disk spool while InfluxDB is down (0 with the embedded store).",
                _query(f'sum(plantwatch_store_spool{{{NS}, unit="bytes"}}) or on() vector(0)', "bytes"),
                unit="bytes",
            ),
            graph(
                "Evictions",
                "Entries dropped from a bounded per-key structure fed by the network, per structure.",
                _query(f"sum by (structure) (rate(plantwatch_state_evictions_total{{{NS}}}[{RATE}])) or on() vector(0)", "{{structure}}"),
                unit="reqps",
            ),
        ],
    )


def inference() -> dict[str, Any]:
    seconds = "plantwatch_inference_seconds_bucket"
    return _dashboard(
        "plantwatch-inference",
        "Plantwatch / Inference",
        "The DetectorModels' inference services: requests, latency, refusals, and the scores they give.",
        [
            number("Services up", "Inference services Prometheus scrapes.", _query(f'sum(up{{{NS}, job="inference"}})'), span=12),
            number(
                "Feature rows not scored",
                "Rows the gateway could not score, its detector's model unreachable, in the time range (PlantwatchInferenceUnavailable).",
                _query(f"sum(increase(plantwatch_anomaly_scores_skipped_total{{{NS}}}[$__range])) or on() vector(0)"),
                span=12,
            ),
            graph(
                "Requests by model and result",
                "Inference requests per second.",
                _query(f"sum by (model, result) (rate(plantwatch_inference_requests_total{{{NS}}}[{RATE}]))", "{{model}} {{result}}"),
                unit="reqps",
            ),
            graph(
                "Latency",
                "Time to run one request, per model: median and 99th percentile (PlantwatchInferenceLatencyHigh above 250 ms).",
                *(
                    _query(
                        f"histogram_quantile({q}, sum by (model, le) (rate({seconds}{{{NS}}}[{RATE}])))", f"{{{{model}}}} p{round(q * 100)}"
                    )
                    for q in (0.5, 0.99)
                ),
                unit="s",
            ),
            graph(
                "Refused",
                "Requests and connections refused before reaching a model (limits, overload), per reason.",
                _query(f"sum by (reason) (rate(plantwatch_inference_refused_total{{{NS}}}[{RATE}])) or on() vector(0)", "{{reason}}"),
                unit="reqps",
            ),
            graph(
                "Anomaly scores",
                "Each DetectorModel's newest score per node.",
                _query(f'plantwatch_sensor_value{{{NS}, type="anomaly_score"}}', "{{node}} {{sensor}}"),
            ),
        ],
    )


#: File name (under charts/plantwatch/dashboards/) -> builder, in the order the docs list them.
BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview.json": overview,
    "node-sensors.json": node_sensors,
    "temperature.json": temperature,
    "vibration.json": vibration,
    "current.json": current,
    "alerts.json": alerts,
    "dead-letters.json": dead_letters,
    "broker.json": broker,
    "pipeline.json": pipeline,
    "inference.json": inference,
}


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model, by file name."""
    return {name: build() for name, build in BUILDERS.items()}


def render(model: dict[str, Any]) -> str:
    """A dashboard's JSON as checked in (and as Grafana imports it)."""
    return json.dumps(model, indent=2) + "\n"


def panel_queries(model: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel, rows' panels included."""
    for panel in model.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner, target
