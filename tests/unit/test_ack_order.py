"""The gateway acknowledges batches in the order it received them.

The Committer (IngestService's, and each shard's) stores small batches inline (acknowledged on return) and large ones on the
committing thread (acknowledged when their Future completes). A small batch must not
be acknowledged while a large one before it is still being finished: had the gateway
died in between, the broker would redeliver the older batch only.
"""

from __future__ import annotations

import threading
import time

from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.runner import Committer
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT

T0 = time.time() - 600
TOPIC = "sensors/hall-1/esp32-press-01/data"


def test_a_small_batch_is_not_acknowledged_before_the_large_batch_before_it(tmp_path):
    plant = load_plant(EXAMPLE_PLANT)
    finishing, release = threading.Event(), threading.Event()

    def publish(topic: str, body: bytes) -> None:  # dead letters go out in `finish`, after the commit
        finishing.set()
        assert release.wait(10)

    pipeline = Pipeline(plant, SqliteStore(tmp_path / "p.db"), publish=publish)
    committer = Committer(pipeline)  # no broker: batches are handed in below, as the subscriber would
    acks: list[str] = []
    committer.start()
    try:
        large = [
            (TOPIC, encode("esp32-json", "esp32-press-01", T0 + i, {"temperature_c": 40.0})) for i in range(Committer.INLINE_BELOW)
        ] + [("sensors/nobody/data", b"{}")]  # a dead letter
        first = committer.handle(large)
        assert first is not None  # large: committed on the other thread
        first.add_done_callback(lambda _: acks.append("large"))
        assert finishing.wait(10)  # the large batch is committed, and being finished
        small = [(TOPIC, encode("esp32-json", "esp32-press-01", T0 + 100, {"temperature_c": 40.0}))]
        second = committer.handle(small)
        if second is None:
            acks.append("small")  # stored inline: acknowledged at once
        else:
            second.add_done_callback(lambda _: acks.append("small"))
        release.set()
        for f in (first, second):
            if f is not None:
                f.result(10)
    finally:
        release.set()
        committer.close()
    assert acks == ["large", "small"]
