"""The operator's Prometheus metrics: what it reconciled, how it went, how long it took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "plantwatch_operator_reconciles_total", "Reconciliations, by what was reconciled and the result.", ["target", "result"]
)
RECONCILE_SECONDS = Histogram(
    "plantwatch_operator_reconcile_seconds",
    "Time to reconcile, by what was reconciled.",
    ["target"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

RENDERS_PENDING = Gauge(
    "plantwatch_operator_renders_pending", "Namespaces whose plant render is waiting or running (0: no plant work left)."
)
API_WRITES = Counter("plantwatch_operator_api_writes_total", "Writes the operator sent to the API server, by kind of write.", ["write"])


@contextmanager
def reconciling(target: str) -> Iterator[None]:
    """Count and time one reconciliation of `target` (`plant` or `detector`)."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        RECONCILES.labels(target, "error").inc()
        raise
    else:
        RECONCILES.labels(target, "ok").inc()
    finally:
        RECONCILE_SECONDS.labels(target).observe(time.perf_counter() - started)
