"""Drift: how far the rows a model serves have moved from the rows it was trained on.

Training keeps, in the model card (`distribution`), each input feature's and the raw
score's training distribution as decile edges and the share of training rows in each
bin (`profile`). The inference service keeps the last WINDOW_ROWS served rows
(`DriftMonitor`) and compares them with the card bin for bin by the population
stability index, PSI = sum((served - trained) * ln(served / trained)) over the bins.

Thresholds, the usual reading of PSI: below MODERATE (0.1) the same population;
MODERATE to DRIFTED (0.25) a shift worth watching; above DRIFTED the model is scoring
rows unlike its training data, and its threshold (chosen on the training scores) no
longer means the false-alarm rate it was chosen for. A feature or the score above
DRIFTED makes the DetectorModel's `Drifted` condition True. PSI is judged only once
MIN_ROWS rows were served: fewer rows make it noisy (a 10-bin PSI of two samples of one
population has an expected value of about 9 / rows).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from plantwatch.contracts.model_card import Bins, Distribution

BINS = 10
MODERATE = 0.1
DRIFTED = 0.25
MIN_ROWS = 500
WINDOW_ROWS = 5000
#: Share given to an empty bin, so one bin the training rows never reached is a large term, not an infinite one.
FLOOR = 1e-4


def _bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    values = values[np.isfinite(values)]
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def bins(values: np.ndarray) -> Bins:
    """The decile edges of `values` (finite ones) and the share of them in each of the bins the edges make."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return {"edges": [], "shares": [1.0]}
    edges = np.unique(np.quantile(finite, np.arange(1, BINS) / BINS))  # a constant feature has one edge, not nine equal ones
    counts = _bin_counts(edges, finite)
    return {"edges": [float(e) for e in edges], "shares": [float(s) for s in counts / counts.sum()]}


def profile(feature_names: list[str], features: np.ndarray, scores: np.ndarray) -> Distribution:
    """The training distribution a card carries: [rows, features] of the training features and their raw scores."""
    return {
        "rows": int(len(scores)),
        "features": {name: bins(features[:, i]) for i, name in enumerate(feature_names)},
        "score": bins(scores),
    }


def psi(reference: Bins, values: np.ndarray) -> float | None:
    """PSI of `values` against a reference's bins; None when no value is finite."""
    counts = _bin_counts(np.asarray(reference["edges"]), np.asarray(values, dtype=np.float64))
    if not counts.sum():
        return None
    served = np.maximum(counts / counts.sum(), FLOOR)
    trained = np.maximum(np.asarray(reference["shares"]), FLOOR)
    return float(np.sum((served - trained) * np.log(served / trained)))


def judge(reference: Distribution, features: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The drift report of served rows against a card's distribution (pure): `status.drift` and the Drifted verdict.

    Returns {"rows", "score": {"psi"}, "features": [{"name", "psi"}], "drifted": [names], "status", "reason",
    "message"}: psi absent where no value was finite; status True/False/Unknown as the `Drifted` condition shows it.
    """
    rows = len(scores)
    names = list(reference["features"])
    feature_psi = [(name, psi(reference["features"][name], features[:, i])) for i, name in enumerate(names)] if rows else []
    score_psi = psi(reference["score"], scores) if rows else None
    shown_psi = lambda p: {} if p is None else {"psi": round(p, 4)}  # noqa: E731  (no finite value: no PSI, not a null)
    report: dict[str, Any] = {
        "rows": rows,
        "score": shown_psi(score_psi),
        "features": [{"name": n, **shown_psi(p)} for n, p in feature_psi],
    }
    if rows < MIN_ROWS:
        report.update(drifted=[], status="Unknown", reason="NotEnoughRows", message=f"{rows} rows served, drift is judged from {MIN_ROWS}")
        return report
    drifted = [n for n, p in feature_psi if p is not None and p > DRIFTED]
    worst = sorted(((p, n) for n, p in feature_psi if p is not None), reverse=True)[:3]
    shown = ", ".join(f"{n} {p:.2f}" for p, n in worst)
    score_shown = "no finite score" if score_psi is None else f"{score_psi:.2f}"
    basis = f"PSI of the last {rows} served rows against training (drifted above {DRIFTED}): score {score_shown}; largest inputs {shown}"
    if score_psi is not None and score_psi > DRIFTED:
        report.update(drifted=drifted, status="True", reason="ScoreDrifted", message=basis)
    elif drifted:
        report.update(drifted=drifted, status="True", reason="InputsDrifted", message=f"{len(drifted)} inputs drifted; {basis}")
    else:
        report.update(drifted=[], status="False", reason="LikeTraining", message=basis)
    return report


class DriftMonitor:
    """The last `window_rows` rows a model served (features and raw scores), judged against its card's distribution.

    `observe` is called on the serving path, so it only copies rows into a ring buffer
    (thread-safe: requests are served concurrently); `report` does the binning.
    """

    def __init__(self, reference: Distribution, width: int, window_rows: int = WINDOW_ROWS):
        if len(reference["features"]) != width:
            raise ValueError(f"the card's distribution has {len(reference['features'])} features, the model takes {width}")
        self.reference = reference
        self._features = np.empty((window_rows, width), dtype=np.float32)
        self._scores = np.empty(window_rows, dtype=np.float64)
        self._next = 0
        self._rows = 0
        self._lock = threading.Lock()

    def observe(self, features: np.ndarray, scores: np.ndarray) -> None:
        size = len(self._scores)
        features, scores = features[-size:], np.ravel(scores)[-size:]
        with self._lock:
            at = (self._next + np.arange(len(scores))) % size
            self._features[at] = features
            self._scores[at] = scores
            self._next = (self._next + len(scores)) % size
            self._rows = min(size, self._rows + len(scores))

    def report(self) -> dict[str, Any]:
        with self._lock:
            features, scores = self._features[: self._rows].copy(), self._scores[: self._rows].copy()
        return judge(self.reference, features, scores)
