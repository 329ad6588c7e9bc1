"""`plantwatch serve ingest`: the gateway process of the Kubernetes runtime.

The operator mounts the plant (SensorNodes and AlertRules as YAML) from a ConfigMap
and points the gateway at the plant's broker. Runs until SIGTERM, then drains.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Sequence

from plantwatch.alerts.router import AlertRouter
from plantwatch.health import HealthServer
from plantwatch.ingest.gateway import IngestService, Pipeline, load_gateway_plant
from plantwatch.ingest.node_status import NodeStatusReporter
from plantwatch.ingest.validate import Policy
from plantwatch.mqtt.client import Publisher
from plantwatch.plant.load import PlantError
from plantwatch.store.sqlite import SqliteStore


def serve(paths: list[str], broker_url: str, db: str, http_port: int, client_id: str = "plantwatch-gateway",
          policy: Policy = Policy(), status_namespace: str | None = None, sinks: Sequence[Any] = ()) -> int:
    """Run the gateway until SIGTERM; with `status_namespace`, report SensorNode Online there.

    `sinks` are further stores (InfluxDB) every batch goes to after the embedded store.
    """
    try:
        plant = load_gateway_plant(*paths)
    except PlantError as exc:
        print(f"plantwatch serve ingest: {exc}", file=sys.stderr)
        return 2
    store = SqliteStore(db)
    dlq = Publisher(broker_url, client_id="plantwatch-gateway-dlq")
    dlq.start(timeout=None)
    pipeline = Pipeline(plant, store, AlertRouter(plant), publish=dlq.publish, policy=policy, sinks=sinks)
    service = IngestService(pipeline, broker_url, client_id)
    health = HealthServer(http_port, healthy=lambda: service.alive, ready=lambda: service.ready, host="0.0.0.0")
    health.start()
    service.start(connect_timeout=None)  # not ready until the broker answers; the kubelet waits
    reporter = NodeStatusReporter(pipeline, status_namespace) if status_namespace else None
    if reporter:
        reporter.start()
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    while not stop.is_set() and service.alive:
        stop.wait(1.0)
    if reporter:
        reporter.stop()
    service.stop()
    service.pipeline.close_windows()
    for sink in sinks:
        sink.flush()
        sink.close()
    dlq.stop()
    health.stop()
    store.close()
    return 1 if service.error else 0
