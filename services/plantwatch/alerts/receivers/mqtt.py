"""The MQTT receiver: the notification's JSON (the webhook's `plantwatch` body) published to a topic.

For plant-floor andon lights and PLCs. The topic may name `{node}`, `{rule}` and `{severity}`
of the group's first alert (`andon/{node}`); a value that would change the topic's shape
(`/`, the wildcards `+` and `#`, NUL) is refused rather than published somewhere else.
Each send connects, publishes and waits for the broker's PUBACK (QoS 1) within the timeout,
then disconnects: a notification is sent rarely, and a connection kept idle would queue a
publish while the broker is away and deliver it late, after the retry had sent it again.
A consumer that must not act twice dedupes on the body's `key`.
"""

from __future__ import annotations

import string
import time

from plantwatch.alerts.notification import DeliveryError, Notification
from plantwatch.alerts.receivers.webhook import encode, plantwatch_body
from plantwatch.mqtt.endpoint import Endpoint
from plantwatch.mqtt.publisher import Publisher
from plantwatch.plant.model import AlertReceiver
from plantwatch.secrets import SecretMissing, Secrets

#: The alert fields a topic may name.
TOPIC_FIELDS = ("node", "rule", "severity")
_UNSAFE = ("+", "#", "/", "\0")


def check_topic(template: str, where: str) -> None:
    """ValueError naming `where` for a topic template that is no valid publish topic or names an unknown field."""
    if not template or any(c in template for c in "+#\0"):
        raise ValueError(f"{where}: {template!r} is no topic to publish to (not empty, no + # or NUL)")
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        bad = [f for f in names if f not in TOPIC_FIELDS]
    except ValueError as exc:
        raise ValueError(f"{where}: {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    if bad:
        raise ValueError(
            f"{where}: {template!r} names {', '.join(map(repr, bad))}; accepted: {', '.join('{' + f + '}' for f in TOPIC_FIELDS)}"
        )


def topic_for(template: str, n: Notification) -> str:
    """The topic for `n`: the template with the first alert's node, rule and severity; DeliveryError (not retryable)
    when a value holds `/`, `+`, `#` or NUL, which would publish to another topic or none."""
    first = n.alerts[0]
    values = {"node": first.node, "rule": first.rule, "severity": first.severity}
    for field, value in values.items():
        if "{" + field + "}" in template and (not value or any(c in value for c in _UNSAFE)):
            raise DeliveryError(
                f"MQTT topic {template!r}: {field} {value!r} cannot be part of a topic (empty, or holds / + # or NUL)", retryable=False
            )
    return template.format(**values)


class Mqtt:
    """Publishes each notification's JSON to a topic on a broker (the plant's own, or one from urlSecretRef)."""

    kind = "MQTT"

    def __init__(self, name: str, url: str | Endpoint, topic: str, qos: int = 1, retain: bool = False):
        check_topic(topic, f"AlertReceiver {name!r} spec.mqtt.topic")
        if qos not in (0, 1):
            raise ValueError(f"AlertReceiver {name!r} spec.mqtt.qos: {qos}; accepted: 0, 1")
        self.name = name
        # The plant's own broker comes with its TLS settings and credentials; a URL from
        # urlSecretRef is verified against the system trust store (mqtts://).
        self._broker = Endpoint.of(url)
        self._where = f"MQTT receiver {name!r} (broker {self._broker})"
        self._topic, self._qos, self._retain = topic, qos, retain

    def send(self, notification: Notification, timeout: float) -> None:
        if not notification.alerts:
            return
        topic = topic_for(self._topic, notification)
        deadline = time.monotonic() + timeout
        publisher = Publisher(self._broker)
        try:
            publisher.start(timeout)
        except ConnectionRefusedError as exc:
            raise DeliveryError(f"{self._where}: {exc}", retryable=False) from None
        except TimeoutError as exc:
            raise DeliveryError(f"{self._where}: {exc}", retryable=True) from None
        try:
            publisher.publish(topic, encode(plantwatch_body(notification)), qos=self._qos, retain=self._retain)
            if not publisher.flushed(max(0.0, deadline - time.monotonic())):
                what = "acknowledged (PUBACK)" if self._qos else "sent"
                raise DeliveryError(f"{self._where}: the publish to {topic!r} was not {what} within {timeout:g}s", retryable=True)
        finally:
            publisher.stop(0)

    def close(self) -> None:
        """Nothing held between sends: each connects for itself."""


def build(receiver: AlertReceiver, secrets: Secrets, broker_url: str | Endpoint | None) -> Mqtt:
    spec = receiver.spec.mqtt
    if spec is None:
        raise ValueError(f"AlertReceiver {receiver.name!r}: type MQTT needs spec.mqtt")
    try:
        url = secrets.text(spec.url_secret_ref) if spec.url_secret_ref else broker_url
    except SecretMissing as exc:
        raise SecretMissing(f"AlertReceiver {receiver.name!r} (MQTT): {exc}") from None
    if not url:
        raise ValueError(f"AlertReceiver {receiver.name!r}: spec.mqtt.urlSecretRef is not set and the plant runs no broker to publish to")
    return Mqtt(receiver.name, url, spec.topic, 1 if spec.qos is None else spec.qos, bool(spec.retain))
