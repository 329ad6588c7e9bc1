"""Run the operator: `plantwatch operator` (or `python -m plantwatch_operator`)."""

from __future__ import annotations

import kopf
from prometheus_client import start_http_server

from plantwatch_operator import handlers  # noqa: F401  (registers the handlers)


def run(
    namespaces: list[str] | None = None, liveness_port: int | None = None, peering: str | None = None, metrics_port: int | None = None
) -> None:
    """Watch the given namespaces (all when None). Without a peering name, run standalone (one replica)."""
    if metrics_port is not None:
        start_http_server(metrics_port)
    kopf.run(
        namespaces=namespaces or (),
        clusterwide=not namespaces,
        standalone=peering is None,
        peering_name=peering,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )
