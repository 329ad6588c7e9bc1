"""The broker's certificates when cert-manager is absent: a CA and a server certificate the operator makes.

Values in, PEM out: `now` is given, so renewal is decided without a clock. The CA signs the server
certificate and is what clients pin (the firmware's NVS, the gateway's --broker-ca); it lives in its
own Secret, which nothing mounts, so the broker never holds the key that could mint another server.
A certificate is renewed once less than a third of its lifetime is left (cert-manager's default
`renewBefore`), or when the broker's names changed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How far back a certificate is valid, so a node whose clock lags a little accepts a fresh one; at most a
#: tenth of the lifetime, so that a short test lifetime is not all backdating.
_SKEW = datetime.timedelta(minutes=5)
#: The CA lives this many server lifetimes: the pinned certificate changes far less often than the server's.
CA_LIFETIMES = 10


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM."""

    cert: bytes
    key: bytes = b""


def broker_hosts(url: str) -> tuple[str, ...]:
    """The names a client may reach the broker by, from its URL: `b.ns.svc` also as `b`, `b.ns` and
    `b.ns.svc.cluster.local` (in-cluster clients use any of them)."""
    host = urlparse(url if "://" in url else f"mqtts://{url}").hostname or "localhost"
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        short = parts[0]
        scoped = f"{short}.{parts[1]}"
        return tuple(dict.fromkeys((host, short, scoped, f"{scoped}.svc", f"{scoped}.svc.cluster.local")))
    return (host,)


def _validity(now: datetime.datetime, lifetime: datetime.timedelta) -> tuple[datetime.datetime, datetime.datetime]:
    return now - min(_SKEW, lifetime / 10), now + lifetime


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_ca(name: str, now: datetime.datetime, lifetime: datetime.timedelta) -> Issued:
    """A self-signed CA (P-256: what the ESP32's mbedTLS verifies fast) that may sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = _validity(now, lifetime)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue_server(ca: Issued, hosts: tuple[str, ...], now: datetime.datetime, lifetime: datetime.timedelta) -> Issued:
    """A server certificate for `hosts` (DNS names or IP addresses as SANs), signed by `ca`."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    start, end = _validity(now, lifetime)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(end, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def needs_renewal(cert_pem: bytes, now: datetime.datetime, hosts: tuple[str, ...] | None = None) -> bool:
    """Whether `cert_pem` must be replaced: unreadable, less than a third of its lifetime left, or (when
    `hosts` is given) its SANs are not exactly `hosts`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if end - now < (end - start) / 3:
        return True
    if hosts is None:
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    names = [str(n.value) for n in sans]
    return sorted(names) != sorted(hosts)


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether `cert_pem` was issued by the CA `ca_pem` (a renewed CA orphans the old server certificate)."""
    try:
        cert, ca = x509.load_pem_x509_certificate(cert_pem), x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
