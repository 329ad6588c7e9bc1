"""Connecting our own client (mqtt.subscriber) to a broker: TCP, TLS when the endpoint says so, CONNECT and CONNACK.

What goes wrong is said in words a user can act on. When the broker's certificate does not
verify, one more handshake reads it (verification relaxed for that alone; nothing is sent
over it) to say whom it is for or when it expired. When a broker hangs up without a word,
one more connection finds out whether it speaks the other protocol: TLS behind an mqtt://
URL, plain MQTT behind an mqtts:// one.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid

from plantwatch.mqtt import wire
from plantwatch.mqtt.endpoint import Endpoint, TlsSettings

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME (the ssl module names no constant for it): lets the
#: diagnostic handshake read an expired certificate's dates.
_NO_CHECK_TIME = 0x200000
#: X509_V_ERR_* codes: the certificate does not chain to a trusted CA.
_UNTRUSTED = {2, 18, 19, 20, 21, 27, 28}
_EXPIRED, _NOT_YET_VALID, _HOST_MISMATCH, _IP_MISMATCH = 10, 9, 62, 64
#: Handshake alerts a broker sends when it wants (another) client certificate.
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "UNKNOWN_CA", "BAD_CERTIFICATE")


class BrokerError(ConnectionError):
    """A connection the broker's TLS or protocol did not accept; the message says where, why and what to change."""

    def __init__(self, endpoint: Endpoint, problem: str):
        super().__init__(f"broker {endpoint}: {problem}")
        #: The message without the broker's URL.
        self.problem = problem


def certificate_problem(code: int, message: str, tls: TlsSettings, host: str, peer: dict | None) -> str:
    """Why the broker's certificate did not verify, in words (pure: `peer` is the certificate as ssl decodes it, if read)."""
    if code in _UNTRUSTED:
        fix = "" if tls.ca_file else " (give the plant's CA with --broker-ca FILE)"
        return f"the broker's certificate is not signed by {tls.trust}{fix}"
    if code in (_HOST_MISMATCH, _IP_MISMATCH):
        names = [value for _, value in (peer or {}).get("subjectAltName", ())]
        if not names:
            names = [value for rdn in (peer or {}).get("subject", ()) for key, value in rdn if key == "commonName"]
        said = ", ".join(names) if names else "other names"
        return f"the broker's certificate is for {said}, not {host} (connect by one of its names, or reissue it for {host})"
    if code == _EXPIRED:
        when = f" on {_date(peer['notAfter'])}" if peer and "notAfter" in peer else ""
        return f"the broker's certificate expired{when}"
    if code == _NOT_YET_VALID:
        when = f" until {_date(peer['notBefore'])}" if peer and "notBefore" in peer else " yet"
        return f"the broker's certificate is not valid{when} (is this machine's clock right?)"
    return f"the broker's certificate does not verify: {message}"


def _date(cert_time: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ssl.cert_time_to_seconds(cert_time)))


def open_socket(endpoint: Endpoint, timeout: float = 10.0) -> socket.socket:
    """A connected socket, TLS-wrapped (certificate and host name verified) for an mqtts:// endpoint.

    BrokerError for a certificate that does not verify, a handshake the broker refused, or a
    plain MQTT broker behind an mqtts:// URL; OSError for a broker that cannot be reached.
    """
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if endpoint.tls is None:
        return sock
    try:
        context = endpoint.tls.context()
    except ValueError as exc:
        sock.close()
        raise BrokerError(endpoint, str(exc)) from None
    try:
        return context.wrap_socket(sock, server_hostname=endpoint.host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        problem = certificate_problem(
            exc.verify_code, exc.verify_message, endpoint.tls, endpoint.host, _peer_certificate(endpoint, timeout)
        )
        raise BrokerError(endpoint, problem) from None
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        sock.close()
        raise BrokerError(endpoint, _handshake_problem(endpoint, exc, timeout)) from None


def handshake(endpoint: Endpoint, client_id: str, keepalive: int, clean: bool, timeout: float = 10.0) -> tuple[socket.socket, bytearray]:
    """Connect and present CONNECT; (the socket, whatever came after the CONNACK) once the broker accepted.

    BrokerError or wire.ProtocolError for what the broker refused, said in words; OSError for a
    broker that cannot be reached.
    """
    try:
        username, password = endpoint.credentials()
    except ValueError as exc:
        raise BrokerError(endpoint, str(exc)) from None
    sock = open_socket(endpoint, timeout)
    try:
        sock.sendall(wire.connect(client_id, keepalive, clean, username, password))
        # CONNACK is always 4 bytes; whatever follows it (a persistent session's queued
        # messages may come in the same read) is kept for the receive loop.
        buf = bytearray()
        while len(buf) < 4:
            data = sock.recv(4096)
            if not data:
                raise ConnectionResetError("the broker closed the connection during CONNECT")
            buf += data
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        sock.close()
        if endpoint.tls is not None:  # TLS 1.3: a refused client certificate is only said after the handshake
            raise BrokerError(endpoint, _handshake_problem(endpoint, exc, timeout, after=True)) from None
        if _speaks_tls(endpoint, timeout):
            raise BrokerError(
                endpoint,
                f"{endpoint.host}:{endpoint.port} speaks TLS, not plain MQTT: "
                f"use mqtts://{endpoint.host}:{endpoint.port} (with --broker-ca FILE for the plant's CA)",
            ) from None
        raise wire.ProtocolError(f"the broker closed the connection during CONNECT ({exc.strerror or exc})") from None
    except BaseException:
        sock.close()
        raise
    if buf[0] != wire.CONNACK << 4 or buf[1] != 2:
        sock.close()
        raise wire.ProtocolError(f"expected CONNACK, got packet type {buf[0] >> 4}")
    if buf[3]:
        sock.close()
        raise wire.ProtocolError(f"connection refused: {wire.CONNACK_ERRORS.get(buf[3], buf[3])}")
    return sock, buf[4:]


def diagnose(endpoint: Endpoint, timeout: float = 5.0) -> str | None:
    """Why a client cannot connect to `endpoint`, in words (one connection of our own); None when it can."""
    try:
        sock, _ = handshake(endpoint, f"plantwatch-probe-{uuid.uuid4().hex[:8]}", 5, True, timeout)
    except BrokerError as exc:
        return exc.problem
    except (OSError, wire.ProtocolError) as exc:
        return str(exc)
    try:
        sock.sendall(wire.DISCONNECT_PACKET)
    except OSError:
        pass
    sock.close()
    return None


def _handshake_problem(endpoint: Endpoint, exc: OSError, timeout: float, after: bool = False) -> str:
    """Why a TLS connection failed (`after`: once the handshake was done, before the CONNACK)."""
    reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
    tls = endpoint.tls or TlsSettings()
    if any(alert in str(reason).upper() for alert in _CLIENT_CERT_ALERTS) or (after and tls.cert_file is None):
        if tls.cert_file is None:
            return (
                f"the broker refused the TLS connection ({reason}): does it require a client certificate? "
                "(give one with --broker-cert and --broker-key)"
            )
        return f"the broker refused the TLS connection ({reason}): it does not accept the client certificate {tls.cert_file}"
    if after:  # a client certificate was given: TLS 1.3 brokers refuse one that does not verify by hanging up
        return (
            f"the broker closed the TLS connection before answering CONNECT ({reason}): "
            f"does it accept the client certificate {tls.cert_file}?"
        )
    if _speaks_mqtt(endpoint, timeout):
        return (
            f"{endpoint.host}:{endpoint.port} speaks plain MQTT, not TLS: use mqtt://{endpoint.host}:{endpoint.port}, "
            "or the broker's TLS port (usually 8883)"
        )
    return f"the TLS handshake failed: {reason}"


def _peer_certificate(endpoint: Endpoint, timeout: float) -> dict | None:
    """The broker's certificate as ssl decodes it, host name and dates unchecked (only to describe it); None if unread."""
    try:
        context = (endpoint.tls or TlsSettings()).context()
        context.check_hostname = False
        context.verify_flags |= _NO_CHECK_TIME
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
                return tls.getpeercert()
    except (OSError, ValueError):
        return None


def _speaks_tls(endpoint: Endpoint, timeout: float) -> bool:
    """Whether a TLS handshake succeeds at the endpoint's port (nothing is trusted or sent over it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=endpoint.host):
                return True
    except OSError:
        return False


def _speaks_mqtt(endpoint: Endpoint, timeout: float) -> bool:
    """Whether the endpoint's port answers a plain CONNECT (without credentials) with a CONNACK, accepting or not."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            sock.sendall(wire.connect(f"plantwatch-probe-{uuid.uuid4().hex[:8]}", 5, True))
            answer = sock.recv(4)
            if answer[:1] == bytes([wire.CONNACK << 4]):
                try:
                    sock.sendall(wire.DISCONNECT_PACKET)
                except OSError:
                    pass
                return True
            return False
    except OSError:
        return False
