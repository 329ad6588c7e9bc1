"""A real mosquitto as a plant would run it: TLS (optionally mutual), passwords and ACLs, on loopback.

`Pki` makes a throwaway CA and issues server and client certificates with `cryptography`;
`start_secure_mosquitto(...)` writes a mosquitto.conf with the listeners asked for and runs
Debian's mosquitto on it, using the password and ACL files it is given *as they are* (so a
test can run a broker from exactly what the operator renders). `reload()` sends SIGHUP:
mosquitto re-reads its password and ACL files without dropping the clients it has.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plantwatch.mqtt.broker import free_port, wait_for_port


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class Pki:
    """A throwaway CA in `folder`: ca.pem, and the certificates it issues as <name>.pem / <name>.key."""

    folder: Path
    name: str = "plantwatch test CA"
    _key: ec.EllipticCurvePrivateKey = field(init=False)
    _cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    @property
    def ca_path(self) -> Path:
        return self.folder / "ca.pem"

    def issue(
        self,
        name: str,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        client: bool = False,
        days: float = 1.0,
    ) -> tuple[Path, Path]:
        """A certificate for a server (`hosts` as SANs) or a client (CN = `name`); returns (cert path, key path)."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
                ),
                critical=False,
            )
        )
        if not client:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return cert_path, key_path


@dataclass
class SecureBroker:
    """A running mosquitto: `port` (plain, when asked), `tls_port`, and the files it runs from."""

    proc: subprocess.Popen
    folder: Path
    port: int | None
    tls_port: int | None
    log_path: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password and ACL files; connected clients stay."""
        os.kill(self.proc.pid, signal.SIGHUP)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_secure_mosquitto(
    folder: Path,
    pki: Pki | None = None,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    plain: bool = False,
    require_client_cert: bool = False,
    allow_anonymous: bool = False,
) -> SecureBroker:
    """Mosquitto on 127.0.0.1 with a TLS listener (when `pki` is given; its server certificate is
    issued for 127.0.0.1 and localhost) and/or a plain one, `per_listener_settings false` so the
    password and ACL files apply to both. Raises RuntimeError with mosquitto's last log line."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"user {getpass.getuser()}", "per_listener_settings false", f"allow_anonymous {'true' if allow_anonymous else 'false'}"]
    if password_file is not None:
        lines.append(f"password_file {password_file}")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    port = tls_port = None
    if plain:
        port = free_port()
        lines.append(f"listener {port} 127.0.0.1")
    if pki is not None:
        tls_port = free_port()
        cert, key = pki.issue("broker")
        lines += [f"listener {tls_port} 127.0.0.1", f"cafile {pki.ca_path}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
        if require_client_cert:
            lines += ["require_certificate true", "use_identity_as_username false"]
    # As start_mosquitto configures the plain test broker: room for a burst and a wide window of
    # unacknowledged messages (the gateway acknowledges a whole batch once it is stored).
    lines += ["max_queued_messages 1000000", "max_inflight_messages 10000"]
    lines += ["persistence false", "log_dest stderr", "log_type error", "log_type warning", "log_type notice", "log_type information"]
    conf = folder / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    log_path = folder / "mosquitto.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    broker = SecureBroker(proc, folder, port, tls_port, log_path)
    try:
        for p in (port, tls_port):
            if p is not None:
                wait_for_port(p, alive=lambda: proc.poll() is None)
    except Exception as exc:
        said = broker.log().strip().splitlines()
        broker.stop()
        raise RuntimeError(f"mosquitto from {conf}: {exc}" + (f": {said[-1]}" if said else "")) from exc
    return broker


def mosquitto_passwd_file(folder: Path, users: dict[str, str]) -> Path:
    """A password file made by mosquitto's own `mosquitto_passwd` (the reference for a rendered one)."""
    path = folder / "reference.passwd"
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    return path


def workdir(prefix: str = "plantwatch-mqtt-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
