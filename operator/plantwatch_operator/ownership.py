"""Which operator install reconciles a namespace: a claim on it, so that two never do.

Two installs (the chart's operator and `plantwatch operator` run beside it, or two releases whose
watchNamespaces overlap) would both render a namespace and overwrite each other's objects without a
word. Each namespace an operator reconciles holds a coordination.k8s.io Lease `plantwatch-operator`
naming the install (`holderIdentity`: `PLANTWATCH_OPERATOR_IDENTITY`, the chart's release
namespace/name); its holder renews it while it runs. An operator finding a live lease held by another
install refuses the namespace (logs it, posts a Warning Event on the Lease, sets
`plantwatch_operator_namespace_refused`) and takes it over only once that lease has expired.
Replicas of one install share the identity, so kopf peering picks which of them is active and the
claim passes between them with no wait.

`decide` is the pure rule; `Claims` does the reads and writes (create and replace carry the
resourceVersion read, so of two installs racing for one namespace exactly one wins).
"""

from __future__ import annotations

import datetime
import getpass
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import Gauge

from plantwatch.kube import api_client
from plantwatch_operator.metrics import API_WRITES

log = logging.getLogger(__name__)

LEASE = "plantwatch-operator"
#: Seconds a claim lives without renewal (another install takes the namespace over after that).
DEFAULT_LEASE_SECONDS = 60

REFUSED = Gauge(
    "plantwatch_operator_namespace_refused",
    "1 while this operator refuses a namespace because another install holds its claim (Lease plantwatch-operator).",
    ["namespace", "holder"],
)


def identity_from_env() -> str:
    """The install's identity: `PLANTWATCH_OPERATOR_IDENTITY` (the chart and operator/deploy set their namespace/name),
    else user@host for an operator run by hand, so that it never shares a claim with an installed one."""
    return os.environ.get("PLANTWATCH_OPERATOR_IDENTITY") or f"{getpass.getuser()}@{socket.gethostname()}"


def lease_seconds_from_env() -> int:
    text = os.environ.get("PLANTWATCH_OWNERSHIP_LEASE_SECONDS", str(DEFAULT_LEASE_SECONDS))
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if seconds < 3:
        raise ValueError(
            f"PLANTWATCH_OWNERSHIP_LEASE_SECONDS={text!r}: expected whole seconds, at least 3 (default {DEFAULT_LEASE_SECONDS})"
        )
    return seconds


@dataclass(frozen=True)
class Lease:
    """What a Lease says: who holds it, when it was last renewed, for how long."""

    holder: str | None
    renewed: datetime.datetime | None
    seconds: int | None

    def expires(self) -> datetime.datetime | None:
        if self.renewed is None or self.seconds is None:
            return None
        return self.renewed + datetime.timedelta(seconds=self.seconds)


@dataclass(frozen=True)
class Decision:
    """`owned`: this install may reconcile the namespace. `write`: create or renew the lease now.
    `holder`, `retry`: when refused, who holds it and in how many seconds it would expire."""

    owned: bool
    write: bool
    holder: str | None = None
    retry: float = 0.0


def decide(lease: Lease | None, identity: str, now: datetime.datetime, seconds: int) -> Decision:
    """Ours when there is no lease, it is ours, nobody holds it or it has expired; renewed once a third of
    `seconds` has passed since its last renewal (so that a render does not write it every time)."""
    if lease is None or not lease.holder:
        return Decision(owned=True, write=True)
    expires = lease.expires()
    if lease.holder == identity:
        due = lease.renewed is None or now - lease.renewed >= datetime.timedelta(seconds=seconds / 3)
        return Decision(owned=True, write=due or lease.seconds != seconds)
    if expires is None or expires <= now:
        return Decision(owned=True, write=True)
    return Decision(owned=False, write=False, holder=lease.holder, retry=(expires - now).total_seconds())


def _lease(obj: client.V1Lease) -> Lease:
    spec = obj.spec
    return Lease(spec.holder_identity, spec.renew_time, spec.lease_duration_seconds)


class Claims:
    """This install's claims on namespaces: checked before each render, renewed in the background."""

    def __init__(self, identity: str, seconds: int) -> None:
        self.identity, self.seconds = identity, seconds
        self._held: set[str] = set()
        self._refused: dict[str, str] = {}  # namespace → the holder last announced
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def admit(self, namespace: str, announce: bool = True) -> float | None:
        """None: reconcile `namespace` (the claim taken or renewed); else the seconds until the other holder's
        claim would expire, when to ask again. A race lost to another install is a refusal for a third of the
        lease, after which the winner's lease is read. `announce`: say so (log, Event, metric) when refused; it
        needs kopf's context, which the renders' thread carries and the renewals' does not."""
        api = client.CoordinationV1Api(api_client())
        now = datetime.datetime.now(datetime.UTC)
        try:
            current = api.read_namespaced_lease(LEASE, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            current = None
        decision = decide(_lease(current) if current is not None else None, self.identity, now, self.seconds)
        if not decision.owned:
            with self._lock:
                self._held.discard(namespace)
            if announce:
                self._refuse(namespace, decision.holder or "", current)
            return decision.retry
        if decision.write and not self._write(api, namespace, current, now):
            return self.seconds / 3
        self._take(namespace)
        return None

    def _write(self, api: client.CoordinationV1Api, namespace: str, current: client.V1Lease | None, now: datetime.datetime) -> bool:
        """Create or renew the lease; False when another writer got there first (409)."""
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.seconds, "renewTime": _micro(now)}
        API_WRITES.labels("lease").inc()
        try:
            if current is None:
                meta = {"name": LEASE, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "plantwatch-operator"}}
                api.create_namespaced_lease(
                    namespace, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
                )
            else:
                if current.spec.holder_identity != self.identity:
                    spec["acquireTime"] = _micro(now)
                    spec["leaseTransitions"] = (current.spec.lease_transitions or 0) + 1
                body = {
                    "metadata": {"name": LEASE, "namespace": namespace, "resourceVersion": current.metadata.resource_version},
                    "spec": spec,
                }
                api.replace_namespaced_lease(LEASE, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _take(self, namespace: str) -> None:
        with self._lock:
            self._held.add(namespace)
            holder = self._refused.pop(namespace, None)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_forever, name="namespace-claims", daemon=True)
                self._renewer.start()
        if holder is not None:
            REFUSED.remove(namespace, holder)
            log.warning(
                "namespace %s: the claim of %s expired; reconciled by this operator (%s) from now on", namespace, holder, self.identity
            )

    def _refuse(self, namespace: str, holder: str, lease: client.V1Lease) -> None:
        """Say so once per holder, not at every retry."""
        with self._lock:
            before = self._refused.get(namespace)
            self._refused[namespace] = holder
        if before == holder:
            return
        if before is not None:
            REFUSED.remove(namespace, before)
        REFUSED.labels(namespace, holder).set(1)
        message = (
            f"namespace {namespace} is reconciled by operator {holder!r} (Lease {LEASE}); this operator ({self.identity!r}) "
            f"leaves it alone and takes it over only if that claim is not renewed for {lease.spec.lease_duration_seconds}s. "
            "Run one operator per namespace: turn one off (the chart's operator.enabled, or operator.watchNamespaces)"
        )
        log.error(message)
        API_WRITES.labels("event").inc()
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": namespace, "uid": lease.metadata.uid},
        }
        kopf.event(body, type="Warning", reason="NamespaceClaimed", message=message)

    def _renew_forever(self) -> None:
        """Renew every held claim a third of the lease apart, so that it lives exactly as long as this process does."""
        while True:
            threading.Event().wait(self.seconds / 3)
            with self._lock:
                held = sorted(self._held)
            for namespace in held:
                try:
                    if self.admit(namespace, announce=False) is not None:
                        log.error("namespace %s: the claim was lost to another operator; not reconciled by this one now", namespace)
                except Exception:  # noqa: BLE001  (one namespace's API error must not end the renewals of the others)
                    log.exception("renewing the claim on namespace %s failed; retrying in %ds", namespace, self.seconds // 3)


def _micro(at: datetime.datetime) -> str:
    """A MicroTime as the API server writes it."""
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
