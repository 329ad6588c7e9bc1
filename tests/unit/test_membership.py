"""Gateways divide the shards among the live members alike, whoever computes it (ingest/membership.py)."""

from __future__ import annotations

import random

import pytest

from plantwatch.ingest.membership import assign, live

SHARDS = list(range(16))


def members(n: int) -> list[str]:
    return [f"plantwatch-gateway-{i:02d}-{i * 7919:08x}" for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 20])
def test_every_shard_has_exactly_one_owner_and_loads_differ_by_at_most_one(n):
    owned = assign(SHARDS, members(n))
    assert set(owned) == set(members(n))
    given = [k for ks in owned.values() for k in ks]
    assert sorted(given) == SHARDS
    loads = [len(ks) for ks in owned.values()]
    assert max(loads) - min(loads) <= 1


def test_every_member_computes_the_same_assignment_whatever_order_it_lists_them_in():
    names = members(5)
    want = assign(SHARDS, names)
    for seed in range(20):
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        assert assign(SHARDS, shuffled) == want
        assert assign(list(reversed(SHARDS)), shuffled + shuffled[:2]) == want


def owner_of(owned: dict[str, tuple[int, ...]], k: int) -> str:
    return next(m for m, ks in owned.items() if k in ks)


@pytest.mark.parametrize("n", range(1, 8))
def test_an_arrival_or_departure_moves_little_more_than_the_share_of_the_member_that_came_or_went(n):
    rng = random.Random(n)
    for _ in range(10):
        names = [f"gw-{rng.getrandbits(32):08x}" for _ in range(n + 1)]
        small, big = assign(SHARDS, names[:n]), assign(SHARDS, names)
        moved = [k for k in SHARDS if owner_of(small, k) != owner_of(big, k)]
        # hashing under a cap of ceil(16/members) shuffles a few shards between survivors too,
        # where sorted round-robin would move most of them (e.g. 10 of 16 going from 2 to 3)
        assert len(big[names[n]]) <= len(moved) <= len(big[names[n]]) + 4, (names, moved)


def test_only_members_heard_from_within_a_lease_are_live():
    rows = [("a", 100.0), ("b", 95.0), ("c", 94.9), ("d", 101.0)]
    assert live(rows, now=100.0, lease_s=5.0) == ["a", "b", "d"]
    assert assign(SHARDS, live(rows, 100.0, 5.0)).keys() == {"a", "b", "d"}


def test_no_members_own_nothing_and_more_members_than_shards_leave_some_idle():
    assert assign(SHARDS, []) == {}
    owned = assign([0, 3], members(4))
    assert sorted(k for ks in owned.values() for k in ks) == [0, 3]
    assert sorted(len(ks) for ks in owned.values()) == [0, 0, 1, 1]


def test_serve_ingest_refuses_store_membership_without_a_shared_store_or_beside_a_fixed_index(capsys):
    from plantwatch.cli import main
    from tests.conftest import EXAMPLE_PLANT

    base = ["serve", "ingest", "-f", str(EXAMPLE_PLANT), "--broker", "mqtt://127.0.0.1:1", "--shards", "16"]
    assert main([*base, "--db", "plant.db", "--membership", "store"]) == 2
    assert "(got --db a SQLite file); use a postgresql:// --db" in capsys.readouterr().err
    pg = ["--db", "postgresql://plantwatch@127.0.0.1:1/plantwatch"]
    assert main([*base, *pg, "--membership", "store", "--replicas", "2"]) == 2
    assert "(got --db a PostgreSQL URL, --replicas/--replica-index)" in capsys.readouterr().err
