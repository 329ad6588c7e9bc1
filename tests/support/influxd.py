"""Run a real influxd (built by tools/build-influxdb.sh into .cache/bin) on 127.0.0.1, for tests and benchmarks."""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from pathlib import Path

import orjson
from influxdb_client import InfluxDBClient

from plantwatch.mqtt.broker import free_port
from tests.support.process import terminate, wait_http_ready

INFLUXD = Path(__file__).resolve().parents[2] / ".cache" / "bin" / "influxd"
ORG, BUCKET, TOKEN = "plantwatch", "plant", "plantwatch-test-token"


class InfluxdError(RuntimeError):
    pass


def _healthy(body: bytes) -> bool:
    return orjson.loads(body)["status"] == "pass"


class Influxd:
    """One influxd process; `kill()` (SIGKILL) and `start()` again keep its data directory and port."""

    def __init__(self, data_dir: Path):
        if not INFLUXD.exists():
            raise InfluxdError(f"{INFLUXD} is missing: run tools/build-influxdb.sh")
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [
            str(INFLUXD),
            f"--http-bind-address=127.0.0.1:{self.port}",
            f"--bolt-path={self.data_dir / 'influxd.bolt'}",
            f"--engine-path={self.data_dir / 'engine'}",
            f"--sqlite-path={self.data_dir / 'influxd.sqlite'}",
            "--reporting-disabled",
            "--log-level=error",
        ]
        with open(self.data_dir / "influxd.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_http_ready(self.proc, self.url + "/health", self.data_dir / "influxd.log", _healthy)
        except RuntimeError as e:
            raise InfluxdError(str(e)) from None
        if not (self.data_dir / "setup-done").exists():
            self._setup()

    def _setup(self) -> None:
        body = orjson.dumps({"username": "plantwatch", "password": "plantwatch-password", "org": ORG, "bucket": BUCKET, "token": TOKEN})
        req = urllib.request.Request(self.url + "/api/v2/setup", body, {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()
        (self.data_dir / "setup-done").touch()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        terminate(self.proc)

    def client(self) -> InfluxDBClient:
        return InfluxDBClient(self.url, token=TOKEN, org=ORG, timeout=60_000)

    def new_bucket(self, name: str) -> str:
        with self.client() as c:
            c.buckets_api().create_bucket(bucket_name=name, org=ORG)
        return name
