"""The broker's side of a plant (pure): its TLS certificates and the Secrets the broker and gateway mount.

Values in, manifests out. Secret values are base64 `data` (never `stringData`: server-side apply
would keep reporting it as a change), and only ever in Secrets; the names below are the contract
with the chart's broker, which mounts AUTH_SECRET and TLS_SECRET.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from plantwatch_operator import certs

#: mosquitto's password file and ACL (keys PASSWORD_FILE, ACL_FILE), rendered from the SensorNodes' Secrets.
AUTH_SECRET = "plantwatch-broker-auth"
PASSWORD_FILE, ACL_FILE = "passwd", "acl"
#: The broker's server certificate, its key and the CA clients pin: cert-manager's keys (ca.crt, tls.crt, tls.key).
TLS_SECRET = "plantwatch-broker-tls"
#: The CA's certificate and key; mounted nowhere (only the operator, or cert-manager, signs with it).
CA_SECRET = "plantwatch-broker-ca"
#: The gateway's own MQTT identity: this username, and a password the operator generates into GATEWAY_SECRET.
GATEWAY_USERNAME = "plantwatch-gateway"
GATEWAY_SECRET = "plantwatch-gateway-mqtt"
GATEWAY_PASSWORD_KEY = "password"
#: The broker exporter's read-only identity ($SYS and the plant's topics), its password generated the same way
#: into EXPORTER_SECRET (key GATEWAY_PASSWORD_KEY), which the chart's broker-exporter Deployment mounts.
EXPORTER_USERNAME = "plantwatch-broker-exporter"
EXPORTER_SECRET = "plantwatch-broker-exporter-mqtt"
#: cert-manager's CRD, whose presence makes the operator render Certificates instead of generating.
CERT_MANAGER_CRD = "certificates.cert-manager.io"
CERT_MANAGER_API = "cert-manager.io/v1"
#: The cert-manager Issuer that signs the plant's CA (and nothing else).
SELF_SIGNED = "plantwatch-broker-selfsigned"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def secret(name: str, namespace: str, lab: dict[str, str], data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": lab},
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in sorted(data.items())},
    }


def tls_secrets(
    namespace: str,
    lab: dict[str, str],
    ca: dict[str, bytes] | None,
    server: dict[str, bytes] | None,
    hosts: tuple[str, ...],
    now: datetime.datetime,
    lifetime: datetime.timedelta,
) -> list[dict[str, Any]]:
    """The CA and server Secrets to write, given what CA_SECRET and TLS_SECRET hold now (None: absent):
    nothing while both are good; a new server certificate when it nears expiry, names other hosts or
    was not signed by the current CA; a new CA (and so a new server certificate) when the CA nears expiry."""
    out = []
    ca_lifetime = lifetime * certs.CA_LIFETIMES
    if ca is None or certs.needs_renewal(ca.get("tls.crt", b""), now) or not ca.get("tls.key"):
        issued = certs.new_ca(f"plantwatch broker CA ({namespace})", now, ca_lifetime)
        ca = {"tls.crt": issued.cert, "tls.key": issued.key}
        out.append(secret(CA_SECRET, namespace, lab, ca))
    current = server or {}
    if (
        out
        or certs.needs_renewal(current.get("tls.crt", b""), now, hosts)
        or not certs.signed_by(current.get("tls.crt", b""), ca["tls.crt"])
        or current.get("ca.crt") != ca["tls.crt"]
        or not current.get("tls.key")
    ):
        issued = certs.issue_server(certs.Issued(ca["tls.crt"], ca["tls.key"]), hosts, now, lifetime)
        out.append(secret(TLS_SECRET, namespace, lab, {"ca.crt": ca["tls.crt"], "tls.crt": issued.cert, "tls.key": issued.key}))
    return out


def _duration(delta: datetime.timedelta) -> str:
    """A Go duration, as cert-manager reads `duration` and `renewBefore`."""
    return f"{int(delta.total_seconds())}s"


def cert_manager_objects(
    namespace: str, lab: dict[str, str], hosts: tuple[str, ...], lifetime: datetime.timedelta, issuer: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """cert-manager's objects for TLS_SECRET. With `issuer` (kind, name) configured, one Certificate it signs;
    otherwise the plant's own CA chain: a self-signed Issuer, the CA Certificate (CA_SECRET), an Issuer of
    that CA and the server Certificate, so clients pin a CA that outlives the server certificate."""

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": lab}

    objects: list[dict[str, Any]] = []
    if issuer is None:
        objects += [
            {"apiVersion": CERT_MANAGER_API, "kind": "Issuer", "metadata": meta(SELF_SIGNED), "spec": {"selfSigned": {}}},
            {
                "apiVersion": CERT_MANAGER_API,
                "kind": "Certificate",
                "metadata": meta(CA_SECRET),
                "spec": {
                    "isCA": True,
                    "commonName": f"plantwatch broker CA ({namespace})",
                    "secretName": CA_SECRET,
                    "duration": _duration(lifetime * certs.CA_LIFETIMES),
                    "renewBefore": _duration(lifetime * certs.CA_LIFETIMES / 3),
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "issuerRef": {"kind": "Issuer", "name": SELF_SIGNED},
                },
            },
            {"apiVersion": CERT_MANAGER_API, "kind": "Issuer", "metadata": meta(CA_SECRET), "spec": {"ca": {"secretName": CA_SECRET}}},
        ]
        issuer = ("Issuer", CA_SECRET)
    kind, name = issuer
    objects.append(
        {
            "apiVersion": CERT_MANAGER_API,
            "kind": "Certificate",
            "metadata": meta(TLS_SECRET),
            "spec": {
                "secretName": TLS_SECRET,
                "commonName": hosts[0],
                "dnsNames": list(hosts),
                "duration": _duration(lifetime),
                "renewBefore": _duration(lifetime / 3),
                "usages": ["server auth", "digital signature"],
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "issuerRef": {"group": "cert-manager.io", "kind": kind, "name": name},
            },
        }
    )
    return objects
