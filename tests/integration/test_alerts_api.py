"""The alerts API and `plantwatch alerts` against a real `plantwatch up`: list, ack, unack, silence, history.

Real mosquitto, the real `plantwatch up --db` process with its API token in a Secret manifest
in the plant folder, the CLI run as a user runs it (`python -m plantwatch.cli alerts ...`),
and raw HTTP for what the CLI does not show (status codes of refused requests). What reached
people is read where they read it: the console receiver's lines on up's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest
import yaml

from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from tests.conftest import EXAMPLE_PLANT
from tests.integration.test_notify_exactly_once import up_for, wait_until
from tests.integration.test_up_durable import OVERHEAT, press_temperatures

TOKEN = "s3cret-api-token-for-tests"
ENV_OVERHEAT = "machine-overtemperature/rpi-line1-env/air-temperature"
PRESS_LINE = "machine-overtemperature esp32-press-01/temperature:"
ENV_LINE = "machine-overtemperature rpi-line1-env/air-temperature:"


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


@pytest.fixture
def up(tmp_path, broker):
    """`plantwatch up` on a plant whose only rule is the overtemperature one, repeating every 2 s, with an API token Secret."""
    plant = tmp_path / "plant"
    shutil.copytree(EXAMPLE_PLANT, plant)
    rules = [d for d in yaml.safe_load_all((plant / "rules.yaml").read_text()) if d["metadata"]["name"] == "machine-overtemperature"]
    rules[0]["spec"]["repeatInterval"] = "2s"
    (plant / "rules.yaml").write_text(yaml.safe_dump_all(rules))
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plantwatch-api"}, "stringData": {"token": TOKEN + "\n"}}
    (plant / "api-token.yaml").write_text(yaml.safe_dump(secret))
    running = up_for(tmp_path, broker, plant)
    running.args += ["--api-token-secret", "plantwatch-api/token"]
    running.start()
    running.url = f"http://127.0.0.1:{running.port}"
    yield running
    if running.proc.poll() is None:
        running.stop()


def cli(up, *args: str, token: bool = True) -> subprocess.CompletedProcess:
    """`plantwatch alerts ...` as a user runs it, the token from $PLANTWATCH_API_TOKEN."""
    env = {k: v for k, v in os.environ.items() if k != "PLANTWATCH_API_TOKEN"} | ({"PLANTWATCH_API_TOKEN": TOKEN} if token else {})
    return subprocess.run(
        [sys.executable, "-m", "plantwatch.cli", "alerts", *args, "--url", up.url], capture_output=True, text=True, env=env, timeout=30
    )


def http(up, method: str, path: str, body=None, token: str | None = TOKEN) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(up.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def env_temperatures(url: str, t0: float, values: list[float]) -> None:
    """The line's environment sensor's air temperature at 10 readings a second of event time, from t0."""
    pub = Publisher(url, client_id=f"env-{t0:.0f}-{len(values)}")
    pub.start()
    for i, value in enumerate(values):
        pub.publish(
            "sensors/hall-1/rpi-line1-env/environmental", encode("rpi-json", "rpi-line1-env", t0 + i * 0.1, {"bme280.temperature_c": value})
        )
    pub.stop()


def lines(up, about: str) -> list[str]:
    return [line for line in up.output().splitlines() if about in line]


def firing(up, fingerprint: str) -> bool:
    code, alert = http(up, "GET", f"/api/v1/alerts/{quote(fingerprint, safe='')}")
    return code == 200 and alert["status"] == "firing"


def history(up, fingerprint: str) -> list[dict]:
    code, events = http(up, "GET", f"/api/v1/alerts/{quote(fingerprint, safe='')}/history")
    assert code == 200, events
    return events


def test_reads_and_changes_need_the_token(up, broker):
    t0 = time.time() - 120
    press_temperatures(broker.url, t0, [75.0] * 40)
    wait_until(lambda: firing(up, OVERHEAT), "the press's alert firing")

    listed = cli(up, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(OVERHEAT))
    assert row.split()[1:3] == ["warning", "firing"]
    as_json = json.loads(cli(up, "list", "--status", "firing", "--json").stdout)
    assert [a["fingerprint"] for a in as_json] == [OVERHEAT]

    refused = cli(up, "list", token=False)
    assert refused.returncode == 1 and "401" in refused.stderr and "Authorization: Bearer" in refused.stderr
    ack = f"/api/v1/alerts/{quote(OVERHEAT, safe='')}/ack"
    code, body = http(up, "POST", ack, {"by": "mallory"}, token=None)
    assert code == 401 and "Secret 'plantwatch-api' key 'token'" in body["error"]
    code, body = http(up, "POST", ack, {"by": "mallory"}, token="not-the-token")
    assert code == 403 and "not this process's API token" in body["error"]
    assert http(up, "GET", f"/api/v1/alerts/{quote(OVERHEAT, safe='')}")[1]["ackedBy"] is None
    code, body = http(up, "POST", ack, {"comment": "no name"})
    assert code == 400 and "by:" in body["error"]
    code, body = http(up, "GET", "/api/v1/alerts/no-such-rule%2Fesp32-press-01%2Ftemperature")
    assert code == 404 and "no alert" in body["error"]
    assert TOKEN not in up.output()


def test_ack_stops_the_repeats_and_unack_brings_them_back(up, broker):
    t0 = time.time() - 120
    press_temperatures(broker.url, t0, [75.0] * 40)
    env_temperatures(broker.url, t0, [75.0] * 40)
    wait_until(lambda: [line for line in lines(up, PRESS_LINE) if line.endswith("(repeat)")], "a repeat of the press's alert")

    acked = cli(up, "ack", OVERHEAT, "--by", "maria", "--comment", "on my way")
    assert acked.returncode == 0, acked.stderr
    assert "by maria" in acked.stdout and "on my way" in acked.stdout
    assert json.loads(cli(up, "get", OVERHEAT, "--json").stdout)["ackedBy"] == "maria"
    # The unacknowledged alert on the other node goes on repeating meanwhile: two of its repeats after the ack.
    env_repeats = len([line for line in lines(up, ENV_LINE) if line.endswith("(repeat)")])
    wait_until(
        lambda: len([line for line in lines(up, ENV_LINE) if line.endswith("(repeat)")]) >= env_repeats + 2, "the env alert repeating"
    )
    events = history(up, OVERHEAT)
    acked_at = next(i for i, e in enumerate(events) if e["what"] == "acknowledged")
    assert events[acked_at]["detail"] == {"by": "maria", "comment": "on my way"}
    repeats = [e for e in events if e["what"] == "notification" and e["detail"]["kind"] == "repeat"]
    assert repeats and all(events.index(e) < acked_at for e in repeats), "a repeat was decided after the ack"
    wait_until(
        lambda: len([line for line in lines(up, PRESS_LINE) if line.endswith("(repeat)")]) == len(repeats), "the decided repeats printed"
    )
    assert len([line for line in lines(up, PRESS_LINE) if line.endswith("(repeat)")]) == len(repeats)

    unacked = cli(up, "unack", OVERHEAT, "--by", "maria", "--comment", "handed over")
    assert unacked.returncode == 0, unacked.stderr
    assert http(up, "GET", f"/api/v1/alerts/{quote(OVERHEAT, safe='')}")[1]["ackedBy"] is None
    wait_until(lambda: len([line for line in lines(up, PRESS_LINE) if line.endswith("(repeat)")]) > len(repeats), "repeats after the unack")

    shown = cli(up, "history", OVERHEAT)
    assert shown.returncode == 0, shown.stderr
    whats = [line.split()[1] for line in shown.stdout.splitlines()[1:]]
    for what in ("firing", "notification", "delivery", "acknowledged", "unacknowledged"):
        assert what in whats, shown.stdout
    assert whats.index("firing") < whats.index("notification") < whats.index("delivery") < whats.index("acknowledged")


def test_a_silence_mutes_the_matched_node_only_until_it_is_lifted(up, broker):
    made = cli(
        up, "silence", "node=esp32-press-01", "severity=~warning|info", "--duration", "1h", "--comment", "press on the bench", "--by", "sam"
    )
    assert made.returncode == 0, made.stderr
    silence_id = made.stdout.strip()
    listed = cli(up, "silences")
    assert silence_id in listed.stdout and "active" in listed.stdout and "node=esp32-press-01,severity=~warning|info" in listed.stdout

    t0 = time.time() - 120
    press_temperatures(broker.url, t0, [75.0] * 40)
    wait_until(lambda: firing(up, OVERHEAT), "the press's alert firing")
    env_temperatures(broker.url, t0, [75.0] * 40)
    # The env alert is announced in a step that planned with the press's alert firing, and silenced.
    wait_until(lambda: lines(up, ENV_LINE), "the env alert announced")
    assert lines(up, PRESS_LINE) == []
    assert [e["what"] for e in history(up, OVERHEAT)] == ["firing"]

    lifted = cli(up, "unsilence", silence_id)
    assert lifted.returncode == 0, lifted.stderr
    assert json.loads(cli(up, "silences", "--expired", "--json").stdout)[0]["status"] == "expired"
    assert silence_id not in cli(up, "silences").stdout
    wait_until(lambda: lines(up, PRESS_LINE), "the press's alert announced once the silence is lifted")
    assert "(repeat)" not in lines(up, PRESS_LINE)[0]


def test_bad_silences_are_refused_with_what_is_accepted(up):
    bad = cli(up, "silence", "node", "--comment", "x")
    assert bad.returncode == 1 and "expected LABEL=VALUE" in bad.stderr
    bad = cli(up, "silence", "node=~(", "--comment", "x")
    assert bad.returncode == 1 and "not a regular expression" in bad.stderr
    bad = cli(up, "silence", "node=a", "--duration", "1 hour", "--comment", "x")
    assert bad.returncode == 1 and "expected integers with units" in bad.stderr
    code, body = http(
        up, "POST", "/api/v1/silences", {"matchers": ["node=a"], "duration": "1h", "createdBy": "sam", "comment": "x", "ends_at": "z"}
    )
    assert code == 400 and "unknown fields ['ends_at']" in body["error"] and "endsAt" in body["error"]
    assert http(up, "DELETE", "/api/v1/silences/nope")[0] == 404
    assert http(up, "GET", "/api/v1/silences")[1] == []
