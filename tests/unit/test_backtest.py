"""Backtest: stored history replayed through rules reports what the live path did, and what a tuned rule would do.

The store is filled by the real Pipeline with a known temperature history of two presses:
60 celsius, press-1 at 82 for 10 minutes, then both presses at 90 for 35 minutes (press-2
ten seconds behind), then 60 again; press-2 falls silent for 5 minutes near the end.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plantwatch.contracts.times import iso
from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.plant.load import load_plant as load_whole_plant
from plantwatch.rules.backtest import BacktestError, backtest, choose, load_plant, notifier_due
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT, ROOT

T0 = 1767254400.0  # 2026-01-01T08:00:00Z
STEP = 10.0
HOT_1 = (T0 + 600, T0 + 1200)  # press-1 at 82
#: Both presses at 90 from here for 35 min 30 s: `for` is 30 s, so each fires for exactly 35 min.
BOTH = T0 + 1800
HOT_2 = (BOTH, BOTH + 2130)
SILENT_2 = (T0 + 5400, T0 + 5700)  # press-2 sends nothing
END = T0 + 7200
PRESSES = ("esp32-press-01", "esp32-press-02")


def temperature(node: str, ts: float) -> float:
    lag = 0.0 if node == PRESSES[0] else STEP
    if HOT_2[0] + lag <= ts < HOT_2[1] + lag:
        return 90.0
    if node == PRESSES[0] and HOT_1[0] <= ts < HOT_1[1]:
        return 82.0
    return 60.0


def rule(name: str, critical: float, receivers=("console", "oncall"), **spec) -> dict:
    return {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": name},
        "spec": {
            "selector": {"sensorType": "temperature", "nodeSelector": {"matchLabels": {"plantwatch.io/line": "line-1"}}},
            "condition": {"type": "Threshold", "threshold": {"critical": str(critical), "hysteresis": "2"}},
            "for": "30s",
            "repeatInterval": "10m",
            "receivers": list(receivers),
            "escalation": [{"after": "20m", "receivers": ["pager"]}],
            **spec,
        },
    }


def receiver(name: str) -> dict:
    return {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertReceiver",
        "metadata": {"name": name},
        "spec": {
            "type": "Webhook",
            "webhook": {"urlSecretRef": {"name": "hooks", "key": name}},
            "grouping": {"by": ["rule"], "wait": "30s", "interval": "5m"},
        },
    }


def write(path: Path, *docs: dict) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> dict:
    """A plant folder (two presses, the rule at 80, receivers) and the store its live run filled."""
    root = tmp_path_factory.mktemp("backtest")
    folder = root / "plant"
    folder.mkdir()
    nodes = list(yaml.safe_load_all((EXAMPLE_PLANT / "nodes.yaml").read_text()))
    press = next(n for n in nodes if n["metadata"]["name"] == PRESSES[0])
    second = json.loads(json.dumps(press))
    second["metadata"]["name"] = PRESSES[1]
    second["spec"]["payload"]["topic"] = f"sensors/hall-1/{PRESSES[1]}/data"
    second["spec"].pop("credentials", None)
    write(folder / "nodes.yaml", press, second)
    write(folder / "receivers.yaml", receiver("oncall"), receiver("pager"))
    write(folder / "rules.yaml", rule("press-hot", 80))
    plant = load_whole_plant(folder)
    store = SqliteStore(root / "live.db")
    pipeline = Pipeline(plant, store, now=T0)
    ts = T0
    while ts < END:
        batch = [
            (f"sensors/hall-1/{node}/data", encode("esp32-json", node, ts, {"temperature_c": temperature(node, ts), "vibration_g": 1.0}))
            for node in PRESSES
            if not (node == PRESSES[1] and SILENT_2[0] <= ts < SILENT_2[1])
        ]
        pipeline.process(batch, ts + 1)
        ts += STEP
    live = store.query("SELECT fingerprint, state, severity, ts FROM alert_events ORDER BY ts, fingerprint")
    (temperatures,) = store.query("SELECT count(*) FROM readings WHERE sensor = 'temperature'")[0]
    assert store.count("readings") > 2 * 700
    store.close()
    return {"root": root, "plant": folder, "db": root / "live.db", "live": live, "temperatures": temperatures}


def run(history: dict, *files: Path, **kw):
    plant, replaced = load_plant([history["plant"], *files])
    return backtest(choose(plant, kw.pop("rules", ())), history["db"], replaced=replaced, **kw)


def test_the_same_rule_reports_exactly_the_episodes_the_live_run_stored(history):
    report = run(history)
    (hot,) = report.rules
    events = sorted((e for ep in hot.episodes for e in ep.events()), key=lambda e: (e[3], e[0]))
    assert events == history["live"]
    assert len(history["live"]) == 6  # press-1 twice, press-2 once: each fired and resolved
    assert [(e.node, e.started, e.resolved) for e in hot.episodes] == [
        (PRESSES[0], HOT_1[0] + 30, HOT_1[1]),
        (PRESSES[0], BOTH + 30, BOTH + 2130),
        (PRESSES[1], BOTH + 40, BOTH + 2140),
    ]
    assert report.readings == history["temperatures"]  # only the series the rule selects are read
    assert (report.start, report.end, hot.series) == (T0, END - STEP, 2)


def test_a_tuned_threshold_reports_fewer_episodes_and_notifications_by_grouping_repeat_and_escalation(history):
    tuned = write(history["root"] / "tuned.yaml", rule("press-hot", 85))
    before, after = run(history), run(history, tuned)
    assert after.replaced == {"press-hot": str(tuned)}
    (hot,) = after.rules
    assert len(hot.episodes) == 2 < len(before.rules[0].episodes)
    assert [e.duration(after.end) for e in hot.episodes] == [2100.0, 2100.0]  # 35 min each
    # Firing 35 min with repeatInterval 10m: a firing, 3 repeats, a resolve. console has each alert
    # in its own group; oncall groups by rule (one message for both presses, wait 30 s); pager
    # is the 20-minute escalation tier: told once, repeated once, then the resolve.
    assert after.notifications == {
        "console": {"firing": 2, "repeat": 6, "resolved": 2},
        "oncall": {"firing": 1, "repeat": 3, "resolved": 1},
        "pager": {"escalation": 1, "repeat": 1, "resolved": 1},
    }
    assert before.notifications["console"]["firing"] == 3


def test_a_maintenance_window_mutes_by_event_time_and_a_range_cuts_the_history(history, tmp_path):
    nodes = list(yaml.safe_load_all((history["plant"] / "nodes.yaml").read_text()))
    # press-1's window covers its first hot spell: never announced, and it resolved inside
    nodes[0]["spec"]["maintenanceWindows"] = [{"name": "wo-1", "start": iso(T0 + 300), "end": iso(T0 + 1500)}]
    folder = tmp_path / "plant"
    folder.mkdir()
    write(folder / "nodes.yaml", *nodes)
    for f in ("receivers.yaml", "rules.yaml"):
        (folder / f).write_text((history["plant"] / f).read_text())
    plant, _ = load_plant([folder])
    report = backtest(choose(plant, ["press-hot"]), history["db"], end=BOTH + 600)
    assert len(report.rules[0].episodes) == 3  # the engine still sees it: only telling is muted
    assert report.notifications["console"]["firing"] == 2
    assert report.rules[0].episodes[-1].resolved is None and report.end == BOTH + 600
    plain = run(history, start=HOT_1[1], end=BOTH + 600)
    assert [e.started for e in plain.rules[0].episodes] == [BOTH + 30, BOTH + 40]


def test_absence_fires_after_the_silence_and_resolves_at_the_next_reading(history, tmp_path):
    silent = {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": "press-silent"},
        "spec": {
            "selector": {"sensor": "temperature"},
            "condition": {"type": "Absence", "absence": {"after": "1m"}},
            "severity": "critical",
            "receivers": ["console"],
        },
    }
    report = run(history, write(tmp_path / "silent.yaml", silent), rules=["press-silent"])
    (episode,) = report.rules[0].episodes
    last = SILENT_2[0] - STEP
    assert (episode.fingerprint, episode.started, episode.resolved) == (f"press-silent/{PRESSES[1]}/temperature", last + 60, SILENT_2[1])
    assert report.notifications == {"console": {"firing": 1, "resolved": 1}}


def test_errors_say_what_was_wrong_and_what_is_accepted(history, tmp_path):
    plant, _ = load_plant([history["plant"]])
    not_a_store = tmp_path / "notes.db"
    not_a_store.write_text("not sqlite at all\n" * 100)
    with pytest.raises(BacktestError, match=r"not a Plantwatch store \(file is not a database\); give the SQLite file of `plantwatch up"):
        backtest(plant, not_a_store)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(BacktestError, match=r"no readings table \(node, sensor, ts, type, value, unit\)"):
        backtest(plant, other)
    humid = rule("press-hot", 80) | {"metadata": {"name": "humid"}}
    humid["spec"]["selector"] = {"sensorType": "humidity"}
    whole = load_plant([EXAMPLE_PLANT / "nodes.yaml", history["plant"] / "receivers.yaml", write(tmp_path / "h.yaml", humid)])[0]
    with pytest.raises(BacktestError, match=r"AlertRule humid matches no stored series: it selects rpi-line1-env/humidity.* no reading"):
        backtest(whole, history["db"])
    with pytest.raises(BacktestError, match=rf"no readings of the rules' series between {iso(T0 + 86400)} and .*, stored from {iso(T0)}"):
        backtest(plant, history["db"], start=T0 + 86400)
    with pytest.raises(BacktestError, match="is after --to"):
        backtest(plant, history["db"], start=T0 + 10, end=T0)


def test_notifier_due_is_the_earliest_wait_repeat_tier_or_window_edge():
    from plantwatch.alerts.lifecycle import Alert, Group, ReceiverRouting, RuleRouting, Told

    a = Alert("r/n/s", "r", "n", "s", "critical", "firing", 90.0, "hot", starts_at=100.0)
    rules = {"r": RuleRouting(("x",), ((1200.0, ("p",)),), 600.0)}
    receivers = {"x": ReceiverRouting(wait_s=30.0, interval_s=300.0), "p": ReceiverRouting()}
    told = {("x", "r/n/s", 100.0): Told("x", "r/n/s", 100.0, "critical", False, 130.0)}
    assert notifier_due(130.0, [a], told, {}, rules, receivers, {}) == 730.0  # the repeat
    assert notifier_due(130.0, [a], told, {}, rules, receivers, {"n": [(200.0, 400.0)]}) == 200.0
    assert notifier_due(730.0, [a], {}, {("x", "k"): Group("x", "k", 700.0, 600.0)}, rules, receivers, {}) == 900.0  # interval
    assert notifier_due(1000.0, [a], {}, {}, rules, receivers, {}) == 1300.0  # the tier
    assert notifier_due(1300.0, [a], {}, {}, rules, receivers, {}) is None


def test_the_command_prints_a_table_and_json(history, tmp_path):
    tuned = write(tmp_path / "tuned.yaml", rule("press-hot", 85))
    cmd = [sys.executable, "-m", "plantwatch.cli", "rules", "backtest", "-f", str(history["plant"]), "-f", str(tuned)]
    cmd += ["--store", str(history["db"])]
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert table.returncode == 0, table.stderr
    assert f"AlertRule press-hot (2 series, from {tuned}): 2 episodes, firing 1h 10m in all" in table.stdout
    assert f"esp32-press-01/temperature  critical  {iso(BOTH + 30)}  {iso(BOTH + 2130)}  35m" in table.stdout
    assert [line.split() for line in table.stdout.splitlines()[-4:]] == [
        ["RECEIVER", "FIRING", "REPEAT", "ESCALATION", "RESOLVED", "TOTAL"],
        ["console", "2", "6", "0", "2", "10"],
        ["oncall", "1", "3", "0", "1", "5"],
        ["pager", "0", "1", "1", "1", "3"],
    ]
    out = subprocess.run([*cmd, "--json", "--from", iso(T0 + 1200), "--to", str(T0 + 3000)], capture_output=True, text=True, timeout=60)
    doc = json.loads(out.stdout)
    assert (doc["from"], doc["to"]) == (iso(T0 + 1200), iso(T0 + 3000))
    assert [e["firing_at_end"] for e in doc["rules"][0]["episodes"]] == [True, True]
    bad = subprocess.run([*cmd[:-2], "--store", str(tmp_path / "missing.db")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith(f"plantwatch rules backtest: --store {tmp_path / 'missing.db'}: no such file; give the SQLite file")
