"""MQTT over TLS against a real mosquitto (tests/support/mqtt_security.py): verified by default, mutual TLS, refusals in words.

The gateway (`serve ingest`'s IngestService and `plantwatch up`) and the publisher speak
mqtts:// with the plant's CA; a wrong CA, a certificate for another host, a missing client
certificate and TLS spoken to a plain port (and the reverse) are refused with a message
that says which, and a password may come from a file instead of the URL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from plantwatch.mqtt import connection
from plantwatch.mqtt.endpoint import Endpoint, TlsSettings
from plantwatch.mqtt.publisher import Publisher
from plantwatch.mqtt.subscriber import BatchSubscriber
from tests.support.mqtt_security import Pki, mosquitto_passwd_file, start_secure_mosquitto

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "plant"


class _ServerCertFor(Pki):
    """A PKI whose broker certificate names other hosts (or has already expired): what a misconfigured plant has."""

    def __init__(self, folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: float = 1.0):
        self._broker_hosts, self._broker_days = hosts, days
        super().__init__(folder)

    def issue(self, name, hosts=("127.0.0.1", "localhost"), client=False, days=1.0):
        if name == "broker":
            return super().issue(name, self._broker_hosts, client, self._broker_days)
        return super().issue(name, hosts, client, days)


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def broker(tmp_path, pki):
    b = start_secure_mosquitto(tmp_path / "broker", pki, plain=True, allow_anonymous=True)
    yield b
    b.stop()


def _receive(endpoint: Endpoint, count: int, topic: str = "tls/#") -> list[bytes]:
    """Publish `count` messages and receive them through our own subscriber, both over `endpoint`."""
    got: list[bytes] = []
    sub = BatchSubscriber(endpoint, [topic])
    stop = threading.Event()
    thread = threading.Thread(target=sub.run, args=(lambda batch: got.extend(p.payload for p in batch), stop), daemon=True)
    thread.start()
    try:
        assert sub.connected_once.wait(10), "the subscriber never subscribed"
        pub = Publisher(endpoint)
        pub.start()
        for i in range(count):
            pub.publish("tls/x", b"%d" % i)
        pub.stop()
        deadline = time.monotonic() + 20
        while len(got) < count and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    return got


def test_our_client_and_the_publisher_speak_tls_verified_against_the_plants_ca(broker, pki):
    got = _receive(Endpoint.parse(broker.tls_url, TlsSettings(pki.ca_path)), 2000)
    assert sorted(got, key=int) == [b"%d" % i for i in range(2000)]


def test_mutual_tls_with_a_client_certificate_works_and_without_one_is_refused(tmp_path, pki):
    broker = start_secure_mosquitto(tmp_path / "mtls", pki, require_client_cert=True, allow_anonymous=True)
    try:
        cert, key = pki.issue("gateway", client=True)
        assert _receive(Endpoint.parse(broker.tls_url, TlsSettings(pki.ca_path, cert, key)), 100) == [b"%d" % i for i in range(100)]
        why = connection.diagnose(Endpoint.parse(broker.tls_url, TlsSettings(pki.ca_path)))
        assert why is not None and "client certificate" in why and "--broker-cert" in why
        stranger = Pki(tmp_path / "stranger", name="stranger CA")
        cert, key = stranger.issue("intruder", client=True)
        why = connection.diagnose(Endpoint.parse(broker.tls_url, TlsSettings(pki.ca_path, cert, key)))
        assert why is not None and f"the client certificate {cert}" in why
    finally:
        broker.stop()


def test_a_broker_certificate_from_another_ca_is_refused_naming_the_ca_file(tmp_path, broker):
    other = Pki(tmp_path / "other", name="another CA")
    endpoint = Endpoint.parse(broker.tls_url, TlsSettings(other.ca_path))
    assert connection.diagnose(endpoint) == f"the broker's certificate is not signed by the CA in {other.ca_path}"
    with pytest.raises(ConnectionRefusedError, match="not signed by the CA in"):
        Publisher(endpoint).start(10)
    # Without --broker-ca the system trust store decides, and it does not know the plant's CA.
    assert "not signed by any CA in the system trust store" in connection.diagnose(Endpoint.parse(broker.tls_url))


def test_a_certificate_for_another_host_or_expired_is_refused_saying_so(tmp_path):
    elsewhere = _ServerCertFor(tmp_path / "elsewhere", hosts=("mqtt.plant.example",))
    expired = _ServerCertFor(tmp_path / "expired", days=-1 / 1440)  # ended a minute ago
    brokers = [start_secure_mosquitto(tmp_path / p.folder.name / "b", p, allow_anonymous=True) for p in (elsewhere, expired)]
    try:
        why = connection.diagnose(Endpoint.parse(brokers[0].tls_url, TlsSettings(elsewhere.ca_path)))
        assert why is not None and why.startswith("the broker's certificate is for mqtt.plant.example, not 127.0.0.1")
        why = connection.diagnose(Endpoint.parse(brokers[1].tls_url, TlsSettings(expired.ca_path)))
        assert why is not None and why.startswith("the broker's certificate expired on 20") and why.endswith("UTC")
    finally:
        for b in brokers:
            b.stop()


def test_tls_spoken_to_a_plain_port_and_plain_to_a_tls_port_say_which_scheme_to_use(broker, pki):
    why = connection.diagnose(Endpoint.parse(f"mqtt://127.0.0.1:{broker.tls_port}"))
    assert why is not None and f"speaks TLS, not plain MQTT: use mqtts://127.0.0.1:{broker.tls_port}" in why
    why = connection.diagnose(Endpoint.parse(f"mqtts://127.0.0.1:{broker.port}", TlsSettings(pki.ca_path)))
    assert why is not None and f"speaks plain MQTT, not TLS: use mqtt://127.0.0.1:{broker.port}" in why


def _plantwatch(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_up_over_mqtts_with_mutual_tls_and_a_password_file_ingests_what_its_simulator_publishes(tmp_path, pki):
    passwords = mosquitto_passwd_file(tmp_path, {"gateway": "s3cret-from-a-file"})
    broker = start_secure_mosquitto(tmp_path / "b", pki, password_file=passwords, require_client_cert=True)
    cert, key = pki.issue("gateway", client=True)
    (tmp_path / "password").write_text("s3cret-from-a-file\n")
    summary = tmp_path / "summary.json"
    try:
        proc = _plantwatch(
            "up", "-f", str(SAMPLE), "--simulate", "--duration", "6", "--http-port", "0", "--summary-json", str(summary),
            "--broker", broker.tls_url, "--broker-ca", str(pki.ca_path), "--broker-cert", str(cert), "--broker-key", str(key),
            "--broker-username", "gateway", "--broker-password-file", str(tmp_path / "password"),
        )  # fmt: skip
    finally:
        broker.stop()
    assert proc.returncode == 0, proc.stderr
    result = json.loads(summary.read_text())
    assert result["readings_stored"] > 0
    assert result["broker"]["url"] == f"mqtts://gateway:***@127.0.0.1:{broker.tls_port}"
    assert "s3cret-from-a-file" not in proc.stdout + proc.stderr + summary.read_text()


def test_up_refuses_a_broker_it_cannot_verify_in_one_line(tmp_path, broker):
    other = Pki(tmp_path / "other", name="another CA")
    proc = _plantwatch(
        "up", "-f", str(SAMPLE), "--duration", "5", "--http-port", "0", "--broker", broker.tls_url, "--broker-ca", str(other.ca_path)
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"the broker's certificate is not signed by the CA in {other.ca_path}" in proc.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--broker-ca", "/nonexistent/ca.pem"], "the broker's CA file /nonexistent/ca.pem does not exist"),
        (["--broker-password-file", "/nonexistent/pw", "--broker-username", "u"], "password file /nonexistent/pw does not exist"),
    ],
)
def test_serve_ingest_names_a_missing_file_before_connecting(tmp_path, args, said):
    proc = _plantwatch("serve", "ingest", "-f", str(SAMPLE), "--db", str(tmp_path / "p.db"), "--broker", "mqtts://127.0.0.1:8883", *args)
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr


def test_tls_flags_without_an_external_broker_are_refused(tmp_path, pki):
    proc = _plantwatch("up", "-f", str(SAMPLE), "--duration", "1", "--http-port", "0", "--broker-ca", str(pki.ca_path))
    assert proc.returncode == 2 and "--broker-ca need --broker" in proc.stderr
