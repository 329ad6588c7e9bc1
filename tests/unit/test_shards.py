"""Shard assignment: stable, balanced, and a rescale moves only what it must."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from plantwatch.ingest.shards import ShardPlan, assignment, node_key, ordinal, owned_shards, shard_of


def test_a_node_keeps_its_shard_across_processes():
    """Python's hash() is salted per process; the shard must not be, or replicas would disagree."""
    names = [f"esp32-press-{i:02d}" for i in range(20)]
    here = [shard_of(n, 16) for n in names]
    code = f"from plantwatch.ingest.shards import shard_of; print([shard_of(n, 16) for n in {names!r}])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert str(here) == there.strip()


def test_nodes_spread_over_the_shards():
    counts = Counter(shard_of(f"node-{i}", 16) for i in range(1600))
    assert len(counts) == 16
    assert max(counts.values()) < 2 * min(counts.values())


@pytest.mark.parametrize("shards", [1, 7, 16, 64])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5, 16, 20])
def test_every_shard_has_one_owner_and_loads_differ_by_at_most_one(shards, replicas):
    owner = assignment(shards, replicas)
    assert len(owner) == shards and all(0 <= r < replicas for r in owner)
    load = Counter(owner)
    loads = [load[r] for r in range(replicas)]
    assert max(loads) - min(loads) <= 1
    assert sorted(k for r in range(replicas) for k in owned_shards(r, shards, replicas)) == list(range(shards))


@pytest.mark.parametrize("before,after", [(1, 2), (2, 3), (3, 4), (2, 5), (5, 16)])
def test_a_scale_up_moves_shards_only_to_the_new_replicas(before, after):
    old, new = assignment(16, before), assignment(16, after)
    moved = [k for k in range(16) if old[k] != new[k]]
    assert all(new[k] >= before for k in moved)
    # exactly what the new replicas own: nothing moves between the replicas that stay
    assert len(moved) == sum(1 for r in new if r >= before)


def test_a_scale_down_moves_shards_only_away_from_the_removed_replicas():
    old, new = assignment(16, 3), assignment(16, 1)
    assert all(old[k] != 0 for k in range(16) if old[k] != new[k])
    three, two = assignment(16, 3), assignment(16, 2)
    assert all(three[k] == 2 for k in range(16) if three[k] != two[k])


def test_assignment_is_the_same_every_time():
    assert assignment(16, 3) == assignment(16, 3)
    assert owned_shards(0, 16, 1) == list(range(16))


def test_bad_counts_say_what_is_accepted():
    with pytest.raises(ValueError, match="at least 1"):
        assignment(16, 0)
    with pytest.raises(ValueError, match="outside 0..2"):
        owned_shards(3, 16, 3)


def test_ordinal_comes_from_a_statefulset_pod_name():
    assert ordinal("plantwatch-gateway-0") == 0
    assert ordinal("plantwatch-gateway-12") == 12
    with pytest.raises(ValueError, match="--replica-index"):
        ordinal("plantwatch-gateway-7d9f8c6b5-x2x9z")


def test_a_sparkplug_edge_node_and_its_devices_share_a_shard():
    nodes = [
        ("edge-1", "sparkplug-b", "spBv1.0/plant/NDATA/edge-1"),
        ("edge-1-pump", "sparkplug-b", "spBv1.0/plant/DDATA/edge-1/pump"),
        ("press", "esp32-json", "sensors/hall-1/press/data"),
    ]
    plan = ShardPlan.of(nodes, 16)
    assert node_key(*nodes[1]) == "spBv1.0/plant/edge-1"
    assert plan.node_shard["edge-1"] == plan.node_shard["edge-1-pump"]
    assert "spBv1.0/plant/+/edge-1/#" in plan.filters[plan.node_shard["edge-1"]]
    # births and deaths of the edge node route where its data does
    assert plan.shard_of_topic("spBv1.0/plant/NBIRTH/edge-1") == plan.node_shard["edge-1"]
    assert plan.shard_of_topic("spBv1.0/plant/DBIRTH/edge-1/pump") == plan.node_shard["edge-1"]
    assert plan.shard_of_topic("sensors/hall-1/press/data") == plan.node_shard["press"]
    assert plan.shard_of_topic("sensors/hall-1/stranger/data") is None


def test_only_the_unknown_shard_takes_the_wildcards():
    nodes = [(f"n{i}", "esp32-json", f"sensors/n{i}/data") for i in range(40)]
    plan = ShardPlan.of(nodes, 4)
    assert plan.subscriptions(0, dead_letter_unknown=True) == ["sensors/#"]
    assert plan.subscriptions(0, dead_letter_unknown=False) == sorted(plan.filters[0])
    # each node's data and status topics are in exactly one shard's filters, the same one
    every = sorted(f for k in range(4) for f in plan.filters[k])
    assert every == sorted(f"sensors/n{i}/{level}" for i in range(40) for level in ("data", "status"))
    assert all(plan.shard_of_topic(f"sensors/n{i}/status") == plan.node_shard[f"n{i}"] for i in range(40))


def test_serve_ingest_says_what_a_replica_index_must_be(monkeypatch, capsys):
    from plantwatch.cli import main
    from tests.conftest import EXAMPLE_PLANT

    monkeypatch.setenv("HOSTNAME", "plantwatch-gateway-7d9f8c6b5-x2x9z")
    base = ["serve", "ingest", "-f", str(EXAMPLE_PLANT), "--broker", "mqtt://127.0.0.1:1", "--shards", "16"]
    assert main(base) == 2
    assert "give --replica-index" in capsys.readouterr().err
    assert main([*base, "--replicas", "3", "--replica-index", "3"]) == 2
    assert "--replica-index must be within 0..--replicas-1 (got --shards 16, index 3, --replicas 3)" in capsys.readouterr().err
