"""The operator's settings, read once from the environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

#: A Secret's name (a DNS subdomain) and one of its keys, as the API server accepts them.
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


@dataclass(frozen=True)
class Config:
    #: Image of every Plantwatch workload; the chart sets it to its own appVersion.
    image: str = "ghcr.io/plantwatch/plantwatch:0.1.0"
    #: MQTT broker the plant's gateway subscribes to (the chart's in-release broker by default).
    broker_url: str = "mqtt://plantwatch-broker:1883"
    #: Seconds between re-checks of each DetectorModel's source and serving state.
    detector_check_interval: float = 30.0
    #: Seconds between re-reads of each AlertReceiver's Secrets (they are not watched: see handlers.receiver_recheck).
    receiver_check_interval: float = 30.0
    #: The gateway's alerts API token: this key of this Secret, (name, key), in each plant's namespace, mounted
    #: into the gateway as the AlertReceivers' Secrets are. None: the gateway's API refuses every change.
    gateway_api_token_secret: tuple[str, str] | None = None
    #: Serve the gateway's alerts API reads (alerts, history, silences) without the token.
    gateway_api_open_reads: bool = False

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            image=os.environ.get("PLANTWATCH_IMAGE", cls.image),
            broker_url=os.environ.get("PLANTWATCH_BROKER_URL", cls.broker_url),
            detector_check_interval=float(os.environ.get("PLANTWATCH_DETECTOR_CHECK_INTERVAL", cls.detector_check_interval)),
            receiver_check_interval=float(os.environ.get("PLANTWATCH_RECEIVER_CHECK_INTERVAL", cls.receiver_check_interval)),
            gateway_api_token_secret=secret_key(
                "PLANTWATCH_GATEWAY_API_TOKEN_SECRET", os.environ.get("PLANTWATCH_GATEWAY_API_TOKEN_SECRET", "")
            ),
            gateway_api_open_reads=flag("PLANTWATCH_GATEWAY_API_OPEN_READS", os.environ.get("PLANTWATCH_GATEWAY_API_OPEN_READS", "false")),
        )


def secret_key(variable: str, text: str) -> tuple[str, str] | None:
    """`NAME/KEY` → (name, key); empty → None. Checked here, so that a typo stops the operator at start-up
    rather than every gateway it renders."""
    if not text:
        return None
    name, _, key = text.partition("/")
    if not _SECRET_NAME.fullmatch(name) or len(name) > 253 or not _SECRET_KEY.fullmatch(key) or len(key) > 253:
        raise ValueError(
            f"{variable}={text!r}: expected a Secret and its key as NAME/KEY (e.g. plantwatch-api/token), the name a "
            "DNS subdomain (lower-case letters, digits, '-' and '.'), the key letters, digits, '-', '_' and '.'"
        )
    return name, key


def flag(variable: str, text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"{variable}={text!r}: expected true or false")
    return text == "true"
