"""`plantwatch doctor` against real mosquitto: TLS, passwords and an ACL as a plant runs them, and what goes wrong.

One broker (TLS and plain listeners, a password file made by mosquitto_passwd, an ACL in
which node-a writes only plant/a/#, the gateway reads plant/#, and `sloppy` writes all of
plant/#) serves most tests; the expiring certificate gets a broker of its own. The command
runs in-process through `plantwatch.cli.main`, as a user would call it, and the tests read
its --json report (and, once, its table).
"""

from __future__ import annotations

import json
import socket

import pytest

from plantwatch.cli import main
from tests.support.mqtt_security import Pki, mosquitto_passwd_file, start_secure_mosquitto, workdir

PASSWORDS = {"node-a": "pw-a", "gateway": "pw-gateway", "sloppy": "pw-sloppy"}
ACL = """user node-a
topic write plant/a/#
topic read plant/a/cmd

user gateway
topic read plant/#

user sloppy
topic write plant/#
"""


class LongPki(Pki):
    """Certificates valid for a year, so that nothing but the check under test warns."""

    def issue(self, name, hosts=("127.0.0.1", "localhost"), client=False, days=365.0):
        return super().issue(name, hosts, client, days)


class ElsewherePki(LongPki):
    """A broker certificate for another name than the one connected to."""

    def issue(self, name, hosts=("broker.plant.example",), client=False, days=365.0):
        return super().issue(name, hosts, client, days)


class SoonPki(Pki):
    def issue(self, name, hosts=("127.0.0.1", "localhost"), client=False, days=10.0):
        return super().issue(name, hosts, client, days)


@pytest.fixture(scope="module")
def plant_broker():
    folder = workdir("plantwatch-doctor-")
    pki = LongPki(folder / "pki")
    acl = folder / "acl"
    acl.write_text(ACL)
    broker = start_secure_mosquitto(
        folder / "broker", pki=pki, password_file=mosquitto_passwd_file(folder, PASSWORDS), acl_file=acl, plain=True
    )
    for user, password in PASSWORDS.items():
        (folder / f"{user}.password").write_text(password + "\n")
    broker.pki, broker.secrets = pki, folder
    yield broker
    broker.stop()


def doctor(capsys, *args: str) -> tuple[int, dict]:
    status = main(["doctor", *args, "--timeout", "3", "--json"])
    return status, json.loads(capsys.readouterr().out)


def checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def as_node_a(broker, *extra: str) -> list[str]:
    return ["--ca", str(broker.pki.ca_path), "--username", "node-a", "--password-file", str(broker.secrets / "node-a.password"), *extra]


def with_observer(broker) -> list[str]:
    return ["--observer-username", "gateway", "--observer-password-file", str(broker.secrets / "gateway.password")]


def test_all_good_over_tls_with_password_acl_and_round_trip(plant_broker, capsys):
    args = as_node_a(plant_broker, "--topic", "plant/a/data", "--forbidden-topic", "plant/b/data", *with_observer(plant_broker))
    status, report = doctor(capsys, plant_broker.tls_url, *args)
    found = checks(report)
    assert status == 0 and report["ok"], report["verdict"]
    assert [c["name"] for c in report["checks"]] == [
        "dns",
        "tcp",
        "tls",
        "certificate",
        "expiry",
        "hostname",
        "mqtt",
        "authentication",
        "observer",
        "subscribe",
        "own topic",
        "round trip",
        "forbidden topic",
    ]
    assert all(c["outcome"] == "pass" for c in report["checks"]), report["checks"]
    assert found["tls"]["facts"]["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert found["certificate"]["facts"] == {"subject": "CN=broker", "issuer": "CN=plantwatch test CA"}
    assert found["expiry"]["facts"]["days_left"] > 300
    assert found["round trip"]["facts"]["latency_ms"] >= found["round trip"]["facts"]["puback_ms"] >= 0
    assert found["forbidden topic"]["facts"]["reason"] == 0x87
    assert "not authorized" in found["forbidden topic"]["detail"]
    assert report["verdict"].startswith("OK:")

    assert main(["doctor", plant_broker.tls_url, *args, "--timeout", "3"]) == 0
    table = capsys.readouterr().out
    assert "✓ round trip" in table and "✗" not in table and table.rstrip().splitlines()[-1].startswith("OK:")


def test_wrong_password_is_explained_from_the_connack(plant_broker, capsys, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    for version, words in (("5", "not authorized (0x87)"), ("3.1.1", "not authorized")):
        status, report = doctor(
            capsys,
            plant_broker.tls_url,
            *["--ca", str(plant_broker.pki.ca_path), "--username", "node-a", "--password-file", str(wrong), "--mqtt-version", version],
        )
        found = checks(report)
        assert status == 1 and found["mqtt"]["outcome"] == "pass"
        auth = found["authentication"]
        assert auth["outcome"] == "fail" and words in auth["detail"] and "password is wrong" in auth["detail"]
        assert "--password-file" in auth["fix"]
        assert {found[n]["outcome"] for n in ("subscribe", "own topic", "round trip")} == {"skip"}
        assert report["verdict"].startswith("NOT OK: authentication")


def test_anonymous_is_refused_and_told_to_give_credentials(plant_broker, capsys):
    status, report = doctor(capsys, plant_broker.tls_url, "--ca", str(plant_broker.pki.ca_path))
    auth = checks(report)["authentication"]
    assert status == 1 and auth["outcome"] == "fail" and "--username and --password-file" in auth["fix"]


def test_closed_port(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        status, report = doctor(capsys, f"mqtts://127.0.0.1:{port}")
    tcp = checks(report)["tcp"]
    assert status == 1 and tcp["outcome"] == "fail"
    assert tcp["detail"] == f"nothing listens on 127.0.0.1:{port} (connection refused)" and "8883" in tcp["fix"]
    assert all(c["outcome"] == "skip" for c in report["checks"][2:])


def test_wrong_ca_names_the_signer_and_sends_no_password(plant_broker, capsys, tmp_path):
    other = Pki(tmp_path / "other", name="another CA")
    status, report = doctor(capsys, plant_broker.tls_url, *as_node_a(plant_broker)[2:], "--ca", str(other.ca_path))
    found = checks(report)
    assert status == 1
    cert = found["certificate"]
    assert cert["outcome"] == "fail"
    assert f"signed by CN=plantwatch test CA, which is not in the CA file {other.ca_path} (it holds CN=another CA)" in cert["detail"]
    assert "--ca" in cert["fix"]
    assert found["hostname"]["outcome"] == "pass" and found["expiry"]["outcome"] == "pass"
    assert found["authentication"]["outcome"] == "skip" and "never sent to an unverified broker" in found["authentication"]["detail"]


def test_hostname_mismatch(capsys):
    folder = workdir("plantwatch-doctor-name-")
    pki = ElsewherePki(folder / "pki")
    broker = start_secure_mosquitto(folder / "broker", pki=pki, allow_anonymous=True)
    try:
        status, report = doctor(capsys, broker.tls_url, "--ca", str(pki.ca_path))
    finally:
        broker.stop()
    found = checks(report)
    assert status == 1 and found["certificate"]["outcome"] == "pass"
    assert found["hostname"]["outcome"] == "fail"
    assert found["hostname"]["detail"] == "the certificate is for broker.plant.example, not 127.0.0.1"
    assert "subjectAltName" in found["hostname"]["fix"]


def test_plain_mqtt_spoken_to_the_tls_port(plant_broker, capsys):
    status, report = doctor(capsys, f"mqtt://127.0.0.1:{plant_broker.tls_port}", "--username", "node-a")
    mqtt = checks(report)["mqtt"]
    assert status == 1 and mqtt["outcome"] == "fail" and "the port speaks TLS" in mqtt["detail"]
    assert mqtt["fix"].startswith(f"use mqtts://127.0.0.1:{plant_broker.tls_port}")


def test_tls_spoken_to_the_plain_port(plant_broker, capsys):
    status, report = doctor(capsys, f"mqtts://127.0.0.1:{plant_broker.port}", "--ca", str(plant_broker.pki.ca_path))
    tls = checks(report)["tls"]
    assert status == 1 and tls["outcome"] == "fail" and "plain MQTT, not TLS" in tls["detail"]
    assert tls["fix"].startswith(f"use mqtt://127.0.0.1:{plant_broker.port}")


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_acl_own_topic_allowed_forbidden_refused(plant_broker, capsys, version):
    args = as_node_a(plant_broker, "--topic", "plant/a/data", "--forbidden-topic", "plant/b/data", "--mqtt-version", version)
    status, report = doctor(capsys, plant_broker.tls_url, *args, *with_observer(plant_broker))
    found = checks(report)
    assert status == 0, report["verdict"]
    assert found["own topic"]["outcome"] == "pass" and "delivered to the observer" in found["own topic"]["detail"]
    assert found["forbidden topic"]["outcome"] == "pass"
    if version == "3.1.1":
        assert "dropped after its PUBACK" in found["forbidden topic"]["detail"]


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_acl_that_lets_a_node_write_another_nodes_topic_fails(plant_broker, capsys, version):
    args = ["--ca", str(plant_broker.pki.ca_path), "--username", "sloppy", "--password-file", str(plant_broker.secrets / "sloppy.password")]
    args += ["--topic", "plant/s/data", "--forbidden-topic", "plant/b/data", "--mqtt-version", version, *with_observer(plant_broker)]
    status, report = doctor(capsys, plant_broker.tls_url, *args)
    forbidden = checks(report)["forbidden topic"]
    assert status == 1 and forbidden["outcome"] == "fail"
    assert "another node's topic" in forbidden["detail"] and "restrict sloppy" in forbidden["fix"]


def test_mqtt_311_without_an_observer_says_it_cannot_tell(plant_broker, capsys):
    args = as_node_a(plant_broker, "--topic", "plant/a/data", "--forbidden-topic", "plant/b/data", "--mqtt-version", "3.1.1")
    status, report = doctor(capsys, plant_broker.tls_url, *args)
    found = checks(report)
    assert status == 0
    assert found["forbidden topic"]["outcome"] == "skip" and "cannot tell" in found["forbidden topic"]["detail"]
    assert found["own topic"]["outcome"] == "skip" and "--observer-username" in found["own topic"]["detail"]


def test_mqtt_5_without_an_observer_reads_the_pubacks(plant_broker, capsys):
    args = as_node_a(plant_broker, "--topic", "plant/a/data", "--forbidden-topic", "plant/b/data")
    status, report = doctor(capsys, plant_broker.tls_url, *args)
    found = checks(report)
    assert status == 0, report["verdict"]
    assert found["own topic"]["outcome"] == "pass" and "PUBACK success" in found["own topic"]["detail"]
    assert found["forbidden topic"]["outcome"] == "pass" and "not authorized" in found["forbidden topic"]["detail"]
    assert found["round trip"]["outcome"] == "skip" and found["round trip"]["facts"]["puback_ms"] >= 0


def test_certificate_expiring_soon_warns_without_failing(capsys):
    folder = workdir("plantwatch-doctor-soon-")
    pki = SoonPki(folder / "pki")
    broker = start_secure_mosquitto(folder / "broker", pki=pki, allow_anonymous=True)
    try:
        status, report = doctor(capsys, broker.tls_url, "--ca", str(pki.ca_path))
    finally:
        broker.stop()
    expiry = checks(report)["expiry"]
    assert status == 0 and report["ok"]
    assert expiry["outcome"] == "warn" and 9 < expiry["facts"]["days_left"] <= 10
    assert "expires soon" in expiry["detail"] and "renew" in expiry["fix"]
    assert report["verdict"].startswith("OK with 1 warning: expiry")


def test_the_password_never_goes_on_the_command_line(capsys):
    assert main(["doctor", "mqtts://node-a:pw-a@127.0.0.1:8883"]) == 2
    err = capsys.readouterr().err
    assert "--password-file" in err and "pw-a" not in err


def test_a_missing_password_file_is_named(capsys, tmp_path):
    assert main(["doctor", "mqtt://127.0.0.1", "--username", "a", "--password-file", str(tmp_path / "nope")]) == 2
    assert f"password file {tmp_path / 'nope'}" in capsys.readouterr().err
