"""The doctor's pure parts: URLs, words for codes and errors, certificate checks, the verdict, the packets."""

from __future__ import annotations

import datetime
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plantwatch.mqtt import doctor as d

NOW = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)


def certificate(days_left: float, sans: list[x509.GeneralName] | None = None, cn: str = "broker") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plant CA")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=30))
        .not_valid_after(NOW + datetime.timedelta(days=days_left))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("mqtts://broker.plant", d.Target("broker.plant", 8883, True)),
        ("mqtt://broker.plant", d.Target("broker.plant", 1883, False)),
        ("broker.plant:1884", d.Target("broker.plant", 1884, False)),
        ("ssl://10.0.0.5:9883", d.Target("10.0.0.5", 9883, True)),
        ("mqtts://[::1]:8883", d.Target("::1", 8883, True)),
    ],
)
def test_urls(url, target):
    assert d.parse_target(url) == target


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://broker", "scheme must be mqtt:// (plain) or mqtts:// (TLS)"),
        ("mqtts://node:secret@broker", "give no credentials in the URL"),
        ("mqtts://broker:99999", "out of range"),
        ("mqtts://:8883", "no host"),
    ],
)
def test_bad_urls_say_what_is_accepted(url, said):
    with pytest.raises(ValueError, match=re.escape(said)) as caught:
        d.parse_target(url)
    assert "secret" not in str(caught.value)


def test_connack_codes_in_words_with_fixes():
    node = d.Identity("node-a", "pw", "doc")
    anonymous = d.Identity(None, None, "doc")
    bad = d.connack_check(d.MQTT_311, 4, node)
    assert not bad.ok and bad.detail == "the broker refused the connection: bad user name or password" and "--password-file" in bad.fix
    assert "bad user name or password (0x86)" in d.connack_check(d.MQTT_5, 0x86, node).detail
    assert "give --username and --password-file" in d.connack_check(d.MQTT_5, 0x87, anonymous).fix
    assert "the password is wrong" in d.connack_check(d.MQTT_311, 5, node).detail
    assert "--client-id" in d.connack_check(d.MQTT_5, 0x85, node).fix
    assert d.connack_check(d.MQTT_5, 0x84, node).fix == "use --mqtt-version 3.1.1"
    assert "banned (0x8A)" in d.connack_check(d.MQTT_5, 0x8A, node).detail
    good = d.connack_check(d.MQTT_5, 0, node)
    assert good.ok and good.fix is None and "user 'node-a'" in good.detail


def test_expiry_warns_under_30_days_and_fails_once_expired():
    assert d.expiry_check(certificate(90), NOW).outcome is d.Outcome.PASS
    soon = d.expiry_check(certificate(10), NOW)
    assert soon.outcome is d.Outcome.WARN and soon.ok and soon.facts["days_left"] == 10 and "renew" in soon.fix
    gone = d.expiry_check(certificate(-3), NOW)
    assert gone.outcome is d.Outcome.FAIL and "expired on 2026-02-26 (3 days ago)" in gone.detail
    early = d.expiry_check(certificate(10), NOW - datetime.timedelta(days=31))
    assert early.outcome is d.Outcome.FAIL and "clocks" in early.fix


def test_hostnames_as_tls_clients_match_them():
    assert d.host_matches("broker.plant", ["broker.plant"])
    assert d.host_matches("Broker.Plant.", ["broker.plant"])
    assert d.host_matches("a.plant", ["*.plant"])
    assert not d.host_matches("a.b.plant", ["*.plant"])
    assert not d.host_matches("plant", ["*.plant"])
    assert d.host_matches("127.0.0.1", ["127.0.0.1", "localhost"])
    assert not d.host_matches("127.0.0.1", ["localhost"])
    assert d.host_matches("::1", ["0:0:0:0:0:0:0:1"])
    cert = certificate(90, [x509.DNSName("broker.plant")])
    assert d.hostname_check("broker.plant", cert).ok
    wrong = d.hostname_check("10.0.0.5", cert)
    assert not wrong.ok and wrong.detail == "the certificate is for broker.plant, not 10.0.0.5"
    nameless = d.hostname_check("broker", certificate(90))
    assert not nameless.ok and "no subjectAltName" in nameless.detail


def test_an_untrusted_chain_names_the_signer_and_the_ca_file(tmp_path):
    cert = certificate(90)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"")
    check = d.chain_check(cert, ca, 20, "unable to get local issuer certificate")
    assert not check.ok and f"signed by CN=plant CA, which is not in the CA file {ca}" in check.detail and "--ca" in check.fix
    assert "system's trusted CAs" in d.chain_check(cert, None, 20).detail
    assert d.chain_check(cert, ca, None).ok
    assert d.chain_check(cert, ca, 10).ok  # expired, but chained: the expiry check says so


@pytest.mark.parametrize(
    ("error", "words"),
    [
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "does not speak TLS"),
        ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required", "requires a client certificate"),
        ("[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca", "refused this client's certificate"),
        ("[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol", "closed the connection during the TLS handshake"),
        ("[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol", "share no TLS version"),
    ],
)
def test_tls_errors_in_words(error, words):
    said, fix = d.tls_failure_words(error, has_client_cert=True)
    assert words in said and fix


def test_tcp_failures():
    target = d.Target("broker.plant", 8883, True)
    assert "nothing listens on broker.plant:8883" in d.tcp_failure(target, "ECONNREFUSED", 5).detail
    slow = d.tcp_failure(target, "ETIMEDOUT", 5)
    assert slow.detail == "no answer from broker.plant:8883 within 5 s" and "firewall" in slow.fix
    assert "no route" in d.tcp_failure(target, "EHOSTUNREACH", 5).fix


def test_verdict_names_the_first_failure_and_counts_the_rest():
    good = d.passed("dns", "ok")
    warn = d.Check("expiry", d.Outcome.WARN, "expires soon", "renew")
    fail = d.failed("tcp", "refused", "start it")
    assert d.verdict([good]).startswith("OK:")
    assert d.verdict([good, warn]) == "OK with 1 warning: expiry: expires soon"
    assert d.verdict([good, fail, d.failed("tls", "x", "y")]) == "NOT OK: tcp: refused (and 1 more failure). Fix: start it"
    report = d.as_json("mqtt://x", [good, warn, fail, d.skipped("mqtt", "not run")])
    assert report["ok"] is False and [c["outcome"] for c in report["checks"]] == ["pass", "warn", "fail", "skip"]
    assert [c["ok"] for c in report["checks"]] == [True, True, False, True]
    table = d.render("mqtt://x", [good, fail])
    assert "  ✓ dns  ok" in table and "  ✗ tcp  refused" in table and "fix: start it" in table


def test_packets_round_trip_through_the_parser():
    ident = d.Identity("node-a", "pw", "doc")
    for version in (d.MQTT_311, d.MQTT_5):
        buf = bytearray(d.connect_packet(version, ident) + d.publish_packet(version, 7, "plant/a/data", b"x" * 300) + b"\x20")
        packets = d.split_packets(buf, 1.0)
        assert [p.type for p in packets] == [d.CONNECT, d.PUBLISH] and buf == bytearray(b"\x20")
        assert d.publish_of(version, packets[1].flags, packets[1].body) == ("plant/a/data", 7, b"x" * 300)
    assert d.suback_codes(d.MQTT_5, b"\x00\x01\x03\x1f\x00\x00\x01\x87") == [0x01, 0x87]
    assert d.suback_codes(d.MQTT_311, b"\x00\x01\x01\x80") == [0x01, 0x80]
    assert d.puback_of(b"\x00\x05") == (5, 0) and d.puback_of(b"\x00\x05\x87\x00") == (5, 0x87)
    assert d.looks_like_tls(b"\x15\x03\x03\x00\x02\x02\x46") and not d.looks_like_tls(b"\x20\x02\x00\x00")


def test_options_read_the_password_from_its_file_and_check_flags(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("pw-a\r\nignored\n")
    opts = d.options("mqtts://broker", username="node-a", password_file=str(secret), forbidden_topic="plant/b/data")
    assert opts.identity.password == "pw-a" and "pw-a" not in repr(opts)
    assert opts.topic == f"plantwatch/doctor/{opts.identity.client_id}" and opts.version == d.MQTT_5
    secret.write_text("\n")
    with pytest.raises(ValueError, match="the first line is empty"):
        d.options("mqtts://broker", username="node-a", password_file=str(secret))
    with pytest.raises(ValueError, match="--key needs --cert"):
        d.options("mqtts://broker", key=str(secret))
    with pytest.raises(ValueError, match="--ca/--cert are for TLS: use mqtts://broker:1883"):
        d.options("mqtt://broker", ca=str(secret))
    with pytest.raises(ValueError, match="--password-file needs --username"):
        d.options("mqtts://broker", password_file=str(secret))


def test_the_plan_lists_only_what_applies():
    plain = d.Options(d.parse_target("mqtt://b"), d.Identity(client_id="x"), topic="t")
    assert d.plan(plain) == ["dns", "tcp", "mqtt", "authentication", "subscribe", "own topic", "round trip"]
    tls = d.Options(d.parse_target("mqtts://b"), d.Identity(client_id="x"), topic="t", forbidden_topic="f", observer=d.Identity("g"))
    assert d.plan(tls) == [
        *["dns", "tcp", "tls", "certificate", "expiry", "hostname", "mqtt", "authentication"],
        *["observer", "subscribe", "own topic", "round trip", "forbidden topic"],
    ]
