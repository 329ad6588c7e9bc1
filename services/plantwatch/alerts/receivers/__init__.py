"""Receivers, one module per kind, built from a plant's AlertReceivers by `build`.

Each kind's module has a `build(receiver, secrets, broker_url)` that reads its spec and its
Secrets; KINDS maps spec.type to it. Secrets are resolved here, when the gateway starts, so
a missing one stops the start with SecretMissing naming the receiver, the Secret and the key,
rather than failing the first alert.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from plantwatch.alerts.notification import Receiver
from plantwatch.alerts.receivers import alertmanager, email, mqtt, slack, webhook
from plantwatch.alerts.receivers.console import Console
from plantwatch.contracts.names import BUILTIN_RECEIVERS
from plantwatch.plant.model import AlertReceiver
from plantwatch.secrets import Secrets

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
