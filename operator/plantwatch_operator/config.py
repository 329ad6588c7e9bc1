"""The operator's settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass


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

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            image=os.environ.get("PLANTWATCH_IMAGE", cls.image),
            broker_url=os.environ.get("PLANTWATCH_BROKER_URL", cls.broker_url),
            detector_check_interval=float(os.environ.get("PLANTWATCH_DETECTOR_CHECK_INTERVAL", cls.detector_check_interval)),
            receiver_check_interval=float(os.environ.get("PLANTWATCH_RECEIVER_CHECK_INTERVAL", cls.receiver_check_interval)),
        )
