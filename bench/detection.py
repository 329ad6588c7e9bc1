"""Detection figures of the decided default on the simulated sets of both kinds -> bench/results/detection.json.

    PYTHONPATH=services python bench/detection.py [--recordings 5]

Held out (never tuned on): multivariate `harsh` seeds 0-1 and `skid`/`rig` seed 10 (README), the
default (`relations`); slow single-channel seeds SLOW_HELD_OUT_SEEDS, the recipe `decide` picks per
recording. Tuning (what settings may be chosen on): `skid`/`rig` seeds TUNING_SEEDS and slow seeds
SLOW_TUNING_SEEDS. Point-wise F1 / FAR / MAR, event-level figures (failure periods caught,
false-alarm episodes per month) and a per-fault breakdown, in memory through the numpy reference
(ONNX = reference is pinned by the integration test).

`served`: the multivariate tuning recordings through both ends a user meets, each trained and saved
as a model directory: `detector score` (`bundle.Scorer`, ONNX Runtime) and the gateway's stream
scorer (`inference.stream.StreamScorer` with the card's features and alarm rule, readings in
batches, an alarm where the served value is above the card's threshold), side by side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from plantwatch.alarms import AlarmRule, alarm_rule
from plantwatch.detect import bundle
from plantwatch.detect.evaluate import by_fault, confusion, events, pooled, pooled_by_fault, pooled_events
from plantwatch.detect.recipes import decide, fit_recipe
from plantwatch.detect.simulate import (
    SLOW_HELD_OUT_SEEDS,
    SLOW_ROWS_PER_DAY,
    SLOW_TUNING_SEEDS,
    Recording,
    recording_seed,
    simulate,
    simulate_slow,
)
from plantwatch.features import window_features
from plantwatch.inference.stream import CardFeatures, StreamScorer
from plantwatch.readings import Reading

#: `skid`/`rig` seeds the multivariate default was tuned on (README: tuning set).
TUNING_SEEDS = (0, 1, 2, 3, 4)
#: Readings per stream call in the served figures: a gateway batch holds many rows.
STREAM_BATCH_ROWS = 50


def judge(recording: Recording, train_rows: int):
    """The decided default trained on the first rows, judged on the rest: (recipe, counts, events, per fault)."""
    values, seconds = recording.values, np.arange(len(recording.values)) * recording.cadence_s
    recipe = decide(values[:train_rows], seconds[:train_rows])
    fitted = fit_recipe(recipe, values[:train_rows])
    raw = fitted.reference_scores(window_features(values, recipe.features))
    r = recipe
    _, alarm = alarm_rule(raw, fitted.threshold, r.span, r.cap, r.on_count, r.off_count, r.off_ratio, r.release, r.rearm, r.release_span)
    labels = recording.anomaly[train_rows:]
    return (
        recipe.name,
        confusion(labels, alarm[train_rows:]),
        events(labels, alarm[train_rows:], seconds[train_rows:]),
        by_fault(recording.faults, alarm, train_rows),
    )


def served_alarms(scorer: bundle.Scorer, values: np.ndarray) -> np.ndarray:
    """0/1 per row as the gateway serves it: readings of one node into the card's stream scorer, batch by batch."""
    session = scorer.model.session
    run = lambda v: session.run(["score"], {"features": v})[0]  # noqa: E731
    stream = StreamScorer("bench", ["n"], scorer.channels, CardFeatures(scorer.card), run, alarm=AlarmRule.of_card(scorer.card["alarm"]))
    threshold = scorer.card["alarm"]["threshold"]
    alarm = np.zeros(len(values), dtype=np.int8)
    for start in range(0, len(values), STREAM_BATCH_ROWS):
        batch = [
            Reading("n", channel, channel, float(v), float(t))
            for t in range(start, min(start + STREAM_BATCH_ROWS, len(values)))
            for channel, v in zip(scorer.channels, values[t])
            if not np.isnan(v)  # a dropped sensor sends nothing
        ]
        for served in stream.score(batch):
            alarm[int(served.ts)] = served.value > threshold
    return alarm


def cli_and_served(recordings: list[Recording], train_rows: int = 400) -> dict:
    """Pooled figures of `detector score` and of the stream scorer on the same saved models."""
    cli, served, differ = [], [], 0
    with tempfile.TemporaryDirectory(prefix="plantwatch-bench-") as tmp:
        for i, recording in enumerate(recordings):
            values = recording.values
            fitted = fit_recipe(decide(values[:train_rows]), values[:train_rows])
            channels = tuple(recording.channels)
            bundle.save(Path(tmp) / f"m{i}", fitted, channels, train_rows)
            scorer = bundle.load(Path(tmp) / f"m{i}")
            labels = recording.anomaly[train_rows:]
            by_cli, by_stream = scorer.score(values).alarm[train_rows:], served_alarms(scorer, values)[train_rows:]
            cli.append(confusion(labels, by_cli))
            served.append(confusion(labels, by_stream))
            differ += int(np.sum(by_cli != by_stream))
    cli_counts, served_counts = pooled(cli), pooled(served)
    return {
        "recordings": len(recordings),
        "cli": cli_counts.summary(),
        "served": served_counts.summary(),
        "rows_that_differ": differ,
    }


def figures(recordings: list[tuple[Recording, int]]) -> dict:
    results = [judge(r, rows) for r, rows in recordings]
    return {
        "recordings": len(results),
        "recipes": sorted({name for name, *_ in results}),
        **pooled([c for _, c, _, _ in results]).summary(),
        **pooled_events([e for _, _, e, _ in results]).summary(),
        "by_fault": {kind: f.summary() for kind, f in pooled_by_fault([f for *_, f in results]).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recordings", type=int, default=20, help="recordings per data-set seed (multivariate; slow: a quarter, at least 2)"
    )
    parser.add_argument("--only", choices=("tuning", "held-out", "served"), help="one part only (tuning: no held-out figure is looked at)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "detection.json"))
    args = parser.parse_args()
    n, slow_n = args.recordings, max(2, args.recordings // 4)
    multivariate = lambda pairs: [(simulate(recording_seed(s, i), 400, v), 400) for v, s in pairs for i in range(n)]  # noqa: E731
    slow = lambda seeds: [(simulate_slow(recording_seed(s, i)), 21 * SLOW_ROWS_PER_DAY) for s in seeds for i in range(slow_n)]  # noqa: E731
    tuning_pairs = [(v, s) for v in ("skid", "rig") for s in TUNING_SEEDS]
    parts = {
        "held-out": lambda: {
            "multivariate": figures(multivariate((("harsh", 0), ("harsh", 1), ("skid", 10), ("rig", 10)))),
            "slow": figures(slow(SLOW_HELD_OUT_SEEDS)),
        },
        "tuning": lambda: {"multivariate": figures(multivariate(tuning_pairs)), "slow": figures(slow(SLOW_TUNING_SEEDS))},
        "served": lambda: {"multivariate_tuning": cli_and_served([r for r, _ in multivariate(tuning_pairs)])},
    }
    report = {}
    for name, part in parts.items():
        if args.only in (None, name):
            report[name] = part()
            print(name, json.dumps(report[name]), flush=True)
    if args.only is None:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
