"""Gateways that know neither how many they are nor which one each is (`--membership store`), as an
HPA's Deployment runs them: 1 → 3 → 1 mid-stream on one real PostgreSQL, one stopped by SIGTERM and
one SIGKILLed; real mosquitto, real processes. The outcome must equal one unsharded gateway's.
"""

from __future__ import annotations

import threading
import time

from plantwatch.alerts.notifier import LEASE_S
from plantwatch.plant.load import load_plant
from tests.integration import test_scale_out as scale_out
from tests.integration.test_postgres_gateways import Where, assert_stored_like_one_gateway, broker, pg_rows, url  # noqa: F401, F811 (fixtures)
from tests.support.alerts import announce
from tests.support.postgres import password, server  # noqa: F401 (fixtures)

#: Readings a second while the members come and go.
RATE = 200.0


def member(plant_dir, broker_url, db) -> scale_out.Gateway:
    # neither --replicas nor --replica-index: with a PostgreSQL --db, membership is the store's
    return scale_out.Gateway(plant_dir, broker_url, db, "pw", "--shards", str(scale_out.SHARDS), "--shard-lease-seconds", "1")


def paced(broker_url: str, messages, paused: threading.Event, resume: threading.Event) -> None:
    """Publish at RATE in chunks of 100 (bounded: the stream's own length); the last third once `resume` is set."""
    rest = 2 * len(messages) // 3
    for start in range(0, len(messages), 100):
        if start >= rest and not paused.is_set():
            paused.set()
            resume.wait(60)
        scale_out.publish(broker_url, messages[start : start + 100], stranger_every=97)
        time.sleep(100 / RATE)


def owners(db_url: str) -> set[str]:
    return {o for (o,) in pg_rows(db_url, "SELECT DISTINCT owner FROM shard_checkpoints")}


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.05)


def test_members_joining_leaving_and_killed_mid_stream_store_and_alert_exactly_like_one_gateway(tmp_path, broker, url):  # noqa: F811
    plant_dir = tmp_path / "plant"
    plant_dir.mkdir()
    (plant_dir / "plant.yaml").write_text(scale_out.plant_yaml())
    messages = scale_out.stream(float(int(time.time()) - 3600))
    ref_db, db = tmp_path / "reference.db", Where(url)
    db.parent = tmp_path

    reference = scale_out.Gateway(plant_dir, broker.url, ref_db, "reference").wait_ready()
    first = member(plant_dir, broker.url, db).wait_ready()
    gateways, killed = [reference, first], []
    paused, resume = threading.Event(), threading.Event()
    sender = threading.Thread(target=paced, args=(broker.url, messages, paused, resume))
    try:
        wait_until(lambda: len(owners(url)) == 1, "the first member did not claim the shards")
        [first_id] = owners(url)
        sender.start()
        wait_until(lambda: scale_out.stored(ref_db) >= len(messages) // 6, "the stream did not start")
        # 1 → 3: the newcomers register, every member computes the same division, the newcomers
        # claim their shards (fencing the first member off them) and the first one lets them go
        joined = [member(plant_dir, broker.url, db) for _ in range(2)]
        gateways += joined
        for g in joined:
            g.wait_ready()
        wait_until(lambda: len(owners(url)) == 3, f"the shards were not divided among 3 members: {owners(url)}")
        assert not paused.is_set(), "two thirds of the stream went by before the members joined: nothing was handed over mid-stream"
        # 3 → 1 mid-stream: one leaves on SIGTERM (its shards are taken at the survivor's next
        # heartbeat), one is SIGKILLed (its shards wait in the broker until its heartbeat is a lease old)
        resume.set()
        assert joined[0].stop() == 0
        joined[1].kill()
        killed.append(joined[1])
        assert sender.is_alive(), "the stream ended before the members left: nothing was handed over mid-stream"
        sender.join(60)
        wait_until(lambda: owners(url) == {first_id}, f"the survivor did not take every shard: {owners(url)}")
        assert scale_out.wait_stored(ref_db, len(messages)) == len(messages)
        wait_until(lambda: pg_rows(url, "SELECT count(*) FROM readings")[0][0] >= len(messages), "readings missing", 60)
    finally:
        resume.set()
        codes = {g.proc.pid: g.stop() for g in gateways if g not in killed}
    assert set(codes.values()) == {0}
    # those stopped by SIGTERM left the members' table; the killed one stays until it is forgotten
    members = [m for (m,) in pg_rows(url, "SELECT id FROM gateway_members")]
    assert first_id not in members and len(members) <= 1, members

    want = assert_stored_like_one_gateway(url, ref_db, plant_dir, messages)
    later = announce(load_plant(plant_dir), url, now=time.time() + LEASE_S).splitlines()
    sent = [n for g in gateways if g is not reference for n in g.notifications()] + later
    twice = {line for line in sent if sent.count(line) > 1}
    assert twice <= set(joined[1].notifications()) and len(twice) <= 1, twice  # the SIGKILLed one's last line, at most
    scale_out.assert_announced_once(list(dict.fromkeys(sent)), want)
