"""Delivery policy: retries with exponential backoff and jitter, non-retryable errors, the circuit breaker.

Time is injected (a clock the test moves, a sleep that only records), so nothing here sleeps.
The receiver is a scripted one: delivery only sees the Receiver protocol, and the real
receivers are tested against real servers in tests/integration/test_receivers_http_mqtt.py.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from plantwatch.alerts.delivery import Breaker, Delivery, retry_delay
from plantwatch.alerts.notification import AlertView, DeliveryError, Notification
from plantwatch.plant.specs import AlertReceiverDelivery


class Scripted:
    """Fails with the scripted errors in order, then delivers; records the timeouts it was given."""

    kind = "Webhook"

    def __init__(self, name: str, errors: list[Exception] = ()):
        self.name = name
        self.errors = list(errors)
        self.timeouts: list[float] = []
        self.delivered = 0

    def send(self, notification: Notification, timeout: float) -> None:
        self.timeouts.append(timeout)
        if self.errors:
            raise self.errors.pop(0)
        self.delivered += 1

    def close(self) -> None:
        pass


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def notification(key: str = "k1") -> Notification:
    alert = AlertView("overheat/press-1/temperature", "overheat", "press-1", "temperature", "critical", "firing", 93.0, "hot", 1.7e9)
    return Notification(key, "ops", "firing", "overheat", {"rule": "overheat"}, (alert,), 1.7e9)


def spec(tries=3, timeout="5s", backoff="500ms", breaker_failures=5, breaker_open_for="30s") -> AlertReceiverDelivery:
    return AlertReceiverDelivery(timeout, tries, backoff, breaker_failures, breaker_open_for)


def count(receiver: str, result: str) -> float:
    return REGISTRY.get_sample_value("plantwatch_notifications_total", {"receiver": receiver, "result": result}) or 0.0


def delivery(receiver, s, clock: Clock, jitter: float = 0.0) -> Delivery:
    return Delivery(receiver, s, clock=clock, sleep=clock.sleep, rng=lambda: jitter, wall=clock)


def test_backoff_doubles_per_retry_with_up_to_half_again_of_jitter():
    assert [retry_delay(0.5, r, 0.0) for r in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert [retry_delay(0.5, r, 1.0) for r in (1, 2, 3)] == [0.75, 1.5, 3.0]
    assert retry_delay(0.5, 2, 0.5) == 1.25


def test_two_failures_then_success_is_delivered_on_the_third_try_after_backing_off():
    clock, r = Clock(), Scripted("retry-ok", [DeliveryError("500"), DeliveryError("503")])
    out = delivery(r, spec(), clock, jitter=0.5).attempt(notification())
    assert out.delivered and out.result == "sent"
    assert [(a.result, a.error) for a in out.attempts] == [("failed", "500"), ("failed", "503"), ("sent", None)]
    assert clock.slept == [0.625, 1.25]
    assert r.timeouts == [5.0, 5.0, 5.0]
    assert (count("retry-ok", "failed"), count("retry-ok", "sent")) == (2, 1)
    assert [a.at for a in out.attempts] == [1000.0, 1000.625, 1001.875]


def test_a_round_that_runs_out_of_tries_fails_with_every_attempt_recorded():
    clock, r = Clock(), Scripted("all-fail", [DeliveryError("down")] * 3)
    out = delivery(r, spec(), clock).attempt(notification())
    assert not out.delivered and out.result == "failed" and len(out.attempts) == 3 and r.delivered == 0


def test_a_non_retryable_error_stops_the_round_at_once():
    clock, r = Clock(), Scripted("bad-request", [DeliveryError("400 invalid_payload", retryable=False)])
    out = delivery(r, spec(), clock).attempt(notification())
    assert (out.result, len(out.attempts), clock.slept) == ("failed", 1, [])
    assert r.delivered == 0


def test_without_a_spec_one_try_of_ten_seconds():
    clock, r = Clock(), Scripted("console-like", [DeliveryError("closed pipe")])
    out = delivery(r, None, clock).attempt(notification())
    assert (out.result, r.timeouts) == ("failed", [10.0])


def test_a_receiver_bug_fails_the_attempt_without_retrying_and_names_the_exception():
    clock, r = Clock(), Scripted("buggy", [KeyError("summary")])
    out = delivery(r, spec(), clock).attempt(notification())
    assert out.result == "failed" and len(out.attempts) == 1 and "KeyError" in out.attempts[0].error


def test_five_failures_in_a_minute_open_the_breaker_and_the_receiver_is_not_called_while_open():
    clock, r = Clock(), Scripted("flaky", [DeliveryError("down")] * 5)
    d = delivery(r, spec(tries=1), clock)
    for _ in range(5):
        assert d.attempt(notification()).result == "failed"
        clock.now += 10
    calls = len(r.timeouts)
    out = d.attempt(notification())
    assert out.result == "circuit_open" and not out.delivered and len(r.timeouts) == calls
    assert out.attempts[0].result == "circuit_open" and "next trial in" in out.attempts[0].error
    assert count("flaky", "circuit_open") == 1
    clock.now += 30  # half-open: one trial, which succeeds and closes the breaker
    assert d.attempt(notification()).result == "sent"
    assert d.breaker.state(clock.now) == "closed"


def test_a_failed_trial_opens_the_breaker_again_for_a_full_period():
    clock, r = Clock(), Scripted("still-down", [DeliveryError("down")] * 7)
    d = delivery(r, spec(tries=3, breaker_failures=2), clock)
    out = d.attempt(notification())
    assert len(out.attempts) == 2 and out.result == "failed"  # the breaker opened during the round: it stops
    clock.now += 30
    out = d.attempt(notification())
    assert len(out.attempts) == 1 and out.result == "failed"  # the one trial of half-open
    clock.now += 29
    assert d.attempt(notification()).result == "circuit_open"


def test_failures_further_apart_than_a_minute_do_not_open_the_breaker():
    b = Breaker(failures=3, open_for_s=30)
    for t in (0, 40, 80, 120):
        b.record(t, ok=False)
    assert b.state(120) == "closed"
    b.record(121, ok=False)
    assert b.state(121) == "open"


def test_half_open_lets_exactly_one_trial_through():
    b = Breaker(failures=1, open_for_s=30)
    b.record(0, ok=False)
    assert not b.allow(29.9)
    assert b.allow(30) and not b.allow(30.1)
    b.record(31, ok=True)
    assert b.allow(31) and b.allow(31)


@pytest.mark.parametrize("tries", [1, 2, 4])
def test_the_number_of_attempts_never_exceeds_tries(tries):
    clock, r = Clock(), Scripted(f"tries-{tries}", [DeliveryError("down")] * 10)
    out = delivery(r, spec(tries=tries, breaker_failures=100), clock).attempt(notification())
    assert len(out.attempts) == len(r.timeouts) == tries
