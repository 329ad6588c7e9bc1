"""Logs shipped by a real shipper: Telegraf's tail input reads a running `plantwatch up`'s JSON log (its
stderr in a file, as a pod's container log is) and writes every line to a real InfluxDB, tagged by plant,
node, component and level; the dead letters and alerts are queried back with their labels."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import EXAMPLE_PLANT
from tests.support.influxd import BUCKET, ORG, TOKEN, Influxd
from tests.support.telegraf import Telegraf

#: The shipper's configuration, as docs/monitoring.md gives it: tags are what log stores index on,
#: fields the rest. Each line is stamped when read (ns), since two lines of one millisecond and one
#: tag set would be one point in InfluxDB; the line's own time is kept as a field.
TAIL = """
[agent]
  omit_hostname = true
  flush_interval = "500ms"
[[inputs.tail]]
  files = ["{log}"]
  initial_read_offset = "beginning"
  watch_method = "poll"
  path_tag = ""
  name_override = "plantwatch_log"
  data_format = "json"
  tag_keys = ["plant", "node", "component", "level"]
  json_string_fields = ["time", "message", "logger", "correlation_id", "reason", "rule", "sensor", "severity", "state", "topic"]
[[outputs.influxdb_v2]]
  urls = ["{url}"]
  token = "{token}"
  organization = "{org}"
  bucket = "{bucket}"
"""


def shipped(server: Influxd) -> list[dict]:
    """Every log line in the sink: its tags and fields (those it has), one dict per line (Flux over the HTTP query API)."""
    flux = (
        f'from(bucket: "{BUCKET}") |> range(start: 0) |> filter(fn: (r) => r._measurement == "plantwatch_log")'
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") |> group()'
    )
    with server.client() as c:
        return [
            {k: v for k, v in r.values.items() if v is not None and not k.startswith("_") and k not in ("result", "table")}
            for t in c.query_api().query(flux)
            for r in t.records
        ]


def test_telegraf_ships_the_dead_letter_and_alert_lines_with_their_labels(tmp_path):
    server = Influxd(tmp_path / "influxd")
    (tmp_path / "influxd").mkdir()
    server.start()
    log = tmp_path / "plantwatch.log"
    try:
        telegraf = Telegraf(TAIL.format(log=log, url=server.url, token=TOKEN, org=ORG, bucket=BUCKET), tmp_path)
        with open(log, "w") as stderr:
            telegraf.start()
            try:
                # The default level (WARNING), JSON as the chart's pods log.
                up = subprocess.run(
                    [sys.executable, "-m", "plantwatch.cli", "--log-format", "json", "up", "-f", str(EXAMPLE_PLANT), "--simulate"]
                    + ["--duration", "20", "--http-port", "0", "--db", str(tmp_path / "plant.db")],
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env={**os.environ, "PLANTWATCH_PLANT": "hall-a"},
                    timeout=90,
                )
                assert up.returncode == 0, log.read_text()[-3000:]
                lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
                telegraf.wait_written("outputs.influxdb_v2", len(lines), 30)
            finally:
                telegraf.stop()
        points = shipped(server)
    finally:
        server.stop()

    assert len(points) == len(lines)  # every line arrived, none merged into another
    assert all(p["plant"] == "hall-a" and p["component"] and p["level"] for p in points)
    dead = [p for p in points if p["message"].startswith("rejected: ")]
    # One line per node and reason at the default level; each names its node (an unknown topic names none).
    assert {p["reason"] for p in dead} >= {"malformed", "out_of_range", "not_finite", "device_mismatch", "unknown_node"}
    malformed = next(p for p in dead if p["reason"] == "malformed")
    assert malformed["node"] == "esp32-press-01" and malformed["component"] == "ingest" and malformed["level"] == "warning"
    assert re.fullmatch(r"[0-9a-f]{16}-\d+", malformed["correlation_id"])  # the dead letter's id: <batch>-<n>
    firing = [p for p in points if p["message"].startswith("alert firing") and p["rule"] == "machine-overtemperature"]
    assert {p["severity"] for p in firing} >= {"warning", "critical"}
    assert all(p["node"] == "esp32-press-01" and p["component"] == "ingest" for p in firing)
    assert all(re.fullmatch(r"[0-9a-f]{16}", p["correlation_id"]) for p in firing)  # the batch that fired it
    silent = next(p for p in points if p["message"].startswith("alert firing") and p["rule"] == "node-silent")
    assert silent["node"] == "coldroom-feed" and "correlation_id" not in silent  # fired by the clock, in no batch
