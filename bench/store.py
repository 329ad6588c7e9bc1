"""Store benchmark: the store of record on PostgreSQL against embedded SQLite, in one run.

    python bench/store.py [--readings 300000] [--nodes 1000] [--rounds 3] [--out bench/results/store.json]

A plant of `--nodes` nodes at one reading a second: each batch is one second of the plant
(one reading per node, keys (node, temperature, ts)), written through the store's `write()`
with a shard checkpoint, as a sharded gateway commits it (one transaction per batch). Both
stores run on this machine's disk: SQLite a file, PostgreSQL the Debian server started by
tests/support/postgres.py (fsync on, defaults otherwise). Reported per store: rows/s (median
of rounds that alternate the stores), bytes on disk per reading (table and indexes; SQLite's
file after a WAL checkpoint), WAL bytes written per reading (PostgreSQL), and the day of a
plant of that size (86,400 × nodes readings) extrapolated. `ratio_vs_sqlite` = PostgreSQL's
rate / SQLite's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

from plantwatch.readings import Reading  # noqa: E402
from plantwatch.store import postgres  # noqa: E402
from plantwatch.store.shard_state import Checkpoint  # noqa: E402
from plantwatch.store.sqlite import SqliteStore  # noqa: E402
from tests.support.postgres import Postgres  # noqa: E402

#: A shard's checkpoint as large as a 1,000-node shard's rule state roughly is (bytes).
CHECKPOINT_BYTES = 4096


def batches(nodes: int, seconds: int, t0: float) -> list[list[Reading]]:
    return [
        [Reading(f"press-{n:04d}", "temperature", "temperature", 60.0 + (n * 7 + s) % 40 / 4, t0 + s, "celsius") for n in range(nodes)]
        for s in range(seconds)
    ]


def run(store: SqliteStore, plant: list[list[Reading]]) -> float:
    """Readings per second written through `store`, a checkpoint with every batch."""
    epoch, _ = store.claim_shard(0, "bench", time.time())
    state = os.urandom(CHECKPOINT_BYTES)
    start = time.perf_counter()
    for batch in plant:
        store.write(batch, checkpoint=Checkpoint(0, epoch, state))
    return sum(map(len, plant)) / (time.perf_counter() - start)


def sqlite_bytes(store: SqliteStore, path: Path) -> int:
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def pg_bytes(store: SqliteStore) -> int:
    return store.query("SELECT pg_total_relation_size('readings')")[0][0]


def pg_wal(store: SqliteStore) -> int:
    return int(store.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")[0][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=300_000, help="readings per store per round")
    ap.add_argument("--nodes", type=int, default=1000, help="nodes of the plant: readings per batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "store.json"))
    args = ap.parse_args()
    seconds = args.readings // args.nodes
    server = Postgres()
    server.start()
    os.environ[postgres.PASSWORD_FILE_ENV] = str(server.password_file)
    rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    sizes: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    wal: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="plantwatch-bench-store-") as tmp:
            for r in range(args.rounds):
                plant = batches(args.nodes, seconds, 1.7e9 + r * 1e6)
                n = seconds * args.nodes
                path = Path(tmp) / f"r{r}.db"
                lite = SqliteStore(path)
                rates["sqlite"].append(run(lite, plant))
                sizes["sqlite"].append(sqlite_bytes(lite, path) / n)
                lite.close()
                pg = postgres.PostgresStore(server.fresh_database(f"bench{r}"))
                before = pg_wal(pg)
                rates["postgresql"].append(run(pg, plant))
                wal.append((pg_wal(pg) - before) / n)
                sizes["postgresql"].append(pg_bytes(pg) / n)
                pg.close()
    finally:
        server.close()
    day = 86_400 * args.nodes
    report: dict[str, object] = {
        "benchmark": "store",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "readings_per_round": seconds * args.nodes,
        "readings_per_batch": args.nodes,
        "rounds": args.rounds,
    }
    for name in rates:
        rate, size = statistics.median(rates[name]), statistics.median(sizes[name])
        report[name] = {
            "rows_per_s": round(rate),
            "bytes_per_reading": round(size, 1),
            "gib_per_day": round(size * day / 2**30, 2),
            "headroom_at_1_reading_per_node_per_s": round(rate / args.nodes, 1),
        }
    report["postgresql"]["wal_bytes_per_reading"] = round(statistics.median(wal), 1)
    report["postgresql"]["wal_gib_per_day"] = round(statistics.median(wal) * day / 2**30, 2)
    report["ratio_vs_sqlite"] = round(report["postgresql"]["rows_per_s"] / report["sqlite"]["rows_per_s"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
