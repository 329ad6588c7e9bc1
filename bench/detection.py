"""Detection figures of the decided default on the held-out simulated sets of both kinds -> bench/results/detection.json.

    PYTHONPATH=services python bench/detection.py [--recordings 5]

Multivariate: held-out `harsh` seeds 0-1 and `skid`/`rig` seed 10 (README), the default (`relations`);
slow single-channel: held-out seeds SLOW_HELD_OUT_SEEDS, the recipe `decide` picks per recording.
Point-wise F1 / FAR / MAR and event-level figures (failure periods caught, false-alarm episodes
per month), in memory through the numpy reference (ONNX = reference is pinned by the integration test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from plantwatch.alarms import alarm_rule
from plantwatch.detect.evaluate import confusion, events, pooled, pooled_events
from plantwatch.detect.recipes import decide, fit_recipe
from plantwatch.detect.simulate import SLOW_HELD_OUT_SEEDS, SLOW_ROWS_PER_DAY, recording_seed, simulate, simulate_slow
from plantwatch.features import window_features


def judge(values: np.ndarray, labels: np.ndarray, seconds: np.ndarray, train_rows: int):
    recipe = decide(values[:train_rows], seconds[:train_rows])
    fitted = fit_recipe(recipe, values[:train_rows])
    raw = fitted.reference_scores(window_features(values, recipe.features))
    r = recipe
    _, alarm = alarm_rule(raw, fitted.threshold, r.span, r.cap, r.on_count, r.off_count, r.off_ratio, r.release, r.rearm, r.release_span)
    return (
        recipe.name,
        confusion(labels[train_rows:], alarm[train_rows:]),
        events(labels[train_rows:], alarm[train_rows:], seconds[train_rows:]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recordings", type=int, default=20, help="recordings per data-set seed (multivariate; slow: a quarter, at least 2)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "detection.json"))
    args = parser.parse_args()
    report = {}
    sets = {
        "multivariate": [
            (recording, 400)
            for variant, seed in (("harsh", 0), ("harsh", 1), ("skid", 10), ("rig", 10))
            for recording in (simulate(recording_seed(seed, i), 400, variant) for i in range(args.recordings))
        ],
        "slow": [
            (simulate_slow(recording_seed(seed, i)), 21 * SLOW_ROWS_PER_DAY)
            for seed in SLOW_HELD_OUT_SEEDS
            for i in range(max(2, args.recordings // 4))
        ],
    }
    for kind, recordings in sets.items():
        results = [judge(r.values, r.anomaly, np.arange(len(r.values)) * r.cadence_s, rows) for r, rows in recordings]
        report[kind] = {
            "recordings": len(results),
            "recipes": sorted({name for name, _, _ in results}),
            **pooled([c for _, c, _ in results]).summary(),
            **pooled_events([e for _, _, e in results]).summary(),
        }
        print(kind, json.dumps(report[kind]), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
