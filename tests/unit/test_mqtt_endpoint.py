"""Broker endpoints: mqtt:// and mqtts:// URLs, TLS settings, credentials from the URL or a file (never shown).

And why a broker's certificate did not verify, in words.
"""

from __future__ import annotations

import re

import pytest

from plantwatch.mqtt.connection import certificate_problem
from plantwatch.mqtt.endpoint import Endpoint, TlsSettings


def test_mqtts_defaults_to_8883_and_verifies_against_the_system_store():
    e = Endpoint.parse("mqtts://broker.plant.example")
    assert (e.host, e.port, e.tls) == ("broker.plant.example", 8883, TlsSettings())
    assert e.tls.trust == "any CA in the system trust store"
    assert Endpoint.parse("mqtt://10.0.0.5").port == 1883 and Endpoint.parse("10.0.0.5:1884").tls is None


def test_a_url_password_is_masked_in_str_repr_and_errors():
    e = Endpoint.parse("mqtts://gw:hunter22@broker:9883")
    assert str(e) == "mqtts://gw:***@broker:9883" and "hunter22" not in repr(e)
    assert e.credentials() == ("gw", "hunter22")
    with pytest.raises(ValueError) as exc:
        Endpoint.parse("mqtt://gw:hunter22@broker/plant")
    assert "hunter22" not in str(exc.value) and "no path" in str(exc.value)


def test_the_password_file_is_read_at_each_connection(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("first\n")
    e = Endpoint.parse("mqtts://broker", username="gw", password_file=secret)
    assert e.credentials() == ("gw", "first") and str(e) == "mqtts://gw:***@broker:8883"
    secret.write_text("rotated\nignored second line\n")
    assert e.credentials() == ("gw", "rotated")


@pytest.mark.parametrize(
    ("url", "kwargs", "said"),
    [
        ("mqtt://broker", {"tls": TlsSettings()}, "use mqtts://broker:8883"),
        ("http://broker", {}, "scheme must be mqtt:// or mqtts://"),
        ("mqtts://u:p@broker", {"password_file": "/x"}, "a password file was given too"),
        ("mqtts://broker", {"password_file": "/x"}, "a password without a user name"),
        ("mqtts://broker", {"username": "u", "password_file": "/nonexistent"}, "password file /nonexistent does not exist"),
        ("mqtts://a@broker", {"username": "b"}, "names user 'a', and user 'b' was given too"),
        ("mqtts://broker", {"tls": TlsSettings("/nonexistent/ca.pem")}, "CA file /nonexistent/ca.pem does not exist"),
    ],
)
def test_what_cannot_work_is_refused_in_words(url, kwargs, said):
    with pytest.raises(ValueError, match=re.escape(said)):
        Endpoint.parse(url, **kwargs)


def test_a_client_key_needs_its_certificate():
    with pytest.raises(ValueError, match="without its certificate"):
        TlsSettings(key_file="/etc/key.pem")


PEER = {"subject": ((("commonName", "broker"),),), "subjectAltName": (("DNS", "mqtt.plant.example"), ("IP Address", "10.0.0.5"))}


@pytest.mark.parametrize(
    ("code", "peer", "said"),
    [
        (20, None, "the broker's certificate is not signed by the CA in /etc/ca.pem"),
        (62, PEER, "the broker's certificate is for mqtt.plant.example, 10.0.0.5, not broker.local"),
        (10, {**PEER, "notAfter": "Jan  2 03:04:05 2025 GMT"}, "the broker's certificate expired on 2025-01-02 03:04:05 UTC"),
        (9, {**PEER, "notBefore": "Jan  2 03:04:05 2099 GMT"}, "not valid until 2099-01-02 03:04:05 UTC (is this machine's clock right?)"),
    ],
)
def test_certificate_problems_are_said_in_words(code, peer, said):
    assert said in certificate_problem(code, "openssl's words", TlsSettings("/etc/ca.pem"), "broker.local", peer)


# Fuzz: whatever a user (or a manifest) gives as broker URL, credentials and TLS files, the
# answer is an endpoint or a ValueError in words — never another exception, never the password
# echoed back, and TLS never silently dropped for an mqtts:// URL.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PARTS = st.sampled_from(["mqtt://", "mqtts://", "http://", "", "mqtts:/", "MQTTS://", "tcp://"])
_HOSTS = st.one_of(
    st.sampled_from(["broker", "10.0.0.5", "[::1]", "broker.plant.example", "", "bro ker", "a" * 300, "b\x00r", "ü.example"]),
    st.text(max_size=20),
)
_PORTS = st.one_of(st.just(""), st.integers(-5, 70000).map(lambda p: f":{p}"), st.text(max_size=6).map(lambda t: ":" + t))
_TAILS = st.sampled_from(["", "/", "/plant", "?x=1", "#f", "/%00"])


@settings(max_examples=400, deadline=None)
@given(
    scheme=_PARTS,
    user=st.one_of(st.none(), st.text(max_size=12)),
    password=st.one_of(st.none(), st.text(min_size=1, max_size=12)),
    host=_HOSTS,
    port=_PORTS,
    tail=_TAILS,
    with_tls=st.booleans(),
    ca=st.sampled_from([None, "ca.pem", "missing.pem", ""]),
)
def test_any_broker_settings_give_an_endpoint_or_a_clear_error(tmp_path_factory, scheme, user, password, host, port, tail, with_tls, ca):
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    secret = "S3cr3t-" + password if password is not None else None
    creds = (user or "") + (f":{secret}" if secret else "") + ("@" if user is not None or secret else "")
    url = f"{scheme}{creds}{host}{port}{tail}"
    tls = None
    try:
        tls = TlsSettings(ca_file=(folder / ca) if ca else None) if with_tls else None
        e = Endpoint.parse(url, tls=tls)
    except ValueError as exc:
        assert not secret or secret not in str(exc), str(exc)
        return
    assert not secret or (secret not in str(e) and secret not in repr(e))
    if url.lower().startswith("mqtts://") or tls is not None:
        assert e.tls is not None and (tls is None or e.tls == tls)  # TLS is never dropped
    assert 0 < e.port < 65536
