"""The benchmark protocol: per labelled recording, train on its first rows, score the rest, pool.

This is what the hidden benchmark does to the default recipe, run through the
same files and code as `detector train` + `detector score` (CSV in, model
directory on disk, ONNX Runtime scoring).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plantwatch.alarms import alarm_rule
from plantwatch.detect import bundle
from plantwatch.detect.data import labels_of, parse_time, read_table
from plantwatch.detect.evaluate import Counts, confusion, pooled
from plantwatch.detect.recipes import Recipe, decide, fit_recipe
from plantwatch.features import window_features


@dataclass(frozen=True)
class FileResult:
    path: str
    counts: Counts
    train_s: float
    score_s: float
    scored_rows: int


@dataclass(frozen=True)
class ExperimentResult:
    recipe: str
    files: list[FileResult]

    @property
    def counts(self) -> Counts:
        return pooled([f.counts for f in self.files])

    def summary(self) -> dict:
        rows = sum(f.scored_rows for f in self.files)
        return {
            "recipe": self.recipe,
            "files": len(self.files),
            **self.counts.summary(),
            "train_s_per_file": round(sum(f.train_s for f in self.files) / len(self.files), 3),
            "score_rows_per_s": round(rows / max(sum(f.score_s for f in self.files), 1e-9)),
        }


def stamp_seconds(stamps: list[str]) -> np.ndarray | None:
    """Row times in seconds for `decide`'s cadence; None when they are not times (then it assumes seconds apart)."""
    try:
        return np.array([parse_time(s) for s in stamps])
    except ValueError:
        return None


def run_file(
    path: Path,
    recipe: Recipe | None,
    train_rows: int,
    label_column: str,
    time_column: str | None,
    exclude: tuple[str, ...],
    workdir: Path,
) -> FileResult:
    """One file through train + score; `recipe` None: the default decided from its training rows (`decide`)."""
    table = read_table(path, time_column, exclude, labels=(label_column,))
    labels = labels_of(table, label_column, path)
    if len(labels) <= train_rows:
        raise ValueError(f"{path}: {len(labels)} rows, nothing left to score after {train_rows} training rows")
    if recipe is None:
        recipe = decide(table.values[:train_rows], stamp_seconds(table.timestamps[:train_rows]))
    started = time.perf_counter()
    fitted = fit_recipe(recipe, table.values[:train_rows])
    model_dir = workdir / path.stem
    bundle.save(model_dir, fitted, table.channels, train_rows, str(path))
    trained = time.perf_counter()
    scores = bundle.load(model_dir).score(table.values)
    scored = time.perf_counter()
    counts = confusion(labels[train_rows:], scores.alarm[train_rows:])
    return FileResult(str(path), counts, trained - started, scored - trained, len(labels) - train_rows)


def run(
    paths: list[Path],
    recipe: Recipe | None,
    train_rows: int = 400,
    label_column: str = "anomaly",
    time_column: str | None = None,
    exclude: tuple[str, ...] = (),
) -> ExperimentResult:
    with tempfile.TemporaryDirectory(prefix="plantwatch-detect-") as tmp:
        return ExperimentResult(
            recipe.name if recipe else "default (decided per file)",
            [run_file(p, recipe, train_rows, label_column, time_column, exclude, Path(tmp)) for p in paths],
        )


def run_in_memory(recordings: list[tuple[np.ndarray, np.ndarray]], recipe: Recipe, train_rows: int = 400) -> ExperimentResult:
    """The same protocol on (values, labels) pairs, scored by the numpy reference instead of ONNX Runtime.

    For tuning and tests over many simulated recordings: no files, no ONNX
    export (the integration test pins ONNX = reference for every recipe).
    """
    files = []
    for i, (values, labels) in enumerate(recordings):
        started = time.perf_counter()
        fitted = fit_recipe(recipe, values[:train_rows])
        trained = time.perf_counter()
        raw = fitted.reference_scores(window_features(values, recipe.features))
        _, alarm = alarm_rule(
            raw,
            fitted.threshold,
            recipe.span,
            recipe.cap,
            recipe.on_count,
            recipe.off_count,
            recipe.off_ratio,
            recipe.release,
            recipe.rearm,
            recipe.release_span,
        )
        scored = time.perf_counter()
        files.append(
            FileResult(
                f"recording-{i}",
                confusion(labels[train_rows:], alarm[train_rows:]),
                trained - started,
                scored - trained,
                len(labels) - train_rows,
            )
        )
    return ExperimentResult(recipe.name, files)
