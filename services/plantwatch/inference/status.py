"""The inference service's part of a DetectorModel's status, written by server-side apply.

Ownership (docs/kubernetes.md): each writer owns what it observes, under its own
field manager, and `conditions` is a list-map keyed by type. The inference
service is the only process that reads the model file, checks its sha256 and
loads it, so it owns `ModelValid` once it runs, with `activeProvider` (what
ONNX Runtime really uses after any fallback), `modelSha256` and `signature`;
field manager `plantwatch-inference`. It also owns `drift` and the `Drifted`
condition (`inference.drift`): served rows against the card's training distribution,
refreshed with every report (at least each heartbeat). The operator keeps `Available` and
`replicas` (it sees the Deployment, not the model).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from plantwatch.contracts.conditions import condition, find_condition
from plantwatch.contracts.names import API_VERSION, DETECTOR_MODEL, INFERENCE_MANAGER
from plantwatch.contracts.times import iso
from plantwatch.inference import drift
from plantwatch.inference.slot import ModelSlot, Verdict

log = logging.getLogger(__name__)
#: The operator's ModelValid reason for a DetectorModel whose source is missing (plantwatch_operator.verdicts.source_verdict).
SOURCE_NOT_FOUND = "SourceNotFound"


def model_valid_condition(verdict: Verdict, previous: dict[str, Any] | None, generation: int | None, now: str) -> dict[str, Any]:
    """ModelValid from the last load (pure); lastTransitionTime moves only when the status flips."""
    return condition("ModelValid", "True" if verdict.valid else "False", verdict.reason, verdict.message, previous, generation, now)


def drift_status(report: dict[str, Any], previous_conditions: list[dict] | None, generation: int | None, now: str) -> dict[str, Any]:
    """`status.drift` and the `Drifted` condition from a drift report (`inference.drift.judge`; pure)."""
    drifted = condition(
        "Drifted", report["status"], report["reason"], report["message"], find_condition(previous_conditions, "Drifted"), generation, now
    )
    fields = {k: report[k] for k in ("rows", "score", "features", "drifted")}
    return {"drift": {**fields, "window": drift.WINDOW_ROWS, "threshold": drift.DRIFTED}, "condition": drifted}


def served_status(slot: ModelSlot, previous_conditions: list[dict] | None, generation: int | None, now: str) -> dict[str, Any]:
    """The status fields this service owns, for the model the slot serves (pure but for reading the slot's drift window).

    `drift` and `Drifted` only for a model whose card carries its training distribution; `shadow` and
    `ShadowPromotable` only while a shadow model is loaded beside it (`inference.shadow`).
    """
    previous = find_condition(previous_conditions, "ModelValid")
    status: dict[str, Any] = {"conditions": [model_valid_condition(slot.verdict, previous, generation, now)]}
    monitor = slot.drift
    if slot.model is not None and monitor is not None:
        reported = drift_status(monitor.report(), previous_conditions, generation, now)
        status["drift"] = reported["drift"]
        status["conditions"].append(reported["condition"])
    shadow = slot.shadow
    if slot.model is not None and shadow is not None and shadow.model is not None:
        report = slot.shadow_window.report()
        status["shadow"] = {
            "modelSha256": shadow.model.sha256,
            **{k: v for k, v in report.items() if k not in ("status", "reason", "message")},
        }
        previous_promotable = find_condition(previous_conditions, "ShadowPromotable")
        status["conditions"].append(
            condition("ShadowPromotable", report["status"], report["reason"], report["message"], previous_promotable, generation, now)
        )
    model = slot.model
    if model is not None:  # a refused reload still serves (and reports) the previous model
        tensors = lambda ts: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]  # noqa: E731
        status.update(
            activeProvider=model.active_provider,
            modelSha256=model.sha256,
            signature={"inputs": tensors(model.inputs), "outputs": tensors(model.outputs)},
        )
    return status


def spec_sha256(detector: dict[str, Any]) -> str | None:
    """The sha256 the DetectorModel's spec names for its model (what the operator passes pods as --sha256)."""
    source = (detector.get("spec") or {}).get("source") or {}
    sha = (source.get("url") or {}).get("sha256") if "url" in source else source.get("sha256")
    return sha or None


def status_to_report(slot: ModelSlot, current: dict[str, Any], now: str) -> dict[str, Any] | None:
    """The status this service applies to `current` (the DetectorModel as read), or None when it must not report (pure).

    A pod started for another spec.source.sha256 than the DetectorModel's current one is
    outdated (an old pod during a rollout): its verdict on the swapped file, ChecksumMismatch
    against its old --sha256, is not the DetectorModel's, and under the same field manager it
    would overwrite the new pods' verdict and stamp the new generation on it.

    Nor does it overwrite the operator's SourceNotFound: a source that is gone (which a
    running pod, with its files still mounted, cannot see) is the operator's to report
    until its check passes again; the next report (the heartbeat) then takes ModelValid back.
    """
    if spec_sha256(current) != (slot.expected_sha256 or None):
        return None
    conditions = (current.get("status") or {}).get("conditions")
    previous = find_condition(conditions, "ModelValid")
    if previous is not None and previous.get("reason") == SOURCE_NOT_FOUND:
        return None
    return served_status(slot, conditions, current["metadata"].get("generation"), now)


class StatusReporter:
    """Applies `served_status` to the DetectorModel whenever the slot's verdict changes (and at start).

    A report the API server did not take is retried every `retry_s` until one is: the
    verdict may not change again for days, and a stale ModelValid is worse than none.
    The last report is also re-applied every `heartbeat_s` (a heartbeat): when the
    operator took ModelValid over meanwhile (a source that went missing and came back),
    the service's verdict returns without waiting for its file to change.
    """

    def __init__(self, namespace: str, retry_s: float = 10.0, heartbeat_s: float = 60.0):
        self.namespace = namespace
        #: 0 or less: no heartbeat (reports on verdict changes and retries only).
        self.heartbeat_s = heartbeat_s if heartbeat_s > 0 else math.inf
        self._lock = threading.Lock()
        self._unreported: ModelSlot | None = None
        self._last: ModelSlot | None = None
        self._reported_at = -math.inf
        self._stop = threading.Event()
        self._retry = threading.Thread(target=self._retry_loop, args=(retry_s,), name="status-retry", daemon=True)
        self._retry.start()

    def _retry_loop(self, retry_s: float) -> None:
        while not self._stop.wait(min(retry_s, self.heartbeat_s)):
            if self._unreported is not None:
                self.report(self._unreported)
            elif self._last is not None and time.monotonic() - self._reported_at >= self.heartbeat_s:
                self.report(self._last)

    def close(self) -> None:
        self._stop.set()

    def report(self, slot: ModelSlot) -> None:
        # Not at the top: the Kubernetes client takes ~0.4 s to import, which `serve inference` without
        # --status-namespace (and every unit test of the pure functions above) need not pay.
        from plantwatch.kube import apply_status, dynamic

        with self._lock:
            self._last = slot
            self._reported_at = time.monotonic()
            try:
                resource = dynamic().resources.get(api_version=API_VERSION, kind=DETECTOR_MODEL)
                # Through the status subresource: all the pod's Role allows (get, patch on its own detectormodels/status).
                current = dynamic().get(resource.status, name=slot.name, namespace=self.namespace).to_dict()
                status = status_to_report(slot, current, iso(int(time.time())))
                if status is None:
                    log.info(
                        "DetectorModel %s/%s: not reporting (spec.source.sha256 %s, this pod's %s; or the operator's "
                        "SourceNotFound stands)",
                        self.namespace,
                        slot.name,
                        spec_sha256(current),
                        slot.expected_sha256,
                    )
                else:
                    apply_status(current, status, INFERENCE_MANAGER)
                self._unreported = None
            except Exception:  # reporting must never stop serving; retried (see the class doc)
                self._unreported = slot
                log.exception("could not report DetectorModel %s/%s status", self.namespace, slot.name)
