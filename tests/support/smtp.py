"""A real SMTP server (aiosmtpd) on 127.0.0.1 with STARTTLS and AUTH, recording what it accepts, for the Email receiver's tests.

`throwaway_ca()` makes a CA and a server certificate for 127.0.0.1 with `cryptography`;
`SmtpServer(...)` runs aiosmtpd's Controller in its own thread.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plantwatch.mqtt.broker import free_port

USER, PASSWORD = "plant-alerts", "c0rrect-h0rse-battery"


@dataclass(frozen=True)
class Certs:
    """A CA (its PEM is what a client trusts) and a server certificate and key it signed, as PEM."""

    ca_pem: str
    cert_pem: bytes
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as d:
            cert, key = Path(d) / "cert.pem", Path(d) / "key.pem"
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            ctx.load_cert_chain(cert, key)
        return ctx


def throwaway_ca(host: str = "127.0.0.1") -> Certs:
    """A fresh CA and a server certificate for `host` (an IP SAN, plus DNS localhost), valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plantwatch test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Certs(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM).decode(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


@dataclass(frozen=True)
class Received:
    """One accepted message, with how its session was secured and who logged in."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    tls: bool
    login: str | None


@dataclass
class _Recorder:
    messages: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.cond:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), msg, session.ssl is not None, login))
            self.cond.notify_all()
        return "250 Message accepted for delivery"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


class SmtpServer:
    """aiosmtpd on 127.0.0.1: with `certs`, STARTTLS is offered and required before AUTH; AUTH (USER/PASSWORD) is required to send."""

    def __init__(self, certs: Certs | None = None):
        self.recorder = _Recorder()
        self.port = free_port()
        tls = certs.server_context() if certs else None
        self._controller = Controller(
            self.recorder,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=tls,
            require_starttls=tls is not None,
            authenticator=_authenticate,
            auth_required=True,
            auth_require_tls=tls is not None,
        )
        self.smarthost = f"127.0.0.1:{self.port}"

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.recorder.cond:
            return list(self.recorder.messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` messages, once that many have arrived (AssertionError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self.recorder.cond:
            while len(self.recorder.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"SMTP server got {len(self.recorder.messages)} messages, expected {count}")
                self.recorder.cond.wait(left)
            return list(self.recorder.messages[:count])
