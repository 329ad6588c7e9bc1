"""A broker password given in `up --broker mqtt://user:password@...` is never printed.

mosquitto with a password file (anonymous clients refused), so `up` really authenticates;
every output a user or a log shipper sees is searched for the password.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from plantwatch.mqtt.broker import free_port, start_mosquitto
from tests.conftest import EXAMPLE_PLANT

USER, PASSWORD = "plant-a", "Wr0ng-or-right-5ecret"


@pytest.fixture(scope="module")
def broker():
    b = start_mosquitto(users={USER: PASSWORD})
    yield b
    b.stop()


def up(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plantwatch.cli", "--log-level", "DEBUG", "up", "-f", str(EXAMPLE_PLANT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_password_in_the_broker_url_is_masked_everywhere(tmp_path, broker, log_format):
    url = f"mqtt://{USER}:{PASSWORD}@127.0.0.1:{broker.port}"
    port, summary_file = free_port(), tmp_path / "summary.json"
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:  # a full pipe would stall it
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plantwatch.cli",
                "--log-level",
                "DEBUG",
                "--log-format",
                log_format,
                "up",
                "-f",
                str(EXAMPLE_PLANT),
                "--broker",
                url,
                "--db",
                str(tmp_path / "plant.db"),
                "--simulate",
                "--duration",
                "6",
                "--status-every",
                "1",
                "--http-port",
                str(port),
                "--summary-json",
                str(summary_file),
            ],
            stdout=out,
            stderr=err,
        )
    metrics = ""
    deadline = time.time() + 30
    wanted = ("plantwatch_readings_total ", "plantwatch_node_online{")  # a node's series appears a moment after the first reading
    while not all(w in metrics for w in wanted) and proc.poll() is None and time.time() < deadline:
        try:
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    proc.wait(60)
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, stderr
    summary = json.loads(summary_file.read_text())
    assert summary["readings_stored"] > 0 and summary["rejected"] > 0  # it authenticated, and it logged rejections
    assert "rejected" in stderr and "plantwatch_node_online{" in metrics  # there was something to search
    for name, text in {"stdout": stdout, "stderr": stderr, "summary": summary_file.read_text(), "/metrics": metrics}.items():
        assert PASSWORD not in text, f"the password is in {name}"
    masked = f"mqtt://{USER}:***@127.0.0.1:{broker.port}"
    assert summary["broker"]["url"] == masked and masked in stdout


def test_a_refused_password_is_one_line_without_the_password(tmp_path, broker):
    wrong = "Not-the-5ecret-either"
    proc = up(
        "--broker",
        f"mqtt://{USER}:{wrong}@127.0.0.1:{broker.port}",
        "--db",
        str(tmp_path / "plant.db"),
        "--duration",
        "5",
        "--http-port",
        "0",
    )
    assert proc.returncode == 1
    assert wrong not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "refused the connection" in proc.stderr and f"127.0.0.1:{broker.port}" in proc.stderr


def test_a_malformed_broker_url_is_named_masked(tmp_path):
    proc = up("--broker", f"http://{USER}:{PASSWORD}@127.0.0.1:1883", "--duration", "1", "--http-port", "0")
    assert proc.returncode == 2
    assert PASSWORD not in proc.stdout + proc.stderr
    assert f"http://{USER}:***@127.0.0.1:1883" in proc.stderr and "scheme must be mqtt://" in proc.stderr
