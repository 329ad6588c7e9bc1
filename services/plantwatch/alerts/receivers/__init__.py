"""Receivers, one module per kind, built from a plant's AlertReceivers by `build`.

Each kind's module has a `build(receiver, secrets, broker_url)` that reads its spec and its
Secrets; KINDS maps spec.type to it. Secrets are resolved here, when the gateway starts, so
a missing one stops the start with SecretMissing naming the receiver, the Secret and the key,
rather than failing the first alert.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

from plantwatch.alerts.notification import DeliveryError, Notification, Receiver
from plantwatch.alerts.receivers import alertmanager, email, mqtt, slack, webhook
from plantwatch.alerts.receivers.console import Console
from plantwatch.contracts.names import BUILTIN_RECEIVERS
from plantwatch.plant.model import AlertReceiver
from plantwatch.secrets import SecretMissing, Secrets

log = logging.getLogger("plantwatch.alerts")

#: (the AlertReceiver, the plant's Secrets, the plant's broker URL or None) → its receiver.
Factory = Callable[[AlertReceiver, Secrets, str | None], Receiver]

#: spec.type → how to build it.
KINDS: dict[str, Factory] = {
    "Slack": slack.build,
    "Webhook": webhook.build,
    "MQTT": mqtt.build,
    "Email": email.build,
    "Alertmanager": alertmanager.build,
}


def build(receiver: AlertReceiver | None, name: str, secrets: Secrets, broker_url: str | None, out: TextIO = sys.stdout) -> Receiver:
    """The receiver called `name`: the plant's AlertReceiver of that name, or (None) the built-in `console` writing to `out`.

    Raises SecretMissing for a Secret or key it references that is not there, and ValueError for a
    spec it cannot use (an unknown type, a URL that is no http(s) URL, a topic with wildcards).
    """
    if receiver is None:
        if name not in BUILTIN_RECEIVERS:
            raise ValueError(f"receiver {name!r}: no AlertReceiver has this name and it is not built in ({', '.join(BUILTIN_RECEIVERS)})")
        return Console(name, out)
    factory = KINDS.get(receiver.spec.type)
    if factory is None:
        raise ValueError(
            f"AlertReceiver {receiver.name!r}: spec.type {receiver.spec.type!r} has no receiver here; accepted: {', '.join(KINDS)}"
        )
    return factory(receiver, secrets, broker_url)


class Deferred:
    """A receiver whose Secret is not there yet: built at the first send that finds it.

    In a cluster the operator mounts each referenced Secret as an optional volume, and a Secret
    created after the gateway started appears there within a kubelet sync. Until then every send
    fails, retryably, saying what is missing: the notifications wait in the log instead of the
    whole gateway refusing to start over one receiver.
    """

    def __init__(self, receiver: AlertReceiver, secrets: Secrets, broker_url: str | None):
        self.name, self.kind = receiver.name, receiver.spec.type
        self._args = (receiver, secrets, broker_url)
        self._built: Receiver | None = None

    def send(self, notification: Notification, timeout: float) -> None:
        if self._built is None:
            try:
                self._built = KINDS[self.kind](*self._args)
            except SecretMissing as exc:
                raise DeliveryError(f"AlertReceiver {self.name!r} cannot send yet: {exc}", retryable=True) from None
        self._built.send(notification, timeout)

    def close(self) -> None:
        if self._built is not None:
            self._built.close()


def build_or_defer(receiver: AlertReceiver, secrets: Secrets, broker_url: str | None) -> Receiver:
    """`build`, or a Deferred receiver when one of its Secrets is missing (ValueError still raises)."""
    try:
        return build(receiver, receiver.name, secrets, broker_url)
    except SecretMissing as exc:
        log.warning("AlertReceiver %s waits for its Secret: %s", receiver.name, exc)
        return Deferred(receiver, secrets, broker_url)
