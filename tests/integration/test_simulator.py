"""`plantwatch up --simulate` on a plant engineer's own plant (no `plantwatch.io/line` label), on real mosquitto:
the default scenario fires the plant's own Threshold rules and resolves them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.bench_plant import BENCH_PLANT


def test_the_default_scenario_fires_and_resolves_a_users_own_threshold_rules(tmp_path):
    (tmp_path / "plant").mkdir()
    (tmp_path / "plant" / "bench.yaml").write_text(BENCH_PLANT)
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "plantwatch.cli", "up", "-f", str(tmp_path / "plant"), "--simulate", "--broker-kind", "mosquitto"]
        + ["--duration", "22", "--http-port", "0", "--db", str(tmp_path / "plant.db"), "--summary-json", str(summary)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    out, result = proc.stdout, json.loads(summary.read_text())
    # the banner says what the simulator will do, one line per fault
    assert "simulate: excursion on chiller-1/water-temperature from 3s to " in out
    assert "(fires chiller-warm: warning 8, critical 12, for 3s)" in out
    assert "simulate: excursion on compressor-1/line-pressure from 6s to " in out
    for rule, series in (("chiller-warm", "chiller-1/water-temperature"), ("air-pressure-low", "compressor-1/line-pressure")):
        warning = out.index(f"ALERT WARNING   {rule} {series}")
        critical = out.index(f"ALERT CRITICAL  {rule} {series}")
        assert warning < critical < out.index(f"ALERT RESOLVED  {rule} {series}"), out
    assert result["alerts_firing"] == []
    # a few bad payloads, far fewer than the readings stored
    assert 0 < result["rejected"] == result["simulated"]["sent_invalid"] < result["readings_stored"] / 5
