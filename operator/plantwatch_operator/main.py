"""Run the operator: `plantwatch operator` (or `python -m plantwatch_operator`)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plantwatch.contracts.names import GROUP, VERSION
from plantwatch.kube import api_client
from plantwatch_operator import handlers, ownership  # handlers: registers the handlers
from plantwatch_operator.config import Config
from plantwatch_operator.talk import startup_line

#: Seconds a replica's peering record lives unrenewed: how long a standby waits after the active one died.
DEFAULT_PEERING_LIFETIME = 60
#: The namespaces `run` was given (empty: all), where a namespaced operator's KopfPeering objects live.
_watched: list[str] = []


def run(
    namespaces: list[str] | None = None,
    liveness_port: int | None = None,
    peering: str | None = None,
    metrics_port: int | None = None,
    log_level: str | None = None,
) -> None:
    """Watch the given namespaces (all when None). Without a peering name, run standalone (one replica).

    With one, replicas of this install take part in kopf peering (a KopfPeering of that name in each
    watched namespace, or a ClusterKopfPeering when watching all): the oldest live replica is active,
    the others pause until its record is `PLANTWATCH_PEERING_LIFETIME` seconds stale.

    Without a `log_level` chosen, the operator's own lines are logged from INFO (what it wrote, once per
    change) while kopf's stay at the process's WARNING: kopf at INFO says something for every event."""
    _watched[:] = namespaces or []
    if log_level is None:
        logging.getLogger("plantwatch_operator").setLevel(logging.INFO)
    logging.getLogger(__name__).info(
        startup_line(
            importlib.metadata.version("plantwatch"),
            _watched,
            peering,
            os.environ.get("PLANTWATCH_PEERING_LIFETIME", str(DEFAULT_PEERING_LIFETIME)),
            metrics_port,
            liveness_port,
            ownership.identity_from_env(),
            ownership.lease_seconds_from_env(),
            settings(handlers.CONFIG),
        )
    )
    if metrics_port is not None:
        serve_metrics_and_readiness(metrics_port)
    wait_for_crds(_watched[0] if _watched else None)
    kopf.run(
        namespaces=namespaces or (),
        clusterwide=not namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=peering_priority(time.time_ns()),
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )


#: The custom resources the operator watches, by plural.
PLURALS = ("sensornodes", "alertrules", "detectormodels", "alertreceivers")


def wait_for_crds(namespace: str | None, timeout: float = 60.0, pause: float = 0.5) -> bool:
    """Wait until the API server serves every plant kind; whether it does.

    Right after `kubectl apply` of the CRDs, the API server answers 404 (not yet established) or 429
    ("storage is (re)initializing") for a moment; kopf would log each retry as an ERROR, which reads as
    a failure to whoever just started the operator. One INFO line instead, and the wait. Anything else
    (a 403, say) is kopf's to report: the wait ends at once."""
    api = client.CustomObjectsApi(api_client())
    log = logging.getLogger(__name__)
    deadline, said = time.monotonic() + timeout, False
    for plural in PLURALS:
        while True:
            try:
                if namespace:
                    api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, limit=1)
                else:
                    api.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
                break
            except ApiException as exc:
                if exc.status not in (404, 429) or time.monotonic() > deadline:
                    return False
                if not said:
                    log.info("waiting for the API server to serve %s.%s (%s %s)", plural, GROUP, exc.status, exc.reason)
                    said = True
                time.sleep(pause)
    return True


def settings(config: Config) -> dict[str, object]:
    """The settings that shape what the operator renders and how fast it writes, for the start-up line."""
    scaling = config.gateway_autoscaling
    store = (
        f"PostgreSQL, {scaling.min_replicas}-{scaling.max_replicas} replicas at {scaling.target_messages_per_second} messages/s each"
        if config.gateway_db_url
        else f"SQLite on a {config.gateway_data_size} claim, 1 replica"
    )
    return {
        "image": config.image,
        "broker": config.broker_url,
        "gateway store": store,
        "retention": ", ".join(
            f"{what} {'kept' if days is None else f'{days:g} d'}"
            for what, days in zip(("readings", "summaries", "dead letters"), config.gateway_retention_days)
        ),
        "status writes at most": f"{config.status_writes_per_second:g}/s",
        "rechecks every": (
            f"{config.credentials_check_interval:g}s (credentials), {config.receiver_check_interval:g}s (receivers), "
            f"{config.detector_check_interval:g}s (detectors)"
        ),
    }


def peering_priority(started_ns: int) -> int:
    """Older replicas rank higher: kopf pauses every peer that sees a higher priority, and every peer of equal
    priority (so two replicas of one Deployment may never share one). The active replica then stays active
    through a rollout; a new one waits as a standby until the old one leaves. Microseconds make a tie as
    unlikely as two pods starting in the same microsecond."""
    return -(started_ns // 1000)


@kopf.on.startup()
def peering_lifetime(settings: kopf.OperatorSettings, **_: object) -> None:
    text = os.environ.get("PLANTWATCH_PEERING_LIFETIME", str(DEFAULT_PEERING_LIFETIME))
    if not text.isdigit() or int(text) < 5:
        raise ValueError(f"PLANTWATCH_PEERING_LIFETIME={text!r}: expected whole seconds, at least 5 (default {DEFAULT_PEERING_LIFETIME})")
    settings.peering.lifetime = int(text)
    settings.peering.stealth = True  # a keep-alive every few seconds is not worth a log line
    if not settings.peering.standalone:
        _create_peering(settings.peering.name, settings.peering.clusterwide)


def _create_peering(name: str, clusterwide: bool) -> None:
    """The peering object, unless it exists: without it, kopf's replicas never see each other and all of
    them reconcile (kopf only logs that its keep-alive found nothing)."""
    api = client.CustomObjectsApi(api_client())
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
    try:
        if clusterwide:
            api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", {**body, "kind": "ClusterKopfPeering"})
        for namespace in _watched if not clusterwide else []:
            try:
                api.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", {**body, "kind": "KopfPeering"})
            except ApiException as exc:
                if exc.status != 409:
                    raise
    except ApiException as exc:
        if exc.status != 409:
            raise


class _Readiness:
    """Ready while the API server answers (checked at most every 5 s). A standby replica is Ready too: it is
    connected and takes over on its own; readiness only says whether this pod can reach the cluster."""

    def __init__(self) -> None:
        self._at, self._ok, self._lock = -1e9, False, threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if time.monotonic() - self._at >= 5:
                try:
                    client.VersionApi(api_client()).get_code(_request_timeout=3)
                    self._ok = True
                except Exception:  # noqa: BLE001  (any failure to reach the API server means not ready)
                    self._ok = False
                self._at = time.monotonic()
            return self._ok


def serve_metrics_and_readiness(port: int) -> ThreadingHTTPServer:
    """Prometheus /metrics and /readyz (200 or 503) on `port`, on a daemon thread."""
    ready = _Readiness()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            if self.path == "/readyz":
                ok = ready()
                code, body, kind = (200 if ok else 503), (b"ok\n" if ok else b"the API server does not answer\n"), "text/plain"
            elif self.path.split("?")[0] == "/metrics":
                code, body, kind = 200, generate_latest(), CONTENT_TYPE_LATEST
            else:
                code, body, kind = 404, b"/metrics or /readyz\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:  # probes every few seconds are not worth a log line
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104  (probed and scraped from outside the pod)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
