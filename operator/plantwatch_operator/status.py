"""The status the operator writes on each kind (pure): its conditions and printer-column fields, what
it leaves to the data plane (read from managedFields), and nothing at all when nothing changed.

Each function takes the object as read and returns a `StatusUpdate` (the part of the status the
operator applies, and the Events that tell a user what changed) or None; the handlers apply it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plantwatch.contracts.conditions import set_condition
from plantwatch.contracts.names import INFERENCE_MANAGER
from plantwatch_operator.verdicts import SourceVerdict, Verdict


@dataclass(frozen=True)
class Announcement:
    """An Event on the object: `kubectl describe` shows it."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StatusUpdate:
    """The operator's part of an object's status, to server-side apply, and the Events that say what changed."""

    status: dict[str, Any]
    events: tuple[Announcement, ...]


def announcements(before: list[dict[str, Any]] | None, after: list[dict[str, Any]], types: tuple[str, ...]) -> tuple[Announcement, ...]:
    """An Event for each named condition whose status, reason or message changed (a new gateway
    config, a rule refused, a model gone): what `kubectl describe` should tell a user."""
    old = {c["type"]: c for c in before or []}
    return tuple(
        Announcement("Normal" if c["status"] == "True" else "Warning", c["reason"], f"{c['type']}={c['status']}: {c['message']}")
        for c in after
        if c["type"] in types and any(old.get(c["type"], {}).get(k) != c[k] for k in ("status", "reason", "message"))
    )


def condition_update(
    body: dict[str, Any],
    type_: str,
    verdict: Verdict,
    now: str,
    also: tuple[str, ...] = (),
    more: tuple[tuple[str, Verdict], ...] = (),
    **fields: Any,
) -> StatusUpdate | None:
    """The operator's condition `type_` (the conditions in `also` as the body has them, further
    conditions of its own in `more`, and extra status fields), or None when the status already says so.

    Server-side apply on the status: the operator owns only the conditions it names, so
    conditions other writers own (the gateway's Online) are left as they are.
    """
    generation = body["metadata"].get("generation")
    old = body.get("status", {})
    conditions = old.get("conditions")
    for t, v in ((type_, verdict), *more):
        conditions = set_condition(conditions, t, v.status, v.reason, v.message, generation, now)
    new = {"observedGeneration": generation, "conditions": conditions, **fields}
    if all(old.get(k) == v for k, v in new.items()):
        return None
    announced = (type_, *(t for t, _ in more))
    owned = [c for c in conditions if c["type"] in (*announced, *also)]
    return StatusUpdate({**new, "conditions": owned}, announcements(old.get("conditions"), conditions, announced))


def node_status(body: dict[str, Any], parsed: Any, where: str, now: str, digest: str | None = None) -> StatusUpdate | None:
    """A SensorNode's `Ready`: rendered into the gateway config `where`, or why not (`parsed` is then
    the validation message); `Online` is Unknown until the gateway's first report.

    The message names the config, not its digest: a digest there would rewrite every node's status
    (and post an Event on each) whenever any object of the plant changed. A node whose spec changed
    gets an Event naming the config `digest` that carries its new generation."""
    if isinstance(parsed, str):
        return condition_update(body, "Ready", Verdict("False", "InvalidSpec", parsed), now)
    # `Online` belongs to the gateway (field manager plantwatch-gateway); the operator only
    # says Unknown until the gateway's first report takes the condition over.
    online = next((c for c in body.get("status", {}).get("conditions", []) if c.get("type") == "Online"), None)
    also = ("Online",) if online is None or online.get("reason") == "NoData" else ()
    if also:
        conditions = set_condition(
            body.get("status", {}).get("conditions"),
            "Online",
            "Unknown",
            "NoData",
            "no data-plane report yet",
            body["metadata"].get("generation"),
            now,
        )
        body = {**body, "status": {**body.get("status", {}), "conditions": conditions}}
    update = condition_update(body, "Ready", Verdict("True", "Rendered", f"in the gateway config {where}"), now, also=also)
    generation, seen = body["metadata"].get("generation"), body.get("status", {}).get("observedGeneration")
    if update is not None and digest and seen is not None and seen != generation:
        rendered = Announcement("Normal", "Rendered", f"generation {generation} is in the gateway config {digest}")
        update = StatusUpdate(update.status, (*update.events, rendered))
    return update


def rule_status(body: dict[str, Any], verdict: Verdict, matched: int, now: str, prometheus: Verdict) -> StatusUpdate | None:
    """An AlertRule's `Accepted`, its `PrometheusRule` (rendered for Prometheus or why not) and its
    `matchedSeries` printer column."""
    return condition_update(body, "Accepted", verdict, now, more=(("PrometheusRule", prometheus),), matchedSeries=matched)


def receiver_status(body: dict[str, Any], verdict: Verdict, now: str) -> StatusUpdate | None:
    """An AlertReceiver's `Accepted`: valid and its Secrets hold the keys it names, or why not."""
    return condition_update(body, "Accepted", verdict, now)


def owns_condition(body: dict[str, Any], manager: str, type_: str) -> bool:
    """Whether `manager` wrote the current reason of status condition `type_` (from the object's managedFields).

    The reason, not the list entry: every manager that ever applied the entry keeps
    co-owning its `type`, while a forced apply of another reason takes `reason` away.
    """
    key = f'k:{{"type":"{type_}"}}'
    for entry in body["metadata"].get("managedFields") or ():
        fields = ((entry.get("fieldsV1") or {}).get("f:status") or {}).get("f:conditions") or {}
        if entry.get("manager") == manager and "f:reason" in (fields.get(key) or {}):
            return True
    return False


def detector_status(
    body: dict[str, Any],
    source: SourceVerdict,
    scoring: Verdict,
    deployment: dict[str, Any],
    now: str,
    retrain: dict[str, Any] | None = None,
    capped: tuple[int, str] | None = None,
) -> StatusUpdate | None:
    """A DetectorModel's `ModelValid` (from its source's verdict), `Scoring` (the nodes it scores),
    `Available` and `replicas` (from its serving Deployment, `{}` when there is none yet; never
    Available while it scores no node, whose pods would serve nothing), `activeProvider`/`modelSha256`,
    and `retrain` (retrain.retrain_status; None drops it, as spec.retrain went). `capped`: the most replicas
    its HPA asks for where that is below spec.autoscaling's, and why (render.gpu_bound): minReplicas no more
    than that, and the reason said in Available's message."""
    spec, generation = body["spec"], body["metadata"].get("generation")
    status = deployment.get("status") or {}
    ready = status.get("ready_replicas") or status.get("readyReplicas") or 0
    wanted = spec.get("autoscaling", {}).get("minReplicas", 1)
    if capped is not None:
        wanted = min(wanted, capped[0])
    old = body.get("status", {})
    # Once an inference pod has loaded the model it owns ModelValid, activeProvider and
    # modelSha256 (plantwatch.inference.status): only it sees the file it serves, the
    # provider it really got, and a model that is not ONNX. The operator still says so
    # when the source itself is missing or wrong, which no pod can report.
    service_owns = source.status == "True" and owns_condition(body, INFERENCE_MANAGER, "ModelValid")
    owned = ("Available", "Scoring") if service_owns else ("Available", "Scoring", "ModelValid")
    conditions = old.get("conditions")
    if not service_owns:
        conditions = set_condition(conditions, "ModelValid", source.status, source.reason, source.message, generation, now)
    conditions = set_condition(conditions, "Scoring", scoring.status, scoring.reason, scoring.message, generation, now)
    pods = f"{ready}/{wanted} inference pods ready" + (f"; {capped[1]}" if capped else "")
    if scoring.status != "True":
        available = Verdict("False", "NothingToScore", f"the model scores no SensorNode (see Scoring); {pods}")
    elif ready >= wanted:
        available = Verdict("True", "MinimumReplicasReady", pods)
    else:
        available = Verdict("False", "ReplicasNotReady", pods)
    conditions = set_condition(conditions, "Available", *available, generation, now)
    new = {"observedGeneration": generation, "conditions": [c for c in conditions if c["type"] in owned], "replicas": ready}
    if not service_owns:
        new["activeProvider"] = spec.get("executionProvider", "cpu")
        if source.sha256:
            new["modelSha256"] = source.sha256
    if retrain is not None:
        new["retrain"] = retrain
    current = {**old, "conditions": [c for c in old.get("conditions") or [] if c.get("type") in owned]}
    if all(current.get(k) == v for k, v in new.items()) and (retrain is not None or "retrain" not in old):
        return None
    return StatusUpdate(new, announcements(old.get("conditions"), conditions, ("ModelValid", "Scoring")))
