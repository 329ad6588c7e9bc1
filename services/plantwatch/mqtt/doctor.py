"""`plantwatch doctor`: a broker connection diagnosed step by step, each failure in words with its fix.

The steps run in order (DNS, TCP, TLS, MQTT, authentication, subscription, publish to the
client's own topic, round trip, publish to a forbidden topic) and each returns a `Check`; a
step whose prerequisite failed is listed as not run. The words and fixes are pure functions
of what a step observed (`connack_words`, `tls_failure_words`, `expiry_check`, ...); the I/O
sits in a few small functions and in `Session`, a blocking MQTT 3.1.1/5 client on a socket
this module opened itself, so the TLS step sees the handshake (protocol, cipher,
certificate, verification error) and the MQTT step sees every byte the broker answers.

The ACL probe and MQTT 3.1.1: a 3.1.1 broker acknowledges (PUBACK) a publish its ACL denies
and drops it, so the publisher cannot tell. The doctor therefore reads its own publishes
through a reader (itself, or an `--observer` identity that may read both topics): a
forbidden publish is refused when it has not reached the reader by the time a later publish
to the client's own topic has (the broker handles one client's packets in order). MQTT 5
(the default) says it directly: PUBACK carries "not authorized".
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import json
import os
import select
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from cryptography import x509

#: Days of validity left under which the certificate check warns.
EXPIRY_WARNING_DAYS = 30
MQTT_311, MQTT_5 = 4, 5
VERSION_NAMES = {MQTT_311: "3.1.1", MQTT_5: "5"}


class Outcome(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


SYMBOLS = {Outcome.PASS: "✓", Outcome.WARN: "!", Outcome.FAIL: "✗", Outcome.SKIP: "–"}


@dataclass(frozen=True)
class Check:
    """One step's finding: `detail` says what was seen, `fix` what to do (set for every failure and warning)."""

    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None
    #: Machine-readable values (addresses, latency_ms, days_left, reason codes) for --json.
    facts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.FAIL


def passed(name: str, detail: str, **facts) -> Check:
    return Check(name, Outcome.PASS, detail, None, facts)


def failed(name: str, detail: str, fix: str, **facts) -> Check:
    return Check(name, Outcome.FAIL, detail, fix, facts)


def skipped(name: str, detail: str, **facts) -> Check:
    return Check(name, Outcome.SKIP, detail, None, facts)


# ---------------------------------------------------------------- what is asked


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: bool

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(url: str) -> Target:
    """`mqtt://host[:1883]` or `mqtts://host[:8883]`; ValueError saying what is accepted."""
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// (plain) or mqtts:// (TLS), e.g. mqtts://broker.plant:8883")
    if u.username or u.password:
        raise ValueError(
            f"broker URL {u.scheme}://{u.hostname}: give no credentials in the URL (they would be on the command line): "
            "--username and --password-file"
        )
    try:
        port = u.port
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: {exc}") from None
    if not u.hostname:
        raise ValueError(f"broker URL {url!r}: no host (expected mqtt[s]://host[:port])")
    tls = u.scheme in ("mqtts", "ssl")
    return Target(u.hostname, port or (8883 if tls else 1883), tls)


@dataclass(frozen=True)
class Identity:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""


def read_password(path: Path) -> str:
    """The first line of `path` (a mounted Secret's key, or a file only its owner reads)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"password file {path}: {exc.strerror or exc}") from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise ValueError(f"password file {path}: the first line is empty (expected the password on it)")
    return password


@dataclass(frozen=True)
class Options:
    target: Target
    identity: Identity
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    #: The client's own topic: subscribed (by the reader) and published to.
    topic: str = ""
    #: Another node's topic this identity must not publish to.
    forbidden_topic: str | None = None
    #: A second identity that may read `topic` and `forbidden_topic` (the gateway's), when given.
    observer: Identity | None = None
    timeout: float = 5.0
    version: int = MQTT_5


# ---------------------------------------------------------------- words (pure)


def tcp_failure(target: Target, errno_name: str, timeout: float) -> Check:
    """The TCP step's failure: refused, timed out, or no route."""
    if errno_name == "ECONNREFUSED":
        other = 8883 if not target.tls else 1883
        return failed(
            "tcp",
            f"nothing listens on {target.address} (connection refused)",
            f"is the broker running, and on port {target.port}? TLS brokers usually listen on 8883, plain ones on 1883 "
            f"(this is {'mqtts' if target.tls else 'mqtt'}://; {other} is the other)",
        )
    if errno_name == "ETIMEDOUT":
        return failed(
            "tcp",
            f"no answer from {target.address} within {timeout:g} s",
            "a firewall or security group drops packets to this port, or the host is down: "
            f"check the rules between here and {target.host} (a NetworkPolicy in Kubernetes) and that the broker listens there",
        )
    return failed(
        "tcp",
        f"cannot reach {target.address}: {errno_name}",
        "no route to the host: check the address, this machine's network and the routes to it",
    )


def name_of(name: x509.Name) -> str:
    """'CN=broker,O=plant' in the order people read it."""
    return name.rfc4514_string() or "(empty name)"


def sans_of(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.IPAddress)] + ext.get_values_for_type(x509.DNSName)


def host_matches(host: str, sans: Sequence[str]) -> bool:
    """RFC 6125 as TLS clients apply it: an IP matches an IP SAN; a name a DNS SAN, `*.` standing for one whole label."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for san in sans:
        if ip is not None:
            try:
                if ipaddress.ip_address(san) == ip:
                    return True
            except ValueError:
                pass
            continue
        pattern, name = san.lower().rstrip("."), host.lower().rstrip(".")
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def hostname_check(host: str, cert: x509.Certificate) -> Check:
    sans = sans_of(cert)
    if host_matches(host, sans):
        return passed("hostname", f"the certificate is valid for {host}", subject_alt_names=sans)
    if not sans:
        return failed(
            "hostname",
            f"the certificate names no host (no subjectAltName; clients ignore its {name_of(cert.subject)})",
            f"reissue the broker's certificate with {host} as a subjectAltName",
            subject_alt_names=sans,
        )
    return failed(
        "hostname",
        f"the certificate is for {', '.join(sans)}, not {host}",
        f"connect with a name the certificate holds ({sans[0]}), or reissue it with {host} as a subjectAltName",
        subject_alt_names=sans,
    )


def expiry_check(cert: x509.Certificate, now: datetime.datetime) -> Check:
    """Days of validity left; a warning under EXPIRY_WARNING_DAYS, a failure once expired or not yet valid."""
    end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
    days = (end - now).total_seconds() / 86400
    facts = {"not_after": end.isoformat(), "days_left": round(days, 1)}
    if now < start:
        return failed(
            "expiry",
            f"the certificate is not valid before {start:%Y-%m-%d %H:%M} UTC",
            "check the clocks of this machine and the CA (NTP), or wait until it is valid",
            **facts,
        )
    if days <= 0:
        return failed(
            "expiry",
            f"the certificate expired on {end:%Y-%m-%d} ({-days:.0f} days ago)",
            "renew the broker's certificate (cert-manager renews it itself; check its Certificate's status)",
            **facts,
        )
    words = f"valid until {end:%Y-%m-%d} ({days:.0f} days left)"
    if days < EXPIRY_WARNING_DAYS:
        return Check(
            "expiry",
            Outcome.WARN,
            f"expires soon: {words}",
            f"renew the broker's certificate before {end:%Y-%m-%d}; clients refuse it from then on",
            facts,
        )
    return passed("expiry", words, **facts)


#: OpenSSL verification errors meaning the chain could not be built up to a trusted CA.
UNTRUSTED_CODES = {2, 18, 19, 20, 21, 27}


def chain_check(cert: x509.Certificate, ca: Path | None, verify_code: int | None, verify_message: str = "") -> Check:
    """Whether the broker's certificate chains to a CA this client trusts; `verify_code` None means it did."""
    where = f"the CA file {ca}" if ca else "this system's trusted CAs"
    subject, issuer = name_of(cert.subject), name_of(cert.issuer)
    facts = {"subject": subject, "issuer": issuer}
    if verify_code is None:
        return passed("certificate", f"{subject}, issued by {issuer}, trusted by {where}", **facts)
    if verify_code not in UNTRUSTED_CODES:
        return passed("certificate", f"{subject}, issued by {issuer}, chains to {where}", **facts)
    fix = f"give --ca the certificate of the CA that signed the broker's ({issuer}): the plant's CA, e.g. ca.crt of the broker's TLS Secret"
    if cert.subject == cert.issuer:
        return failed("certificate", f"the broker's certificate ({subject}) is self-signed and not in {where}", fix, **facts)
    held = ca_names(ca) if ca else []
    holds = f" (it holds {'; '.join(held)})" if held else ""
    return failed(
        "certificate",
        f"the broker's certificate ({subject}) is signed by {issuer}, which is not in {where}{holds}",
        fix,
        verify_error=verify_message,
        **facts,
    )


def ca_names(ca: Path) -> list[str]:
    try:
        return [name_of(c.subject) for c in x509.load_pem_x509_certificates(Path(ca).read_bytes())]
    except (OSError, ValueError):
        return []


def tls_failure_words(message: str, has_client_cert: bool) -> tuple[str, str]:
    """(what happened, fix) for an SSLError that is not a certificate verification failure."""
    m = message.lower()
    if "wrong version number" in m or "record layer failure" in m or "packet length too long" in m or "http request" in m:
        return ("the port does not speak TLS (its answer is no TLS record)", "use mqtt:// for this port, or the broker's TLS port (8883)")
    if "certificate required" in m or ("handshake failure" in m and not has_client_cert):
        return ("the broker requires a client certificate", "give --cert and --key (a certificate from the plant's CA)")
    if "unknown ca" in m or "bad certificate" in m or "certificate unknown" in m:
        return (
            "the broker refused this client's certificate (not signed by a CA it trusts, or not for client use)",
            "use a client certificate issued by the CA in the broker's cafile, with extendedKeyUsage clientAuth",
        )
    if "expired" in m and "certificate" in m:
        return ("the broker refused this client's certificate: it has expired", "renew the client certificate given by --cert")
    if "unsupported protocol" in m or "protocol version" in m or "no protocols available" in m:
        return (
            "the broker and this client share no TLS version (this client offers TLS 1.2 and 1.3)",
            "enable TLS 1.2 or 1.3 on the broker",
        )
    if "eof" in m or "reset" in m:
        return (
            "the broker closed the connection during the TLS handshake",
            "the broker's log says why: usually a client certificate it requires or refuses (--cert/--key), or no TLS version in common",
        )
    return (f"the TLS handshake failed: {message}", "the broker's log says why; compare its TLS settings with --ca/--cert/--key")


#: MQTT 3.1.1 CONNACK return codes.
CONNACK_311 = {
    1: "the broker does not accept MQTT 3.1.1 (unacceptable protocol version)",
    2: "the client id was rejected (identifier rejected)",
    3: "the broker is unavailable (server unavailable)",
    4: "bad user name or password",
    5: "not authorized",
}
#: MQTT 5 reason codes (CONNACK, PUBACK, SUBACK, DISCONNECT), as the specification names them.
REASONS_5 = {
    0x00: "success",
    0x01: "granted QoS 1",
    0x02: "granted QoS 2",
    0x10: "no matching subscribers",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}


def reason_words(version: int, code: int) -> str:
    if version == MQTT_311:
        return CONNACK_311.get(code, f"return code {code}")
    return f"{REASONS_5.get(code, 'unknown reason')} (0x{code:02X})"


def connack_check(version: int, code: int, identity: Identity) -> Check:
    """The authentication step from CONNACK's return (3.1.1) or reason (5) code."""
    who = f"user {identity.username!r}" if identity.username else "anonymous (no --username)"
    facts = {"version": VERSION_NAMES[version], "code": code}
    if code == 0:
        return passed("authentication", f"accepted as {who}, client id {identity.client_id!r}", **facts)
    words = reason_words(version, code)
    bad_login = (version, code) in ((MQTT_311, 4), (MQTT_5, 0x86))
    not_authorized = (version, code) in ((MQTT_311, 5), (MQTT_5, 0x87))
    if bad_login or (not_authorized and identity.username):
        fix = (
            "check --username and the first line of --password-file against the broker's password file "
            "(the node's credentials Secret); a rotated Secret takes effect when the broker reloads"
        )
    elif not_authorized:
        fix = "the broker refuses anonymous clients: give --username and --password-file (or --cert/--key if it maps certificates to users)"
    elif (version, code) in ((MQTT_311, 2), (MQTT_5, 0x85)):
        fix = "the broker restricts client ids (length, characters, or a pattern per user): give --client-id as the node's firmware uses it"
    elif (version, code) in ((MQTT_311, 1), (MQTT_5, 0x84)):
        fix = "use --mqtt-version 3.1.1" if version == MQTT_5 else "use --mqtt-version 5"
    elif (version, code) in ((MQTT_311, 3), (MQTT_5, 0x88), (MQTT_5, 0x89)):
        fix = "the broker is up but not serving: look at its log (storage, a bridge, a plugin)"
    elif version == MQTT_5 and code == 0x8A:
        fix = "the broker bans this client (a ban list or too many failed logins): ask its operator"
    else:
        fix = "look at the broker's log for this client id"
    why = ""
    if not_authorized and identity.username:
        why = ": the password is wrong, or this user may not connect (mosquitto answers a wrong password so)"
    return failed("authentication", f"the broker refused the connection: {words}{why}", fix, **facts)


def verdict(checks: Sequence[Check]) -> str:
    """One line: all good, or the first failure (the others often follow from it) and how many there are."""
    fails = [c for c in checks if c.outcome is Outcome.FAIL]
    warns = [c for c in checks if c.outcome is Outcome.WARN]
    if fails:
        more = f" (and {len(fails) - 1} more failure{'s' if len(fails) > 2 else ''})" if len(fails) > 1 else ""
        return f"NOT OK: {fails[0].name}: {fails[0].detail}{more}. Fix: {fails[0].fix}"
    if warns:
        return f"OK with {len(warns)} warning{'s' if len(warns) > 1 else ''}: {warns[0].name}: {warns[0].detail}"
    return "OK: the broker is reachable, secure and lets this identity do what it should, and only that"


def render(url: str, checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"plantwatch doctor {url}"]
    for c in checks:
        lines.append(f"  {SYMBOLS[c.outcome]} {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"    {'':<{width}}  fix: {c.fix}")
    lines.append(verdict(checks))
    return "\n".join(lines)


def as_json(url: str, checks: Sequence[Check]) -> dict:
    return {
        "url": url,
        "ok": all(c.ok for c in checks),
        "verdict": verdict(checks),
        "checks": [{**asdict(c), "outcome": str(c.outcome), "ok": c.ok} for c in checks],
    }


# ---------------------------------------------------------------- MQTT packets (pure)

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT = 1, 2, 3, 4, 8, 9, 14


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); IndexError when `data` ends inside it."""
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ValueError("variable length integer longer than 4 bytes")


def _str(s: str) -> bytes:
    data = s.encode()
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(version: int, identity: Identity, keepalive: int = 30) -> bytes:
    flags = 0x02 | (0x80 if identity.username else 0) | (0x40 if identity.password is not None else 0)
    body = _str("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == MQTT_5:
        body += _varint(0)
    body += _str(identity.client_id)
    if identity.username:
        body += _str(identity.username)
    if identity.password is not None:
        body += _str(identity.password)
    return _packet(CONNECT << 4, body)


def subscribe_packet(version: int, packet_id: int, topics: Sequence[str]) -> bytes:
    body = struct.pack("!H", packet_id) + (_varint(0) if version == MQTT_5 else b"")
    return _packet(SUBSCRIBE << 4 | 0x02, body + b"".join(_str(t) + b"\x01" for t in topics))


def publish_packet(version: int, packet_id: int, topic: str, payload: bytes) -> bytes:
    body = _str(topic) + struct.pack("!H", packet_id) + (_varint(0) if version == MQTT_5 else b"")
    return _packet(PUBLISH << 4 | 0x02, body + payload)


DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


class Packet(NamedTuple):
    type: int
    flags: int
    body: bytes
    #: time.monotonic() when it was read.
    at: float


def split_packets(buf: bytearray, at: float) -> list[Packet]:
    """Every complete packet at the start of `buf`, removed from it."""
    out: list[Packet] = []
    while len(buf) >= 2:
        try:
            length, start = _read_varint(buf, 1)
        except IndexError:
            break
        if start + length > len(buf):
            break
        out.append(Packet(buf[0] >> 4, buf[0] & 0x0F, bytes(buf[start : start + length]), at))
        del buf[: start + length]
    return out


def connack_code(body: bytes) -> int:
    """The return/reason code of a CONNACK (a 3.1.1 broker answers a v5 CONNECT with a 3.1.1 CONNACK: same place)."""
    return body[1]


def suback_codes(version: int, body: bytes) -> list[int]:
    pos = 2
    if version == MQTT_5:
        length, pos = _read_varint(body, pos)
        pos += length
    return list(body[pos:])


def puback_of(body: bytes) -> tuple[int, int]:
    """(packet id, reason code); a PUBACK of two bytes is success (3.1.1, or 5 with nothing to say)."""
    return struct.unpack("!H", body[:2])[0], body[2] if len(body) > 2 else 0


def publish_of(version: int, flags: int, body: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id or 0, payload)."""
    tlen = struct.unpack("!H", body[:2])[0]
    topic = body[2 : 2 + tlen].decode("utf-8", "replace")
    pos, packet_id = 2 + tlen, 0
    if (flags >> 1) & 3:
        packet_id = struct.unpack("!H", body[pos : pos + 2])[0]
        pos += 2
    if version == MQTT_5:
        length, pos = _read_varint(body, pos)
        pos += length
    return topic, packet_id, body[pos:]


def looks_like_tls(data: bytes) -> bool:
    """A TLS record (handshake or alert) where MQTT was expected: a TLS listener answering plain MQTT."""
    return len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 0x03


# ---------------------------------------------------------------- I/O


def resolve(target: Target) -> list[tuple]:
    """getaddrinfo's (family, sockaddr) for each address of the host, in the order the system prefers."""
    seen, out = set(), []
    for family, _, _, _, sockaddr in socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM):
        if sockaddr[0] not in seen:
            seen.add(sockaddr[0])
            out.append((family, sockaddr))
    return out


def tcp_connect(addresses: Sequence[tuple], timeout: float) -> tuple[socket.socket | None, list[tuple[str, str]]]:
    """The first address that accepts, and (address, errno name) for each that did not before it."""
    errors: list[tuple[str, str]] = []
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock, errors
        except TimeoutError:
            errors.append((sockaddr[0], "ETIMEDOUT"))
        except OSError as exc:
            errors.append((sockaddr[0], errno.errorcode.get(exc.errno or 0, str(exc))))
        sock.close()
    return None, errors


def tls_context(options: Options, verify: bool = True, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if options.ca:
            ctx.load_verify_locations(cafile=str(options.ca))
        else:
            ctx.load_default_certs()
        ctx.check_hostname = check_hostname
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if options.cert:
        ctx.load_cert_chain(str(options.cert), str(options.key) if options.key else None)
    return ctx


def handshake(sock: socket.socket, ctx: ssl.SSLContext, host: str, timeout: float) -> ssl.SSLSocket:
    """TLS over `sock` (closed on failure); Python sends `host` as SNI only when it is a name, not an IP address."""
    sock.settimeout(timeout)
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


class Session:
    """A blocking MQTT session on a connected socket: packets read into `inbox` with their arrival times.

    QoS 1 publishes it receives are acknowledged at once, as any subscriber must.
    """

    def __init__(self, sock: socket.socket, version: int, name: str):
        self.sock, self.version, self.name = sock, version, name
        self.inbox: list[Packet] = []
        self.closed = False
        #: The first bytes the broker sent (to recognise a TLS answer to plain MQTT).
        self.raw = bytearray()
        self._buf = bytearray()
        self._next_id = 0

    def packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def send(self, data: bytes) -> float:
        self.sock.sendall(data)
        return time.monotonic()

    def _read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLError, ConnectionError):
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        if len(self.raw) < 64:
            self.raw += data[: 64 - len(self.raw)]
        self._buf += data
        for p in split_packets(self._buf, time.monotonic()):
            if p.type == PUBLISH and (p.flags >> 1) & 3 == 1:
                self.sock.sendall(b"\x40\x02" + p.body[2 + struct.unpack("!H", p.body[:2])[0] :][:2])
            self.inbox.append(p)

    def take(self, want: Callable[[Packet], bool]) -> Packet | None:
        for i, p in enumerate(self.inbox):
            if want(p):
                return self.inbox.pop(i)
        return None

    def close(self) -> None:
        try:
            if not self.closed:
                self.sock.sendall(DISCONNECT_PACKET)
        except OSError:
            pass
        self.sock.close()


def wait(sessions: Sequence[Session], done: Callable[[], bool], deadline: float) -> bool:
    """Read from every session until `done()` or the deadline; True when done."""
    while not done():
        live = [s for s in sessions if not s.closed]
        if not live:
            return done()
        ready = [s for s in live if isinstance(s.sock, ssl.SSLSocket) and s.sock.pending()]
        if not ready:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([s.sock for s in live], [], [], left)
            ready = [s for s in live if s.sock in readable]
        for s in ready:
            s._read()
    return True


def expect(session: Session, want: Callable[[Packet], bool], deadline: float, also: Sequence[Session] = ()) -> Packet | None:
    """The first packet of `session` matching `want` (reading `also` meanwhile), None on timeout or close."""
    found: list[Packet] = []

    def done() -> bool:
        if not found:
            p = session.take(want)
            if p is not None:
                found.append(p)
        return bool(found) or session.closed

    wait([session, *also], done, deadline)
    return found[0] if found else None


# ---------------------------------------------------------------- the steps


def plan(options: Options) -> list[str]:
    """The checks this run makes, in order."""
    names = ["dns", "tcp"]
    if options.target.tls:
        names += ["tls", "certificate", "expiry", "hostname"]
    names += ["mqtt", "authentication"]
    if options.observer:
        names.append("observer")
    names += ["subscribe", "own topic", "round trip"]
    if options.forbidden_topic:
        names.append("forbidden topic")
    return names


def _not_run(options: Options, checks: list[Check], why: str) -> list[Check]:
    done = {c.name for c in checks}
    return checks + [skipped(n, f"not run: {why}") for n in plan(options) if n not in done]


def _peer_certificate(ssock: ssl.SSLSocket) -> x509.Certificate:
    return x509.load_der_x509_certificate(ssock.getpeercert(binary_form=True))


def _inspect(
    connect: Callable[[], socket.socket], options: Options, check_hostname: bool | None
) -> tuple[x509.Certificate | None, str, int | None]:
    """Another handshake, to see what a failed one hid: (the broker's certificate, protocol and cipher, verify code).

    check_hostname None: no verification at all (only to read the certificate); else verified
    with or without the hostname, the verify code of a failure returned (None: it verified).
    """
    try:
        ctx = tls_context(options, verify=check_hostname is not None, check_hostname=bool(check_hostname))
        with handshake(connect(), ctx, options.target.host, options.timeout) as s:
            cipher = s.cipher()
            return _peer_certificate(s), f"{s.version()}, {cipher[0] if cipher else '?'}", None
    except ssl.SSLCertVerificationError as exc:
        return None, "", exc.verify_code
    except (OSError, ssl.SSLError):
        return None, "", -1


def _speaks_plain_mqtt(connect: Callable[[], socket.socket], options: Options) -> bool:
    try:
        session = Session(connect(), options.version, "probe")
    except OSError:
        return False
    try:
        session.send(connect_packet(options.version, Identity(client_id=f"plantwatch-doctor-probe-{uuid.uuid4().hex[:6]}")))
        p = expect(session, lambda p: True, time.monotonic() + options.timeout)
        return p is not None and p.type == CONNACK and not looks_like_tls(bytes(session.raw))
    except OSError:
        return False
    finally:
        session.close()


def _speaks_tls(connect: Callable[[], socket.socket], options: Options) -> bool:
    return _inspect(connect, options, None)[0] is not None


def tls_step(
    sock: socket.socket, connect: Callable[[], socket.socket], options: Options, now: datetime.datetime
) -> tuple[list[Check], ssl.SSLSocket | None]:
    """The handshake, verified as every client must; a failure is taken apart with further handshakes."""
    t = options.target
    try:
        ctx = tls_context(options)
    except (OSError, ssl.SSLError) as exc:
        return [
            failed(
                "tls",
                f"cannot load the TLS files: {exc}",
                "check --ca, --cert and --key: PEM files this user can read, the key matching the certificate",
            )
        ], None
    try:
        ssock = handshake(sock, ctx, t.host, options.timeout)
    except ssl.SSLCertVerificationError as exc:
        return _verification_failure(connect, options, exc, now), None
    except TimeoutError:
        return [
            failed(
                "tls",
                f"no TLS answer within {options.timeout:g} s",
                "the port accepts connections but does not answer a TLS handshake: is it an MQTT TLS port?",
            )
        ], None
    except (ssl.SSLError, OSError) as exc:
        words, fix = tls_failure_words(str(exc), options.cert is not None)
        if _speaks_plain_mqtt(connect, options):
            words, fix = (
                "the port speaks plain MQTT, not TLS (a plain CONNECT gets a CONNACK)",
                f"use mqtt://{t.address} (unencrypted), or the broker's TLS listener (usually port 8883)",
            )
        return [failed("tls", words, fix, error=str(exc))], None
    cipher = ssock.cipher()
    cert = _peer_certificate(ssock)
    return [
        passed("tls", f"{ssock.version()}, {cipher[0] if cipher else '?'}", protocol=ssock.version(), cipher=cipher[0] if cipher else None),
        chain_check(cert, options.ca, None),
        expiry_check(cert, now),
        hostname_check(t.host, cert),
    ], ssock


def _verification_failure(
    connect: Callable[[], socket.socket], options: Options, exc: ssl.SSLCertVerificationError, now: datetime.datetime
) -> list[Check]:
    cert, protocol, _ = _inspect(connect, options, None)
    if cert is None:
        return [
            failed("tls", f"the broker's certificate failed verification: {exc.verify_message}", "check --ca and the broker's certificate")
        ]
    _, _, chain_code = _inspect(connect, options, False)
    checks = [
        chain_check(cert, options.ca, exc.verify_code if exc.verify_code in UNTRUSTED_CODES else chain_code, exc.verify_message),
        expiry_check(cert, now),
        hostname_check(options.target.host, cert),
    ]
    explained = any(c.outcome is Outcome.FAIL for c in checks)
    tls = (
        passed("tls", f"{protocol} (the certificate did not verify: see below)", protocol=protocol)
        if explained
        else failed(
            "tls",
            f"the broker's certificate failed verification: {exc.verify_message}",
            "reissue the broker's certificate for server use from the plant's CA",
        )
    )
    return [tls, *checks]


def mqtt_connect(
    sock: socket.socket, connect: Callable[[], socket.socket], options: Options, identity: Identity, name: str
) -> tuple[Session | None, list[Check]]:
    """CONNECT and its CONNACK: the `mqtt` check (the broker speaks MQTT) and the `authentication` check."""
    t = options.target
    session = Session(sock, options.version, name)
    try:
        sent = session.send(connect_packet(options.version, identity))
        p = expect(session, lambda p: True, sent + options.timeout)
    except OSError as exc:
        p, session.closed = None, True
        session.raw += str(exc).encode()
    if p is None or p.type != CONNACK or looks_like_tls(bytes(session.raw)):
        session.close()
        if not t.tls and (looks_like_tls(bytes(session.raw)) or session.closed) and _speaks_tls(connect, options):
            return None, [
                failed(
                    "mqtt",
                    "the port speaks TLS: it closed a plain MQTT connection, and a TLS handshake with it succeeds",
                    f"use mqtts://{t.address} (with --ca for the plant's CA)",
                )
            ]
        if p is None and not session.closed:
            return None, [
                failed(
                    "mqtt",
                    f"no CONNACK within {options.timeout:g} s",
                    "the port accepts connections but does not answer MQTT: is it the broker's MQTT port?",
                )
            ]
        if p is None:
            return None, [
                failed(
                    "mqtt",
                    "the broker closed the connection without a CONNACK",
                    "the broker's log says why (a client id in use and refused, a connection limit, or a protocol it does not accept)",
                )
            ]
        return None, [
            failed(
                "mqtt",
                f"the answer is not MQTT (first bytes {bytes(session.raw[:8]).hex(' ')})",
                "is this the broker's MQTT port, not HTTP or another service?",
            )
        ]
    code = connack_code(p.body) if len(p.body) >= 2 else 0x80
    spoken = VERSION_NAMES[options.version]
    if len(p.body) == 2 and options.version == MQTT_5 and code == 1:
        session.close()
        return None, [
            failed("mqtt", "the broker speaks MQTT 3.1.1, not 5 (CONNACK: unacceptable protocol version)", "use --mqtt-version 3.1.1")
        ]
    checks = [
        passed(
            "mqtt",
            f"the broker answered CONNECT (MQTT {spoken}) with CONNACK in {(p.at - sent) * 1000:.1f} ms",
            connack_ms=round((p.at - sent) * 1000, 2),
        )
    ]
    auth = connack_check(options.version, code, identity)
    if not auth.ok:
        session.close()
        return None, [*checks, auth]
    return session, [*checks, auth]


def _acl_fix(identity: Identity, topic: str, allow: bool) -> str:
    user = identity.username or "(anonymous)"
    if allow:
        return (
            f"let {user} write {topic} in the broker's ACL (mosquitto acl_file: `user {user}` then `topic write {topic}`; "
            "the operator renders it from the SensorNode), or give --topic as this node's own data topic"
        )
    return (
        f"restrict {user} to its own topics in the broker's ACL: no `topic write` or `pattern write` for {user} may match {topic} "
        "(look for `#`, `+` and %u/%c patterns)"
    )


def probe(client: Session, reader: Session, options: Options) -> list[Check]:
    """Subscription, publish to the own topic (round trip), publish to the forbidden topic (ACL)."""
    ident, topic, forbidden, v = options.identity, options.topic, options.forbidden_topic, options.version
    others = [reader] if reader is not client else []
    both = [client, *others]
    who = "the observer" if others else "this client"
    checks: list[Check] = []

    def deadline() -> float:
        return time.monotonic() + options.timeout

    pid = reader.packet_id()
    wanted = [topic] + ([forbidden] if forbidden else [])
    reader.send(subscribe_packet(v, pid, wanted))
    ack = expect(reader, lambda p: p.type == SUBACK and p.body[:2] == struct.pack("!H", pid), deadline())
    codes = suback_codes(v, ack.body) if ack else []
    granted = {t: c < 0x80 for t, c in zip(wanted, codes)}
    reads_topic, reads_forbidden = granted.get(topic, False), granted.get(forbidden, False) if forbidden else False
    hint = "give --observer-username and --observer-password-file of an identity that may read it (the gateway's)"
    if ack is None:
        checks.append(failed("subscribe", f"{who} got no SUBACK within {options.timeout:g} s", "look at the broker's log for this client"))
    elif reads_topic:
        extra = f" and {forbidden}" if reads_forbidden else ""
        checks.append(passed("subscribe", f"{who} subscribed to {topic}{extra}", codes=codes))
    elif others:
        checks.append(
            failed(
                "subscribe",
                f"the observer may not read {topic} (SUBACK {reason_words(v, codes[0]) if v == MQTT_5 else 'failure'})",
                hint,
                codes=codes,
            )
        )
    else:
        checks.append(
            skipped(
                "subscribe",
                f"this client may not read {topic} (a node reads only its command topic): no round trip without a reader; {hint}",
                codes=codes,
            )
        )

    payload = f"plantwatch doctor {uuid.uuid4().hex}".encode()
    pid = client.packet_id()
    sent = client.send(publish_packet(v, pid, topic, payload))
    puback = expect(client, lambda p: p.type == PUBACK and puback_of(p.body)[0] == pid, sent + options.timeout, also=others)
    delivered = None
    if puback is not None and reads_topic:
        delivered = expect(
            reader,
            lambda p: p.type == PUBLISH and publish_of(v, p.flags, p.body)[2] == payload,
            sent + options.timeout,
            also=[client] if others else [],
        )
    reason = puback_of(puback.body)[1] if puback else None
    facts = {"puback_ms": round((puback.at - sent) * 1000, 2)} if puback else {}
    if client.closed:
        own = failed(
            "own topic",
            f"the broker closed the connection on the publish to {topic} (its way of refusing it)",
            _acl_fix(ident, topic, True),
        )
    elif puback is None:
        own = failed(
            "own topic",
            f"no PUBACK for the publish to {topic} within {options.timeout:g} s",
            "look at the broker's log for this client",
            **facts,
        )
    elif reason is not None and reason >= 0x80:
        own = failed(
            "own topic",
            f"the broker refused the publish to {topic}: {reason_words(v, reason)}",
            _acl_fix(ident, topic, True),
            reason=reason,
            **facts,
        )
    elif delivered is not None:
        own = passed("own topic", f"may publish to {topic}: acknowledged and delivered to {who}", **facts)
    elif v == MQTT_5:
        own = passed(
            "own topic",
            f"may publish to {topic}: PUBACK {reason_words(v, reason or 0)} (an MQTT 5 broker refuses a denied publish in its PUBACK)",
            **facts,
        )
    elif others:
        own = failed(
            "own topic",
            f"the publish to {topic} was acknowledged but never reached the observer: an MQTT 3.1.1 broker acknowledges "
            "a publish its ACL denies, then drops it (or the observer may not read it)",
            _acl_fix(ident, topic, True) + "; and check that the observer may read it",
            **facts,
        )
    else:
        own = skipped(
            "own topic",
            f"PUBACK for {topic}, which an MQTT 3.1.1 broker sends even for a publish its ACL drops; it did not come back to "
            f"this client, which may not read it either, so nothing tells whether it was delivered: {hint}, or use --mqtt-version 5",
            **facts,
        )
    checks.append(own)
    if delivered is not None:
        latency = (delivered.at - sent) * 1000
        checks.append(
            passed(
                "round trip",
                f"{latency:.1f} ms from publish to delivery (PUBACK after {facts['puback_ms']:.1f} ms)",
                latency_ms=round(latency, 2),
                **facts,
            )
        )
    elif own.outcome is Outcome.FAIL:
        checks.append(skipped("round trip", "not run: the publish to the own topic failed"))
    elif others:
        checks.append(
            failed(
                "round trip",
                f"the observer got nothing on {topic} within {options.timeout:g} s (PUBACK after {facts['puback_ms']:.1f} ms)",
                f"give an observer that may read {topic}: a broker grants a subscription and still filters each message by its ACL",
                **facts,
            )
        )
    else:
        checks.append(
            skipped(
                "round trip",
                f"PUBACK after {facts['puback_ms']:.1f} ms; nothing came back to this client (it may not read {topic}, "
                f"as a node may read only its command topic): {hint}",
                **facts,
            )
        )

    if forbidden and not client.closed:
        checks.append(_forbidden(client, reader, options, reads_topic and reads_forbidden and delivered is not None, both))
    return checks


def _forbidden(client: Session, reader: Session, options: Options, fenced: bool, both: list[Session]) -> Check:
    """Publish to the forbidden topic; with a reader of both topics, a later own-topic publish fences the verdict."""
    ident, topic, forbidden, v = options.identity, options.topic, options.forbidden_topic or "", options.version
    others = [s for s in both if s is not client]
    payload = f"plantwatch doctor {uuid.uuid4().hex}".encode()
    pid = client.packet_id()
    sent = client.send(publish_packet(v, pid, forbidden, payload))
    puback = expect(client, lambda p: p.type == PUBACK and puback_of(p.body)[0] == pid, sent + options.timeout, also=others)
    reason = puback_of(puback.body)[1] if puback else None
    fence_arrived = False
    if fenced and not client.closed:
        fence = f"plantwatch doctor fence {uuid.uuid4().hex}".encode()
        client.send(publish_packet(v, client.packet_id(), topic, fence))
        fence_arrived = (
            expect(
                reader,
                lambda p: p.type == PUBLISH and publish_of(v, p.flags, p.body)[2] == fence,
                time.monotonic() + options.timeout,
                also=[c for c in both if c is not reader],
            )
            is not None
        )
    leaked = reader.take(lambda p: p.type == PUBLISH and publish_of(v, p.flags, p.body)[2] == payload)
    facts = {"reason": reason} if reason is not None else {}
    if leaked is not None:
        return failed(
            "forbidden topic",
            f"may publish to {forbidden}: the broker delivered it, so this identity can write another node's topic",
            _acl_fix(ident, forbidden, False),
            **facts,
        )
    if reason is not None and reason >= 0x80:
        return passed("forbidden topic", f"refused the publish to {forbidden}: {reason_words(v, reason)}", **facts)
    if client.closed:
        return passed(
            "forbidden topic", f"the broker closed the connection on the publish to {forbidden} (its way of refusing it)", **facts
        )
    if fence_arrived:
        how = "dropped after its PUBACK, as an MQTT 3.1.1 broker drops what its ACL denies" if v == MQTT_311 else "not delivered"
        return passed(
            "forbidden topic",
            f"refused the publish to {forbidden}: {how} (a client subscribed to it did not get it before a later message on {topic})",
            **facts,
        )
    if puback is None:
        return failed(
            "forbidden topic",
            f"no PUBACK for the publish to {forbidden} within {options.timeout:g} s",
            "look at the broker's log for this client",
        )
    if v == MQTT_5:
        return failed(
            "forbidden topic",
            f"the broker accepted the publish to {forbidden} (PUBACK {reason_words(v, reason or 0)})",
            _acl_fix(ident, forbidden, False),
            **facts,
        )
    return skipped(
        "forbidden topic",
        f"cannot tell: an MQTT 3.1.1 broker acknowledges a publish its ACL denies and drops it silently, so only a reader of {forbidden} "
        "could see whether it went through; give --observer-username/--observer-password-file of an identity that may read both topics, "
        "or use --mqtt-version 5 (its PUBACK carries the refusal)",
        **facts,
    )


def diagnose(options: Options, now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> list[Check]:
    """Every check of `plan(options)`, in order; what a failed step stops is listed as not run."""
    t = options.target
    checks: list[Check] = []
    try:
        addresses = resolve(t)
    except (socket.gaierror, UnicodeError) as exc:
        checks.append(
            failed(
                "dns",
                f"{t.host} does not resolve: {getattr(exc, 'strerror', None) or exc}",
                "check the name's spelling, this machine's DNS server (/etc/resolv.conf) and /etc/hosts; an IP address needs no DNS",
            )
        )
        return _not_run(options, checks, "the name does not resolve")
    listed = [a[1][0] for a in addresses]
    checks.append(passed("dns", f"{t.host} is {', '.join(listed)}", addresses=listed))

    sock, errors = tcp_connect(addresses, options.timeout)
    if sock is None:
        check = tcp_failure(t, errors[0][1], options.timeout)
        checks.append(Check(check.name, check.outcome, check.detail, check.fix, {"errors": dict(errors)}))
        return _not_run(options, checks, f"nothing answers on {t.address}")
    peer = sock.getpeername()[0]
    tried = f" ({'; '.join(f'{a}: {e}' for a, e in errors)} before)" if errors else ""
    checks.append(passed("tcp", f"connected to {peer} port {t.port}{tried}", address=peer, errors=dict(errors)))

    def connect() -> socket.socket:
        s, errs = tcp_connect(addresses, options.timeout)
        if s is None:
            raise ConnectionError(errs)
        return s

    if t.tls:
        tls_checks, tls_sock = tls_step(sock, connect, options, now())
        checks += tls_checks
        if tls_sock is None:
            return _not_run(options, checks, "no verified TLS connection (a password is never sent to an unverified broker)")
        sock = tls_sock

    def open_session(identity: Identity, name: str) -> tuple[Session | None, list[Check]]:
        s = connect()
        if t.tls:
            s = handshake(s, tls_context(options), t.host, options.timeout)
        return mqtt_connect(s, connect, options, identity, name)

    client, connected = mqtt_connect(sock, connect, options, options.identity, "client")
    checks += connected
    if client is None:
        return _not_run(options, checks, "the broker did not accept the connection")
    reader = client
    try:
        if options.observer:
            try:
                observer, said = open_session(options.observer, "observer")
            except (OSError, ssl.SSLError) as exc:
                observer, said = None, [failed("mqtt", f"could not connect: {exc}", "see the checks of this client above")]
            if observer is None:
                bad = next(c for c in said if not c.ok)
                checks.append(
                    failed("observer", f"the observer {options.observer.username!r} was not accepted: {bad.detail}", bad.fix or "")
                )
            else:
                checks.append(passed("observer", f"connected as {options.observer.username!r} to read the probes"))
                reader = observer
        checks += probe(client, reader, options)
    except OSError as exc:
        checks.append(failed("connection", f"lost during the probes: {exc}", "the broker's log says why it closed the connection"))
    finally:
        client.close()
        if reader is not client:
            reader.close()
    return _not_run(options, checks, "the connection was closed")


def options(
    url: str,
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    username: str | None = None,
    password_file: str | None = None,
    client_id: str | None = None,
    topic: str | None = None,
    forbidden_topic: str | None = None,
    observer_username: str | None = None,
    observer_password_file: str | None = None,
    timeout: float = 5.0,
    mqtt_version: str = "5",
) -> Options:
    """What the command line asks, checked; ValueError naming the flag and what it accepts."""
    target = parse_target(url)
    if key and not cert:
        raise ValueError("--key needs --cert (the client certificate the key belongs to)")
    if not target.tls and (ca or cert):
        raise ValueError(f"--ca/--cert are for TLS: use mqtts://{target.address}")
    for flag, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if path and not os.path.isfile(path):
            raise ValueError(f"{flag} {path}: no such file")
    if password_file and not username:
        raise ValueError("--password-file needs --username")
    if observer_password_file and not observer_username:
        raise ValueError("--observer-password-file needs --observer-username")
    version = {"5": MQTT_5, "3.1.1": MQTT_311}.get(mqtt_version)
    if version is None:
        raise ValueError(f"--mqtt-version {mqtt_version!r}: expected 5 or 3.1.1")
    client_id = client_id or f"plantwatch-doctor-{uuid.uuid4().hex[:8]}"
    observer = None
    if observer_username:
        observer = Identity(
            observer_username, read_password(Path(observer_password_file)) if observer_password_file else None, f"{client_id}-observer"
        )
    return Options(
        target=target,
        identity=Identity(username, read_password(Path(password_file)) if password_file else None, client_id),
        ca=Path(ca) if ca else None,
        cert=Path(cert) if cert else None,
        key=Path(key) if key else None,
        topic=topic or f"plantwatch/doctor/{client_id}",
        forbidden_topic=forbidden_topic,
        observer=observer,
        timeout=timeout,
        version=version,
    )


def report(url: str, checks: Sequence[Check], as_json_output: bool) -> tuple[str, int]:
    """The printed report and the exit status: 0 when nothing failed (warnings included), 1 otherwise."""
    text = json.dumps(as_json(url, checks), indent=2, ensure_ascii=False) if as_json_output else render(url, checks)
    return text + "\n", 0 if all(c.ok for c in checks) else 1
