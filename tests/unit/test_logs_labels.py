"""JSON log lines carry what log stores index on: plant, component, node, and the batch's correlation id."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import orjson

from plantwatch import logs
from plantwatch.ingest.dead_letters import DEAD_LETTER_PREFIX
from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.logs import JsonFormatter, correlated, process_labels
from plantwatch.plant.load import load_plant
from plantwatch.store.influx import SpoolDepth
from plantwatch.store.sqlite import SqliteStore

PLANT = Path(__file__).resolve().parents[2] / "examples" / "plant"
TOPIC = "sensors/hall-1/esp32-press-01/data"


def line(logger: str, msg: str = "m", **extra) -> dict:
    r = logging.makeLogRecord({"name": logger, "levelno": logging.WARNING, "levelname": "WARNING", "msg": msg, **extra})
    return json.loads(JsonFormatter().format(r))


def test_every_line_names_its_plant_and_component(monkeypatch):
    monkeypatch.setitem(logs._LABELS, "plant", "hall-a")  # as `configure` sets them for the process
    assert line("plantwatch.ingest.pipeline") | {"time": None} == {
        "time": None,
        "level": "warning",
        "logger": "plantwatch.ingest.pipeline",
        "message": "m",
        "plant": "hall-a",
        "component": "ingest",
    }
    assert line("plantwatch_operator.handlers")["component"] == "operator"
    assert line("kopf.objects")["component"] == "kopf"


def test_the_plant_is_named_or_the_pods_namespace():
    assert process_labels({"PLANTWATCH_PLANT": "hall-a", "POD_NAMESPACE": "plant-b"}) == {"plant": "hall-a"}
    assert process_labels({"POD_NAMESPACE": "plant-b"}) == {"plant": "plant-b"}
    assert process_labels({"PLANTWATCH_PLANT": ""}) == {}


def test_lines_logged_while_a_batch_is_handled_carry_its_correlation_id():
    with correlated("b-1"):
        assert line("plantwatch.store")["correlation_id"] == "b-1"
        assert line("plantwatch.ingest", correlation_id="b-1-0")["correlation_id"] == "b-1-0"  # a line's own id wins
    assert "correlation_id" not in line("plantwatch.store")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)  # the pods' default level
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


class _LoggingSink:
    """A sink that logs while it writes, as the InfluxDB sink does when it spools."""

    def write(self, readings=(), alerts=(), dead_letters=()) -> None:
        logging.getLogger("plantwatch.store.influx").warning("spooled a batch")

    def spool_depth(self):
        return SpoolDepth(0, 0)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_dead_letter_is_logged_at_the_default_level_with_its_batch_and_node(tmp_path):
    published: list[tuple[str, bytes]] = []
    now = time.time()
    pipeline = Pipeline(
        load_plant(PLANT), SqliteStore(tmp_path / "p.db"), publish=lambda t, b: published.append((t, b)), sinks=[_LoggingSink()]
    )
    capture = _Capture()
    logger = logging.getLogger("plantwatch")
    logger.addHandler(capture)
    try:
        good = encode(
            "esp32-json", "esp32-press-01", now, {"temperature_c": 45.0, "vibration_g": 1.0, "current_a": 12.0, "battery_voltage": 3.7}
        )
        bad = b'{"temperature_c": "hot"}'
        pipeline.process([(TOPIC, good), (TOPIC, bad), (TOPIC, bad)], now)
    finally:
        logger.removeHandler(capture)
    letters = [orjson.loads(body) for topic, body in published if topic.startswith(DEAD_LETTER_PREFIX)]
    assert len(letters) == 2
    dead = [x for x in capture.lines if x["message"].startswith("rejected: ")]
    # One per node and reason at WARNING: a flood of bad messages does not flood the default log.
    assert len(dead) == 1, capture.lines
    assert dead[0]["node"] == "esp32-press-01" and dead[0]["component"] == "ingest" and dead[0]["level"] == "warning"
    assert dead[0]["correlation_id"] == letters[0]["correlation_id"]
    batch = letters[0]["correlation_id"].rsplit("-", 1)[0]
    assert {x["correlation_id"] for x in letters} == {f"{batch}-0", f"{batch}-1"}
    spooled = [x for x in capture.lines if x["message"] == "spooled a batch"]
    assert spooled and spooled[0]["correlation_id"] == batch and spooled[0]["component"] == "store"
