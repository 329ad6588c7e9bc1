"""`plantwatch serve ingest`: the gateway process of the Kubernetes runtime.

The operator mounts the plant (SensorNodes and AlertRules as YAML) from a ConfigMap
and points the gateway at the plant's broker. Runs until SIGTERM, then drains.
"""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plantwatch.alerts.api import PREFIX as API_PREFIX
from plantwatch.alerts.api import TokenRef
from plantwatch.alerts.api import from_secret as alerts_api
from plantwatch.alerts.notifier import Notifier
from plantwatch.alerts.receivers import build as build_receiver
from plantwatch.alerts.receivers import build_or_defer
from plantwatch.health import HealthServer
from plantwatch.inference.plant_scorers import remote_scorers
from plantwatch.ingest.alert_status import AlertStatusReporter
from plantwatch.ingest.dead_letters import DEAD_LETTER_QUEUE
from plantwatch.ingest.membership import MemberIngest, Registry
from plantwatch.ingest.node_status import NodeStatusReporter
from plantwatch.ingest.pipeline import Pipeline, Scorer, load_gateway_plant
from plantwatch.ingest.quality import Thresholds
from plantwatch.ingest.runner import IngestService
from plantwatch.ingest.scaleout import DEFAULT_LEASE_S, LockedSink, ShardedIngest
from plantwatch.ingest.shards import owned_shards
from plantwatch.ingest.validate import Policy
from plantwatch.ingest.writes import Sink, Store
from plantwatch.mqtt.endpoint import Endpoint
from plantwatch.mqtt.publisher import Publisher
from plantwatch.plant.load import Plant, PlantError
from plantwatch.secrets import SecretMissing, Secrets
from plantwatch.store import postgres
from plantwatch.store.alert_state import AlertState
from plantwatch.store.retention import Retention, Sweeper

#: PostgreSQL connections a sharded gateway commits its shards' batches on at once (each one server process).
SHARD_CONNECTIONS = 2


@dataclass(frozen=True)
class Scale:
    """This replica's place in a scaled-out gateway (docs/scale-out.md)."""

    shards: int
    index: int
    replicas: int
    #: How long a shard's owner may be silent before this replica takes an assigned shard back
    #: (with membership, also how long a member may be silent before the others divide its shards).
    lease_s: float = DEFAULT_LEASE_S
    #: "fixed": shards by (index, replicas); "store": divided among the live members registered
    #: in the shared store (ingest/membership.py), whatever scales the replicas.
    membership: str = "fixed"


def serve(
    paths: list[str],
    broker_url: str | Endpoint,
    db: str,
    http_port: int,
    client_id: str = "plantwatch-gateway",
    policy: Policy = Policy(),
    status_namespace: str | None = None,
    sinks: Sequence[Sink] = (),
    scale: Scale | None = None,
    score_url: str | None = None,
    retention: Retention = Retention(),
    secrets_dir: str | None = None,
    api_token: TokenRef | None = None,
    api_open_reads: bool = False,
    quality: Thresholds | None = None,
    status_writes_per_s: float = 20.0,
) -> int:
    """Run the gateway until SIGTERM; with `status_namespace`, report SensorNode Online there, and
    AlertRule firingCount/lastFired and an Event on the SensorNode per alert firing or resolving.
    `secrets_dir` holds the AlertReceivers' Secrets (plantwatch.secrets.MOUNT_DIR in a pod), and the
    alerts API's token (`api_token`; without it the API refuses changes; alerts/api.py).

    With `score_url` (e.g. http://plantwatch-detector-{name}:8080), every DetectorModel is
    scored through its inference service and its scores are readings (inference/stream.py).

    `sinks` are further stores (InfluxDB) every batch goes to after the embedded store.
    With `scale`, consume only this replica's shards, one MQTT session `<client_id>-shard-<k>` each;
    with `scale.membership == "store"` (a PostgreSQL `db`), the shards the live members give it.
    """
    try:
        plant = load_gateway_plant(*paths)
    except PlantError as exc:
        print(f"plantwatch serve ingest: {exc}", file=sys.stderr)
        return 2
    try:
        # A PostgreSQL URL: the cluster's shared store of record, its shards' batches committed side by side.
        store = postgres.open_store(db, connections=SHARD_CONNECTIONS if scale else 1)
        alert_state = AlertState(db)
    except ValueError as exc:
        print(f"plantwatch serve ingest: {exc}", file=sys.stderr)
        return 2
    try:
        secrets = Secrets(plant.others, mount_dir=secrets_dir)
        receivers = {"console": build_receiver(None, "console", secrets, broker_url)}
        # A receiver whose Secret is not mounted yet waits for it (its AlertReceiver says SecretNotFound).
        receivers.update({r.name: build_or_defer(r, secrets, broker_url) for r in plant.receivers})
    except (SecretMissing, ValueError) as exc:
        print(f"plantwatch serve ingest: the plant's receivers: {exc}", file=sys.stderr)
        return 2
    # The token's Secret is an optional volume: until the kubelet has mounted it the API answers 503
    # and ingestion goes on, rather than the gateway crash-looping over its API.
    api = alerts_api(alert_state, secrets, api_token, api_open_reads, wait=True)
    # One notifier acts per store (a lease in it, under a name of this process's own): the replicas
    # sharing a store take over from each other once the holder stops renewing (LEASE_S).
    owner = f"{client_id}-{uuid.uuid4().hex[:8]}"
    notifier = Notifier(plant, alert_state, receivers, owner=owner, plant_name=status_namespace or "default")
    # Replicas must not share a client id (the broker would keep disconnecting one for the
    # other), not even two generations of one replica during a rescale.
    dlq = Publisher(broker_url, client_id=f"{client_id}-dlq" + (f"-{uuid.uuid4().hex[:8]}" if scale else ""), max_queued=DEAD_LETTER_QUEUE)
    dlq.start(timeout=None)
    if scale:
        shared = [LockedSink(s) for s in sinks]
        sweeper = Sweeper(store, retention)  # one for all the shards: they share the store

        def shard_pipeline(subset: Plant, shard_store: Store) -> Pipeline:
            return Pipeline(
                subset,
                shard_store,
                publish=dlq.publish,
                policy=policy,
                sinks=shared,
                scorers=_scorers(subset, score_url),
                on_alerts=notifier.wake,
                sweeper=sweeper,
            )

        if scale.membership == "store":
            service: Any = MemberIngest(
                Registry(db),
                plant,
                store,
                broker_url,
                scale.shards,
                client_id,
                owner,
                shard_pipeline,
                dead_letter_unknown=policy.unknown_node == "reject",
                lease_s=scale.lease_s,
            )
        else:
            service = ShardedIngest(
                plant,
                store,
                broker_url,
                scale.shards,
                owned_shards(scale.index, scale.shards, scale.replicas),
                client_id,
                f"{client_id}-{scale.index}-of-{scale.replicas}",
                shard_pipeline,
                dead_letter_unknown=policy.unknown_node == "reject",
                lease_s=scale.lease_s,
            )
        view: Any = service
    else:
        view = Pipeline(
            plant,
            store,
            publish=dlq.publish,
            policy=policy,
            sinks=sinks,
            scorers=_scorers(plant, score_url),
            retention=retention,
            on_alerts=notifier.wake,
        )
        service = IngestService(view, broker_url, client_id)
    health = HealthServer(http_port, healthy=lambda: service.alive, ready=lambda: service.ready, host="0.0.0.0", routes={API_PREFIX: api})
    health.start()
    notifier.start()
    service.start(connect_timeout=None)  # not ready until the broker answers; the kubelet waits
    reporters = (
        [
            NodeStatusReporter(view, status_namespace, thresholds=quality, writes_per_s=status_writes_per_s),
            AlertStatusReporter(store, status_namespace, plant),
        ]
        if status_namespace
        else []
    )
    for reporter in reporters:
        reporter.start()
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    while not stop.is_set() and service.alive:
        stop.wait(1.0)
    for reporter in reporters:
        reporter.stop()
    service.stop()
    view.close_windows()
    notifier.stop()
    alert_state.close()
    for sink in sinks:
        sink.flush()
        sink.close()
    dlq.stop()
    health.stop()
    store.close()
    return 1 if service.error else 0


def _scorers(plant: Plant, score_url: str | None) -> list[Scorer]:
    """The plant's DetectorModels scored through their inference services; each one that cannot be is said once."""
    if not score_url:
        return []
    # Inference services starting alongside get 20 s: the health server is not up yet, and the
    # kubelet's liveness probe gives up after 30.
    scorers, problems = remote_scorers(plant, score_url, wait_s=20.0)
    for problem in problems:
        print(f"plantwatch serve ingest: {problem.reason}: {problem}", file=sys.stderr)
    return scorers
