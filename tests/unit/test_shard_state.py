"""A shard's state moves between owners (rule snapshots, the store's fencing epochs); shard threads share stdout."""

from __future__ import annotations

import orjson
import pytest

from plantwatch.readings import Reading
from plantwatch.rules.engine import RuleEngine
from plantwatch.store.shard_state import Checkpoint, Fenced
from plantwatch.store.sqlite import SqliteStore

VALUES = [60, 71, 72, 73, 74, 82, 83, 79, 78.5, 69, 67, 95, 60, 71, 71.5, 72, 60]


def press(values, t0: float = 1000.0) -> list[Reading]:
    return [Reading("esp32-press-01", "temperature", "temperature", float(v), t0 + i * 0.5, "celsius") for i, v in enumerate(values)]


def run(engine: RuleEngine, readings: list[Reading]) -> list:
    return [e for r in readings for e in engine.on_reading(r)]


def test_a_restored_engine_continues_exactly_where_the_snapshot_was_taken(plant):
    readings = press(VALUES * 3)
    whole = run(RuleEngine(plant, 0.0), readings)
    assert {e.state for e in whole} == {"firing", "resolved"}
    for cut in (1, 5, 9, 20, 40):
        first = RuleEngine(plant, 0.0)
        before = run(first, readings[:cut])
        saved = orjson.loads(orjson.dumps(first.snapshot()))  # as it is stored
        second = RuleEngine(plant, 0.0)
        second.restore(saved)
        assert before + run(second, readings[cut:]) == whole, f"cut at {cut}"


def test_readings_the_previous_owner_already_applied_change_nothing(plant):
    """The new owner gets again what the old one committed but never acknowledged."""
    readings = press(VALUES * 2)
    whole = run(RuleEngine(plant, 0.0), readings)
    for cut in range(6, len(readings)):
        first = RuleEngine(plant, 0.0)
        before = run(first, readings[:cut])
        second = RuleEngine(plant, 0.0)
        second.restore(first.snapshot())
        assert run(second, readings[cut - 6 : cut]) == [], f"the batch before {cut} fired again"
        assert before + run(second, readings[cut:]) == whole, f"cut at {cut}"


def test_an_absence_alert_survives_the_move(plant):
    first = RuleEngine(plant, 1000.0)
    firing = first.tick(1100.0)
    assert any(e.rule == "node-silent" and e.state == "firing" for e in firing)
    second = RuleEngine(plant, 1100.0)
    second.restore(first.snapshot())
    assert second.tick(1101.0) == []  # not fired a second time
    resolved = second.on_reading(press([60], t0=1102.0)[0])
    assert any(e.rule == "node-silent" and e.state == "resolved" for e in resolved)


def test_a_superseded_owner_commits_nothing(tmp_path):
    path = tmp_path / "plant.db"
    old, new = SqliteStore(path), SqliteStore(path)  # two replicas sharing the file
    epoch, state = old.claim_shard(3, "replica-a", 100.0)
    assert (epoch, state) == (1, None)
    assert old.write(press([60]), checkpoint=Checkpoint(3, epoch, b'{"v": 1}')) == 1
    new_epoch, state = new.claim_shard(3, "replica-b", 101.0)
    assert (new_epoch, state) == (2, b'{"v": 1}')
    with pytest.raises(Fenced, match=r"shard 3: epoch 1 was superseded by epoch 2 \(replica-b\)"):
        old.write(press([61], t0=2000.0), checkpoint=Checkpoint(3, epoch, b'{"v": 2}'))
    assert old.count("readings") == 1  # the refused batch left nothing behind
    assert new.write(press([61], t0=2000.0), checkpoint=Checkpoint(3, new_epoch, b'{"v": 2}')) == 1
    new.renew_shard(3, new_epoch, 101.5)
    with pytest.raises(Fenced):
        old.renew_shard(3, epoch, 101.5)  # a superseded owner cannot keep the lease alive either
    assert old.shard_lease(3) == (2, "replica-b", 101.5)
    assert new.claim_shard(3, "replica-a", 102.0) == (3, b'{"v": 2}')
    assert old.shard_lease(3) == (3, "replica-a", 102.0) and old.shard_lease(4) is None


def test_a_committed_batch_renews_the_owners_lease(tmp_path):
    """An owner busy committing long batches (or waiting for the write lock) does not tick, but is alive."""
    import time

    store = SqliteStore(tmp_path / "plant.db")
    epoch, _ = store.claim_shard(5, "replica-a", time.time() - 60.0)  # its last tick: a minute ago
    before = time.time()
    store.write(press([60]), checkpoint=Checkpoint(5, epoch, b"{}"))
    _, owner, renewed = store.shard_lease(5)
    assert owner == "replica-a" and before <= renewed <= time.time()


def test_a_batch_commits_the_state_it_was_prepared_with_though_the_next_one_is_decoded_already(plant, tmp_path):
    """A shard decodes its next batch while the last one commits (ingest/runner.Committer). The checkpoint
    committed with a batch is the state right after it, so that when the owner dies before the next batch
    is stored, the new owner gets that batch again and fires its alerts, exactly as one uninterrupted owner."""
    from plantwatch.ingest.formats import encode
    from plantwatch.ingest.pipeline import Pipeline
    from plantwatch.ingest.scaleout import ShardStore

    topic = "sensors/hall-1/esp32-press-01/data"
    messages = [
        (topic, encode("esp32-json", "esp32-press-01", 1000.0 + i * 0.5, {"temperature_c": float(v)})) for i, v in enumerate(VALUES)
    ]
    first, second = messages[:4], messages[4:]

    def owner(store: SqliteStore, name: str) -> Pipeline:
        epoch, state = store.claim_shard(0, name, 1.0)
        view = ShardStore(store, 0, epoch)
        view.pipeline = Pipeline(plant, view, now=1000.0)
        if state is not None:
            view.pipeline.restore(orjson.loads(state))
        return view.pipeline

    uninterrupted = Pipeline(plant, SqliteStore(tmp_path / "reference.db"), now=1000.0)
    uninterrupted.process(first, 1001.0)
    expected = uninterrupted.prepare(second, 1001.0).alerts
    assert {e.state for e in expected} >= {"firing"}

    store = SqliteStore(tmp_path / "shared.db")
    dying = owner(store, "replica-a")
    batch = dying.prepare(first, 1001.0)
    dying.prepare(second, 1001.0)  # decoded while the first commits; its commit never happens (the owner dies)
    dying.commit(batch)
    successor = owner(store, "replica-b")  # restores what committed with the first batch
    assert successor.prepare(second, 1001.0).alerts == expected
