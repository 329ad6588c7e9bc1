"""The namespace claim's rule (ownership.decide) and its hook in the renders (Coalescer's admit): an install
reconciles a namespace only while no other install's claim on it is live."""

from __future__ import annotations

import datetime
import time

import pytest

from plantwatch_operator.coalesce import Coalescer
from plantwatch_operator.ownership import Lease, decide, lease_seconds_from_env

NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC)
ME, OTHER = "plantwatch/plantwatch-operator", "plant-b/plant-b-operator"


def ago(seconds: float) -> datetime.datetime:
    return NOW - datetime.timedelta(seconds=seconds)


def test_an_unclaimed_namespace_is_taken():
    assert decide(None, ME, NOW, 60) == decide(Lease(None, None, None), ME, NOW, 60)
    decision = decide(None, ME, NOW, 60)
    assert decision.owned and decision.write


def test_a_live_claim_of_another_install_is_refused_until_it_expires():
    decision = decide(Lease(OTHER, ago(45), 60), ME, NOW, 60)
    assert not decision.owned and not decision.write
    assert decision.holder == OTHER and decision.retry == pytest.approx(15)


def test_an_expired_claim_of_another_install_is_taken_over():
    for renewed in (ago(60), ago(3600)):
        decision = decide(Lease(OTHER, renewed, 60), ME, NOW, 60)
        assert decision.owned and decision.write


def test_the_other_installs_lease_length_counts_not_ours():
    """A holder with a longer lease is still live after our own lease length has passed."""
    assert not decide(Lease(OTHER, ago(90), 120), ME, NOW, 60).owned
    assert decide(Lease(OTHER, ago(20), 15), ME, NOW, 60).owned


def test_our_own_claim_is_renewed_only_once_a_third_has_passed():
    """A render of a namespace we hold writes the lease at most every lease/3: not one write per render."""
    assert decide(Lease(ME, ago(5), 60), ME, NOW, 60) == decide(Lease(ME, ago(19.9), 60), ME, NOW, 60)
    fresh = decide(Lease(ME, ago(5), 60), ME, NOW, 60)
    assert fresh.owned and not fresh.write
    due = decide(Lease(ME, ago(20), 60), ME, NOW, 60)
    assert due.owned and due.write
    # expired but still ours (a peer of this install that died, or a restart): taken back without waiting
    assert decide(Lease(ME, ago(600), 60), ME, NOW, 60).owned
    # a changed lease length is written at once
    assert decide(Lease(ME, ago(1), 30), ME, NOW, 60).write


def test_a_lease_length_below_three_seconds_is_refused(monkeypatch):
    monkeypatch.setenv("PLANTWATCH_OWNERSHIP_LEASE_SECONDS", "1")
    with pytest.raises(ValueError, match="PLANTWATCH_OWNERSHIP_LEASE_SECONDS='1': expected whole seconds, at least 3"):
        lease_seconds_from_env()


def test_a_refused_namespace_is_not_rendered_and_asked_again_after_the_claims_expiry():
    runs: list[str] = []
    asked: list[float] = []
    refusals = [0.1, 0.1]  # refused twice (the holder renewed once), then ours

    def admit(key: str) -> float | None:
        asked.append(time.monotonic())
        return refusals.pop(0) if key == "plant-a" and refusals else None

    c = Coalescer(runs.append, quiet=0.01, longest=0.05, admit=admit)
    c.mark("plant-a")
    c.mark("plant-b")
    deadline = time.monotonic() + 10
    while (c.pending() or "plant-a" not in runs) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(runs) == ["plant-a", "plant-b"]  # plant-b was never held up by plant-a's refusal
    assert len(asked) == 4
