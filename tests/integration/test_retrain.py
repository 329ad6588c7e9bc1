"""`plantwatch detector retrain` on a real `plantwatch up` fed over a real mosquitto: from the store and from the gateway's API.

The plant is the sample plant with its starter detector replaced by one trained with
`detector train` and published with `detector publish` (a starter model has no card to
retrain from). The press sends 1 Hz readings of the detector's three sensors.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from plantwatch.contracts import model_card
from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from tests.conftest import EXAMPLE_PLANT
from tests.integration.test_delivery import TOPIC, ready

ROWS = 2600  # 20 % held out: 520 rows, above the shadow rule's 500


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.cli", *args], capture_output=True, text=True, timeout=300)


def _press(rows: int, seed: int) -> np.ndarray:
    """[rows, temperature vibration current]: a press whose load moves all three together."""
    rng = np.random.default_rng(seed)
    load = np.cumsum(rng.normal(0, 0.02, rows)).clip(-1, 1)
    return np.column_stack([60 + 5 * load, 1.0 + 0.3 * load, 12 + 3 * load]) + rng.normal(0, [0.2, 0.02, 0.1], (rows, 3))


@pytest.fixture
def plant(tmp_path):
    folder = tmp_path / "plant"
    folder.mkdir()
    for name in ("nodes.yaml", "receivers.yaml", "rules.yaml"):
        shutil.copy(EXAMPLE_PLANT / name, folder / name)
    csv = tmp_path / "press.csv"
    values = _press(600, seed=1)
    csv.write_text("temperature,vibration,current\n" + "".join(f"{a:.4f},{b:.4f},{c:.4f}\n" for a, b, c in values))
    trained = _cli("detector", "train", "--csv", str(csv), "--out", str(tmp_path / "serving"))
    assert trained.returncode == 0, trained.stderr
    published = _cli(
        "detector", "publish", "--model", str(tmp_path / "serving"), "--name", "bearing-wear",
        "--node-selector", "plantwatch.io/line=line-1", "--out", str(folder / "detector.yaml"),
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    return folder


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


def _stored(db) -> int:
    try:
        return (
            sqlite3.connect(db).execute("SELECT count(*) FROM readings WHERE node = 'esp32-press-01' AND sensor = 'current'").fetchone()[0]
        )
    except sqlite3.Error:
        return 0


def test_retrain_from_the_store_and_from_the_gateway_trains_on_the_same_rows(tmp_path, plant, broker):
    db, port = tmp_path / "plant.db", free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "plantwatch.cli", "up", "-f", str(plant), "--broker", broker.url, "--db", str(db),
         "--http-port", str(port), "--api-open-reads", "--status-every", "3600"],
        stdout=open(tmp_path / "up.out", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 30
        while not ready(port):
            assert time.time() < deadline and up.poll() is None, (tmp_path / "up.out").read_text()
            time.sleep(0.05)
        t0 = float(int(time.time()) - 2 * ROWS)
        pub = Publisher(broker.url, client_id="press-retrain")
        pub.start()
        for i, (temperature, vibration, current) in enumerate(_press(ROWS, seed=2).tolist()):
            fields = {"temperature_c": temperature, "vibration_g": vibration, "current_a": current}
            pub.publish(TOPIC, encode("esp32-json", "esp32-press-01", t0 + i, fields))
        pub.stop()
        deadline = time.time() + 60
        while _stored(db) < ROWS:
            assert time.time() < deadline and up.poll() is None, f"{_stored(db)} of {ROWS} stored"
            time.sleep(0.1)

        common = ["detector", "retrain", "-f", str(plant), "--model", "bearing-wear", "--window", "1h"]
        from_store = _cli(*common, "--store", str(db), "--out", str(tmp_path / "from-store"))
        assert from_store.returncode == 0, from_store.stderr
        from_gateway = _cli(*common, "--gateway", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "from-gateway"))
        assert from_gateway.returncode == 0, from_gateway.stderr
        too_short = _cli(*common[:-1], "30s", "--store", str(db), "--out", str(tmp_path / "short"))
    finally:
        up.terminate()
        up.wait(30)

    store_card, gateway_card = (model_card.read(tmp_path / d) for d in ("from-store", "from-gateway"))
    assert store_card["training"]["rows"] == gateway_card["training"]["rows"] == ROWS - 520
    assert store_card["features"] == gateway_card["features"]
    assert store_card["provenance"]["nodes"] == gateway_card["provenance"]["nodes"]
    assert [n["node"] for n in store_card["provenance"]["nodes"]] == ["esp32-press-01"]  # rpi-line1-env lacks the sensors
    serving = model_card.read(tmp_path / "serving")
    assert store_card["provenance"]["servingSha256"] == serving["model"]["sha256"]
    assert store_card["recipe"] == serving["recipe"]
    # The same rows, the same recipe and seed: the same model.
    assert store_card["model"]["sha256"] == gateway_card["model"]["sha256"]
    for d in ("from-store", "from-gateway"):
        comparison = json.loads((tmp_path / d / "comparison.json").read_text())
        assert comparison["rows"] == 520
        assert 0 <= comparison["servingAlarmRate"] <= 1 and 0 <= comparison["shadowAlarmRate"] <= 1
        assert comparison["status"] in ("True", "False")
    assert "serving alarms on" in from_store.stdout and "candidate on" in from_store.stdout

    assert too_short.returncode == 2
    assert "too few rows in the last 30s" in too_short.stderr and "esp32-press-01 has 31 rows" in too_short.stderr
    assert not (tmp_path / "short" / "model.onnx").exists()
