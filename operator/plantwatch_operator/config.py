"""The operator's settings, read once from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from plantwatch.contracts.names import INFLUX_LAYOUTS
from plantwatch.logs import mask
from plantwatch_operator.autoscale import GatewayAutoscaling

#: A Secret's name (a DNS subdomain) and one of its keys, as the API server accepts them.
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


@dataclass(frozen=True)
class Config:
    #: Image of every Plantwatch workload; the chart sets it to its own appVersion.
    image: str = "ghcr.io/plantwatch/plantwatch:0.1.0"
    #: MQTT broker the plant's gateway subscribes to (the chart's in-release broker by default). No credentials in it:
    #: the gateway's identity is GATEWAY_USERNAME with a password the operator generates into a Secret (broker.py).
    broker_url: str = "mqtts://plantwatch-broker:8883"
    #: Seconds a broker server certificate lives (the CA: ten times that); renewed when a third is left.
    broker_cert_lifetime: float = 90 * 86400.0
    #: cert-manager's issuer of the broker's certificate, (kind, name), where cert-manager is installed. None: the
    #: operator renders the plant's own CA chain of cert-manager Issuers.
    broker_issuer: tuple[str, str] | None = None
    #: Seconds between re-reads of the SensorNodes' credential Secrets and the broker certificate's expiry.
    credentials_check_interval: float = 30.0
    #: Seconds between re-checks of each DetectorModel's source and serving state.
    detector_check_interval: float = 30.0
    #: Seconds between re-reads of each AlertReceiver's Secrets (they are not watched: see handlers.receiver_recheck).
    receiver_check_interval: float = 30.0
    #: The gateway's alerts API token: this key of this Secret, (name, key), in each plant's namespace, mounted
    #: into the gateway as the AlertReceivers' Secrets are. None: the gateway's API refuses every change.
    gateway_api_token_secret: tuple[str, str] | None = None
    #: Serve the gateway's alerts API reads (alerts, history, silences) without the token.
    gateway_api_open_reads: bool = False
    #: The most status writes per second (all plants together): a plant applied at once reports as a bounded stream.
    status_writes_per_second: float = 50.0
    #: The gateways' shared store of record, postgresql://user@host[:port]/db (never a password: that is the key
    #: gateway_db_password_secret names, mounted). None: each gateway keeps SQLite on its own volume (GATEWAY_DATA).
    gateway_db_url: str | None = None
    #: The database password: this key of this Secret, (name, key), in each plant's namespace.
    gateway_db_password_secret: tuple[str, str] | None = None
    #: Size and storage class ("": the cluster's default) of the gateway's SQLite volume, without gateway_db_url.
    gateway_data_size: str = "10Gi"
    gateway_data_storage_class: str = ""
    #: InfluxDB 2.x beside the store, the dashboards' time series: its URL (None: not written), organization and
    #: bucket, and the Secret key (name, key) holding its token.
    gateway_influx_url: str | None = None
    gateway_influx_org: str = "plantwatch"
    gateway_influx_bucket: str = "plant"
    #: `serve ingest --influx-layout`: narrow (a point per reading) or wide (a point per node and timestamp).
    gateway_influx_layout: str = INFLUX_LAYOUTS[0]
    gateway_influx_token_secret: tuple[str, str] | None = None
    #: Days the gateway keeps readings, window summaries and dead letters (`serve ingest --retention-days` and
    #: friends); None: readings or summaries are kept until deleted by hand.
    gateway_retention_days: tuple[float | None, float | None, float] = (None, None, 7.0)
    #: The gateway's HorizontalPodAutoscaler, rendered only with gateway_db_url: the gateways divide the shards
    #: through the shared store however many run; SQLite's one volume holds one pod.
    gateway_autoscaling: GatewayAutoscaling = GatewayAutoscaling()

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            image=os.environ.get("PLANTWATCH_IMAGE", cls.image),
            broker_url=broker_url("PLANTWATCH_BROKER_URL", os.environ.get("PLANTWATCH_BROKER_URL", cls.broker_url)),
            broker_cert_lifetime=lifetime("PLANTWATCH_BROKER_CERT_LIFETIME", os.environ.get("PLANTWATCH_BROKER_CERT_LIFETIME", "")),
            broker_issuer=issuer("PLANTWATCH_BROKER_ISSUER", os.environ.get("PLANTWATCH_BROKER_ISSUER", "")),
            credentials_check_interval=float(os.environ.get("PLANTWATCH_CREDENTIALS_CHECK_INTERVAL", cls.credentials_check_interval)),
            detector_check_interval=float(os.environ.get("PLANTWATCH_DETECTOR_CHECK_INTERVAL", cls.detector_check_interval)),
            receiver_check_interval=float(os.environ.get("PLANTWATCH_RECEIVER_CHECK_INTERVAL", cls.receiver_check_interval)),
            gateway_api_token_secret=secret_key(
                "PLANTWATCH_GATEWAY_API_TOKEN_SECRET", os.environ.get("PLANTWATCH_GATEWAY_API_TOKEN_SECRET", "")
            ),
            gateway_api_open_reads=flag("PLANTWATCH_GATEWAY_API_OPEN_READS", os.environ.get("PLANTWATCH_GATEWAY_API_OPEN_READS", "false")),
            status_writes_per_second=float(os.environ.get("PLANTWATCH_STATUS_WRITES_PER_SECOND", cls.status_writes_per_second)),
            **store(os.environ),
        )


#: The variables of Config.gateway_retention_days, in its order (readings, summaries, dead letters).
_RETENTION_ENV = (
    "PLANTWATCH_GATEWAY_RETENTION_DAYS",
    "PLANTWATCH_GATEWAY_SUMMARY_RETENTION_DAYS",
    "PLANTWATCH_GATEWAY_DEAD_LETTER_RETENTION_DAYS",
)


def days_setting(name: str, value: str) -> float | None:
    """A retention in days from `value`; None for "" or 0 (kept until deleted by hand)."""
    try:
        days = float(value or 0)
    except ValueError:
        days = -1.0
    if not days >= 0 or days == float("inf"):
        raise ValueError(f"{name}={value!r}: expected a number of days, such as 7 or 0.5 (0: keep until deleted by hand)")
    return days or None


def store(env: Mapping[str, str]) -> dict[str, Any]:
    """The gateway's store settings (Config's gateway_db_* / gateway_data_* / gateway_influx_*) from `env`, each
    refused at start-up when malformed or missing its other half (a URL without its Secret, or one with a password)."""
    out: dict[str, Any] = {}
    if url := env.get("PLANTWATCH_GATEWAY_DB_URL", ""):
        u = urlparse(url)
        if u.scheme not in ("postgresql", "postgres") or not u.hostname or not u.path.strip("/"):
            raise ValueError(f"PLANTWATCH_GATEWAY_DB_URL={mask(url)!r}: expected postgresql://user@host[:port]/database")
        if u.password is not None:
            raise ValueError(
                "PLANTWATCH_GATEWAY_DB_URL: the URL carries a password; give none, and name the Secret holding it in "
                "PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET (NAME/KEY)"
            )
        out["gateway_db_url"] = url
        out["gateway_db_password_secret"] = secret_key(
            "PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET", env.get("PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET", "")
        )
        if out["gateway_db_password_secret"] is None:
            raise ValueError(
                "PLANTWATCH_GATEWAY_DB_URL is set but PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET is not: expected NAME/KEY of the password"
            )
    days = [days_setting(k, env.get(k, "")) for k in _RETENTION_ENV]
    if env.get(_RETENTION_ENV[2], "") and days[2] is None:
        raise ValueError(f"{_RETENTION_ENV[2]}={env[_RETENTION_ENV[2]]!r}: dead letters are always deleted in the end; give days > 0")
    if days != [None, None, None]:
        default = Config.gateway_retention_days
        out["gateway_retention_days"] = (days[0], days[1], days[2] or default[2])
    if size := env.get("PLANTWATCH_GATEWAY_DATA_SIZE", ""):
        if not re.fullmatch(r"[0-9]+(Mi|Gi|Ti)", size):
            raise ValueError(f"PLANTWATCH_GATEWAY_DATA_SIZE={size!r}: expected a size such as 512Mi, 10Gi or 1Ti")
        out["gateway_data_size"] = size
    if storage_class := env.get("PLANTWATCH_GATEWAY_DATA_STORAGE_CLASS", ""):
        out["gateway_data_storage_class"] = storage_class
    if url := env.get("PLANTWATCH_GATEWAY_INFLUX_URL", ""):
        u = urlparse(url)
        if u.scheme not in ("http", "https") or not u.hostname or u.username is not None:
            raise ValueError(f"PLANTWATCH_GATEWAY_INFLUX_URL={mask(url)!r}: expected http(s)://host:port, no credentials")
        token = secret_key("PLANTWATCH_GATEWAY_INFLUX_TOKEN_SECRET", env.get("PLANTWATCH_GATEWAY_INFLUX_TOKEN_SECRET", ""))
        if token is None:
            raise ValueError(
                "PLANTWATCH_GATEWAY_INFLUX_URL is set but PLANTWATCH_GATEWAY_INFLUX_TOKEN_SECRET is not: expected NAME/KEY of the token"
            )
        out |= {"gateway_influx_url": url, "gateway_influx_token_secret": token}
        out |= {
            f"gateway_influx_{k}": env[f"PLANTWATCH_GATEWAY_INFLUX_{k.upper()}"]
            for k in ("org", "bucket", "layout")
            if env.get(f"PLANTWATCH_GATEWAY_INFLUX_{k.upper()}")
        }
        if out.get("gateway_influx_layout", INFLUX_LAYOUTS[0]) not in INFLUX_LAYOUTS:
            raise ValueError(
                f"PLANTWATCH_GATEWAY_INFLUX_LAYOUT={out['gateway_influx_layout']!r}: expected one of {', '.join(INFLUX_LAYOUTS)}"
            )
    bounds = {
        field: env[variable]
        for field, variable in (
            ("min_replicas", "PLANTWATCH_GATEWAY_MIN_REPLICAS"),
            ("max_replicas", "PLANTWATCH_GATEWAY_MAX_REPLICAS"),
            ("target_messages_per_second", "PLANTWATCH_GATEWAY_TARGET_MESSAGES_PER_SECOND"),
        )
        if env.get(variable)
    }
    if bounds:
        for field, text in bounds.items():
            if not text.isdigit():
                raise ValueError(f"PLANTWATCH_GATEWAY_{field.upper()}={text!r}: expected a whole number")
        out["gateway_autoscaling"] = GatewayAutoscaling(**{f: int(t) for f, t in bounds.items()})
    return out


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


def broker_url(variable: str, text: str) -> str:
    """The broker URL, refused when it carries credentials (they would sit in the gateway's args)."""
    u = urlparse(text)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"{variable}: expected mqtts://host:port (or mqtt:// for a broker without TLS), got scheme {u.scheme!r}")
    if u.username is not None or u.password is not None:
        raise ValueError(
            f"{variable}: the URL carries credentials; give none (the gateway's broker identity is a Secret the operator "
            "generates and mounts)"
        )
    return text


def lifetime(variable: str, text: str) -> float:
    """Seconds, at least 60 (a shorter certificate would be renewed between two checks)."""
    if not text:
        return Config.broker_cert_lifetime
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if seconds < 60:
        raise ValueError(f"{variable}={text!r}: expected seconds, at least 60 (default {Config.broker_cert_lifetime:.0f}, 90 days)")
    return seconds


def issuer(variable: str, text: str) -> tuple[str, str] | None:
    """`Issuer/NAME` or `ClusterIssuer/NAME` → (kind, name); empty → None."""
    if not text:
        return None
    kind, _, name = text.partition("/")
    if kind not in ("Issuer", "ClusterIssuer") or not _SECRET_NAME.fullmatch(name):
        raise ValueError(
            f"{variable}={text!r}: expected Issuer/NAME or ClusterIssuer/NAME (a cert-manager issuer, e.g. ClusterIssuer/plant-ca)"
        )
    return kind, name
