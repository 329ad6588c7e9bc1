"""Prometheus metrics of the data plane (one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("plantwatch_messages_total", "MQTT messages processed, by result.", ["result"])
READINGS = Counter("plantwatch_readings_total", "Readings accepted and stored.")
CONFLICTS = Counter(
    "plantwatch_reading_conflicts_total", "Readings refused because their node, sensor and timestamp already had another value."
)
REJECTED = Counter("plantwatch_rejected_total", "Rejected values or messages, by reason code.", ["reason"])
ALERTS = Counter("plantwatch_alert_events_total", "Alert transitions, by rule, state and severity.", ["rule", "state", "severity"])
BATCH = Histogram("plantwatch_pipeline_batch_messages", "Messages per pipeline batch.", buckets=(1, 10, 100, 1000, 5000, 20000))
INFLIGHT = Gauge("plantwatch_pipeline_inflight_messages", "Messages received and not yet stored and acknowledged.")
NODE_ONLINE = Gauge("plantwatch_node_online", "1 while the node reports within its heartbeat, else 0.", ["node"])
STAGE = Histogram(
    "plantwatch_stage_seconds_per_message",
    "Mean time per message of a pipeline stage, observed per batch.",
    ["stage"],
    buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2),
)
STORE_WRITE = Histogram(
    "plantwatch_store_write_seconds",
    "Time to write one batch to the store (one transaction).",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)
BATCHES_RESTAGED = Counter(
    "plantwatch_store_batches_restaged_total",
    "Batches whose readings met a key already stored (a redelivery) and were inserted again, keeping only the new ones (PostgreSQL).",
)
SPOOL = Gauge("plantwatch_store_spool", "What waits in a store's disk spool (InfluxDB down), in batches and bytes.", ["unit"])
STATE_EVICTIONS = Counter(
    "plantwatch_state_evictions_total", "Entries dropped from a bounded per-key structure fed by the network, by structure.", ["structure"]
)
DEAD_LETTERS_EXPIRED = Counter(
    "plantwatch_dead_letters_expired_total", "Dead letters deleted from the embedded store after their retention period."
)
ROWS_EXPIRED = Counter(
    "plantwatch_store_rows_expired_total",
    "Readings and window summaries deleted from the store after their retention period, by table.",
    ["table"],
)
NOTIFICATIONS = Counter(
    "plantwatch_notifications_total",
    "Attempts to deliver a notification, by receiver and result (sent, failed, circuit_open: not tried, the breaker open).",
    ["receiver", "result"],
)
#: The series that PrometheusRules read (alerts/promrule.py): one per declared sensor of a node and per
#: DetectorModel score, never per message, so their number is the plant's, not the traffic's.
SENSOR_VALUE = Gauge(
    "plantwatch_sensor_value",
    "The last stored value of each series of the plant (a declared sensor, or a DetectorModel's anomaly_score).",
    ["node", "sensor", "type", "unit"],
)
SENSOR_LAST_SEEN = Gauge(
    "plantwatch_sensor_last_seen_timestamp_seconds",
    "The timestamp of each series' last stored reading (the reading's own time, epoch seconds).",
    ["node", "sensor"],
)
NODE_LAST_SEEN = Gauge(
    "plantwatch_node_last_seen_timestamp_seconds",
    "When each declared node was last heard from (its newest message, epoch seconds); absent until it first is.",
    ["node"],
)
#: Each pipeline adds its own alerts (shards split the nodes, not the rules), so it moves the gauge by
#: differences rather than setting it; a (rule, severity) seen once stays, at 0 when nothing fires.
ALERTS_FIRING = Gauge("plantwatch_alerts_firing", "Alerts firing now, by rule and severity (absences included).", ["rule", "severity"])
SCORES_SKIPPED = Counter(
    "plantwatch_anomaly_scores_skipped_total",
    "Feature rows not scored because the detector's model could not be reached, by detector.",
    ["detector"],
)
NODE_STATUS_WRITES = Counter(
    "plantwatch_node_status_writes_total", "SensorNode status writes by the gateway (at most --status-writes-per-second)."
)
NODE_STATUS_PENDING = Gauge(
    "plantwatch_node_status_pending", "SensorNodes whose status is due (changed, or due for refresh) and not yet written this round."
)
