"""Detector recipes: features -> robust scaling -> detector -> ONNX, with a threshold from training rows only.

A recipe is everything needed to go from a recording's normal rows to a served
model and an alarm rule: the feature windows, the detector, the smoothing and
hysteresis, and how the threshold is picked. Each detector has a numpy
reference (`score`) and an ONNX export that must agree with it; the ONNX graph
takes the raw window features (`features [batch, n] float32`), scales and clips
them, and returns `score [batch]` (higher = more anomalous, >= 0).

The threshold comes from *out-of-fold* scores of the training rows: the rows are
cut into contiguous folds and each fold is scored by a detector fitted on the
others. In-sample scores of a 400-row fit are optimistic (most of all for
covariance and nearest-neighbour detectors); out-of-fold ones show what unseen
normal data scores, drift and operating-point changes included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from plantwatch.alarms import alarm_rule, choose_threshold, ewma
from plantwatch.detect.iforest_onnx import anomaly_score_graph
from plantwatch.features import CLIP, FeatureSpec, RobustScaler, feature_names, fill_missing, fit_scaler, window_features

OPSET = 18
#: Longer recordings have their features (and scores) computed this many rows at a time: the rolling
#: windows copy every row `window` times, which for 300k rows is gigabytes in one pass.
CHUNK_ROWS = 20_000
#: Bytes one block of knn distances (scored rows x reference rows, float64) may take.
DISTANCE_BYTES = 256 * 2**20
#: knn keeps every training row: each served row is compared with all of them, and calibration compares
#: them with each other (100k rows: 10^10 distances, 74.5 GiB at once). Above this it refuses.
KNN_MAX_REFERENCE = 10_000

#: Where long steps say how far they are (a line for a person, e.g. on stderr); None: silent.
Progress = Callable[[str], None] | None


def features_in_chunks(values: np.ndarray, spec: FeatureSpec, progress: Progress = None, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """`window_features` of every row, `chunk` rows at a time: the same numbers in bounded memory.

    Each chunk carries the longest window's rows before it as history, its first row
    forward-filled from the whole recording (as one pass would have filled it), so no
    feature of a kept row sees the cut.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) <= chunk:
        return window_features(values, spec)
    history = max(spec.short, spec.long, spec.noise, spec.baseline + spec.period // 2 + spec.short) + 1
    filled = fill_missing(values)
    out = np.empty((len(values), values.shape[1] * len(spec.kinds)))
    for start in range(0, len(values), chunk):
        end, first = min(start + chunk, len(values)), max(0, start - history)
        part = values[first:end].copy()
        if first:  # the first chunk starts the recording: its leading gaps are the recording's own
            part[0] = filled[first]
        out[start:end] = window_features(part, spec)[start - first :]
        if progress:
            progress(f"features: {end} of {len(values)} rows")
    return out


@dataclass(frozen=True)
class Recipe:
    """One way to build a detector; every field lands in the model card."""

    name: str
    detector: str
    features: FeatureSpec = field(default_factory=FeatureSpec)
    span: float = 15.0
    on_count: int = 5
    off_count: int = 10
    off_ratio: float = 0.8
    quantile: float = 0.99
    margin: float = 1.25
    folds: int = 4
    top_fraction: float = 0.25  # robust-z: mean of the largest quarter of squared z
    neighbours: int = 5  # knn
    drift_horizon: float = 3.0  # envelope
    drift_measure: str = "median"  # envelope: fold drift from medians, or from "tails" (the previous default's)
    floor: float = 0.0  # the threshold is at least this (envelope scores are 0 on most normal rows)
    out_of_fold: bool = True  # threshold from out-of-fold scores (else in-sample: the envelope's limits are already cross-validated)
    relations: bool = False  # envelope: also the residuals of each channel's level predicted from the others'
    keep: float = 0.5  # relations: only where the others explain a channel (out-of-fold residual range < keep x its range)
    ridge: float = 0.1  # relations: ridge penalty relative to the predictors' variance
    cap: float = 0.0  # raw scores are capped at cap x threshold before smoothing (0: no cap; see alarms.smooth)
    release: float = (
        0.0  # an alarm also ends when the score's short EWMA falls below release x its long one (0: never; see alarms.hysteresis)
    )
    rearm: float = 0.8  # after such a release, on again early only if the short EWMA climbs back to rearm x the long one's level then
    release_span: float = 60.0  # rows of the long EWMA
    decision: str = ""  # when the default chose this recipe from the data: what it saw and why (see `decide`)

    def to_json(self) -> dict:
        return asdict(self)


class Detector(Protocol):
    def score(self, z: np.ndarray) -> np.ndarray: ...

    def graph(self) -> tuple[list, list, list]: ...


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32 if np.asarray(value).dtype.kind == "f" else np.int64), name)


@dataclass(frozen=True)
class RobustZ:
    """Root mean of the largest `k` squared robust z-scores: many small deviations or a few large ones."""

    k: int

    def score(self, z: np.ndarray) -> np.ndarray:
        top = -np.sort(-(z * z), axis=1)[:, : self.k]
        return np.sqrt(top.mean(axis=1))

    def graph(self):
        nodes = [
            helper.make_node("Mul", ["z", "z"], ["rz_z2"]),
            helper.make_node("TopK", ["rz_z2", "rz_k"], ["rz_top", "rz_index"], axis=1),
            helper.make_node("ReduceMean", ["rz_top", "rz_axes"], ["rz_mean"], keepdims=0),
            helper.make_node("Sqrt", ["rz_mean"], ["score"]),
        ]
        return nodes, [_const("rz_k", [self.k]), _const("rz_axes", [1])], []


@dataclass(frozen=True)
class Relations:
    """Each channel's level predicted from the other channels' levels; the residuals in robust units.

    A valve closing, a leak or a drifting sensor can keep every channel inside
    its training range while breaking how the channels move together (flow down
    at the same speed and current). A speed change moves them all as training
    showed, so its residuals stay small. Linear (ridge) on the scaled levels:
    `r = clip(z @ weights + offset)`, one MatMul in the graph.
    """

    weights: np.ndarray  # [features, channels], already divided by the residuals' robust scale
    offset: np.ndarray  # [channels]

    def transform(self, z: np.ndarray) -> np.ndarray:
        return np.clip(z @ self.weights + self.offset, -CLIP, CLIP)


def _ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Coefficients and intercept of y ~ x, the penalty relative to the predictors' variance.

    The penalty's floor keeps the system solvable when every predictor was constant in
    training (a set-point, a quantised sensor that never ticked): the coefficients are then 0.
    """
    mean_x, mean_y = x.mean(axis=0), y.mean()
    xc = x - mean_x
    gram = xc.T @ xc
    penalty = ridge * max(np.trace(gram) / x.shape[1], 1e-6)
    beta = np.linalg.solve(gram + penalty * np.eye(x.shape[1]), xc.T @ (y - mean_y))
    return beta, float(mean_y - mean_x @ beta)


def informative_relations(z: np.ndarray, levels: list[int], ridge: float, folds: int, keep: float) -> list[int]:
    """The level columns that the other levels predict well out-of-fold (residual range < `keep` x own range).

    A channel the others do not explain (it moved by noise only, or lags them by
    minutes like a motor's temperature) would add a residual column that is just
    the channel again, or worse, a relation that breaks at the next set-point
    change; contiguous folds show which relations hold in time.
    """
    bounds = np.linspace(0, len(z), folds + 1).astype(int)
    spread = lambda v: np.quantile(v, 0.99) - np.quantile(v, 0.01)  # noqa: E731
    kept = []
    for j in levels:
        others = [i for i in levels if i != j]
        residual = np.empty(len(z))
        for start, end in zip(bounds[:-1], bounds[1:]):
            rest = np.r_[0:start, end : len(z)]
            beta, intercept = _ridge(z[rest][:, others], z[rest, j], ridge)
            residual[start:end] = z[start:end, j] - z[start:end][:, others] @ beta - intercept
        if spread(residual) < keep * spread(z[:, j]):
            kept.append(j)
    return kept


def fit_relations(z: np.ndarray, targets: list[int], levels: list[int], ridge: float) -> Relations:
    """Ridge regression of each target level column on the other level columns, residual scaled by its MAD."""
    weights, offset = np.zeros((z.shape[1], len(targets))), np.zeros(len(targets))
    for out, j in enumerate(targets):
        others = [i for i in levels if i != j]
        beta, intercept = _ridge(z[:, others], z[:, j], ridge)
        weights[j, out] = 1.0
        weights[others, out] = -beta
        offset[out] = -intercept
    residual = z @ weights + offset
    center = np.median(residual, axis=0)
    scale = np.maximum(1.4826 * np.median(np.abs(residual - center), axis=0), 1e-3)
    return Relations(weights / scale, (offset - center) / scale)


@dataclass(frozen=True)
class Envelope:
    """Distance outside per-column limits learned from the training rows, in robust-z units.

    Inside the limits a column contributes nothing, so several normal operating
    points in training are all "normal" (a centred z-score would call the rarer
    one anomalous). The score is the root mean of the `k` largest squared
    excesses: one dead sensor is enough, and so are several small departures.
    The columns are the scaled features, followed by the `relations` residuals
    when there are any.
    """

    low: np.ndarray
    high: np.ndarray
    k: int
    relations: Relations | None = None

    def columns(self, z: np.ndarray) -> np.ndarray:
        return z if self.relations is None else np.concatenate([z, self.relations.transform(z)], axis=1)

    def score(self, z: np.ndarray) -> np.ndarray:
        z = self.columns(z)
        excess = np.maximum(z - self.high, 0.0) + np.maximum(self.low - z, 0.0)
        top = -np.sort(-(excess * excess), axis=1)[:, : self.k]
        return np.sqrt(top.mean(axis=1))

    def graph(self):
        nodes, inits, columns = [], [], "z"
        if self.relations is not None:
            nodes = [
                helper.make_node("MatMul", ["z", "ev_weights"], ["ev_mixed"]),
                helper.make_node("Add", ["ev_mixed", "ev_offset"], ["ev_resid_raw"]),
                helper.make_node("Clip", ["ev_resid_raw", "pw_low", "pw_high"], ["ev_resid"]),
                helper.make_node("Concat", ["z", "ev_resid"], ["ev_columns"], axis=1),
            ]
            inits = [
                _const("ev_weights", self.relations.weights.astype(np.float32)),
                _const("ev_offset", self.relations.offset.astype(np.float32)[None, :]),
            ]
            columns = "ev_columns"
        nodes += [
            helper.make_node("Sub", [columns, "ev_high"], ["ev_above_raw"]),
            helper.make_node("Relu", ["ev_above_raw"], ["ev_above"]),
            helper.make_node("Sub", ["ev_low", columns], ["ev_below_raw"]),
            helper.make_node("Relu", ["ev_below_raw"], ["ev_below"]),
            helper.make_node("Add", ["ev_above", "ev_below"], ["ev_excess"]),
            helper.make_node("Mul", ["ev_excess", "ev_excess"], ["ev_e2"]),
            helper.make_node("TopK", ["ev_e2", "ev_k"], ["ev_top", "ev_index"], axis=1),
            helper.make_node("ReduceMean", ["ev_top", "ev_axes"], ["ev_mean"], keepdims=0),
            helper.make_node("Sqrt", ["ev_mean"], ["score"]),
        ]
        inits += [
            _const("ev_low", self.low.astype(np.float32)[None, :]),
            _const("ev_high", self.high.astype(np.float32)[None, :]),
            _const("ev_k", [self.k]),
            _const("ev_axes", [1]),
        ]
        return nodes, inits, []


def fit_envelope(
    z: np.ndarray,
    k: int,
    folds: int,
    drift_horizon: float,
    tail: float = 0.005,
    levels: list[int] | None = None,
    ridge: float = 0.1,
    keep: float = 0.5,
    drift_measure: str = "median",
) -> Envelope:
    """Limits = training quantiles widened by how far a held-out fold's median moved from the other folds'.

    A stationary feature's fold medians agree to within noise; one that drifts
    (a motor warming up) or changed operating point moves, and `drift_horizon`
    folds' worth of that is allowed, because the scored rows go on for longer
    than a fold. Medians, not the extreme quantiles themselves: the tails of
    ~90 autocorrelated rows are noisy, and a noisy allowance blunts every
    stationary feature (README: ablation, "drift from tail quantiles").
    With `levels` (two or more level columns) the residuals of the relations that
    hold out-of-fold (`informative_relations`) are columns too, with limits and
    allowances of their own.
    """
    if drift_measure not in ("median", "tails"):
        raise ValueError(f"drift_measure {drift_measure!r}; accepted: median, tails")
    targets = informative_relations(z, levels, ridge, folds, keep) if levels is not None and len(levels) >= 2 else []
    relations = fit_relations(z, targets, levels, ridge) if targets else None
    full = z if relations is None else np.concatenate([z, relations.transform(z)], axis=1)
    low, high = np.quantile(full, tail, axis=0), np.quantile(full, 1 - tail, axis=0)
    above, below = np.zeros(full.shape[1]), np.zeros(full.shape[1])
    bounds = np.linspace(0, len(z), folds + 1).astype(int)
    for start, end in zip(bounds[:-1], bounds[1:]):
        rest, held = np.concatenate([full[:start], full[end:]]), full[start:end]
        if drift_measure == "median":
            shift = np.median(held, axis=0) - np.median(rest, axis=0)
            above, below = np.maximum(above, shift), np.maximum(below, -shift)
        else:  # "tails": how far the held-out fold's tail quantiles went beyond the others'
            above = np.maximum(above, np.quantile(held, 1 - tail, axis=0) - np.quantile(rest, 1 - tail, axis=0))
            below = np.maximum(below, np.quantile(rest, tail, axis=0) - np.quantile(held, tail, axis=0))
    # Both sides by the larger stray: a feature that drifted up in training may drift back down later.
    allowance = drift_horizon * np.maximum(above, below)
    return Envelope(low - allowance, high + allowance, k, relations)


@dataclass(frozen=True)
class Mahalanobis:
    """sqrt(d^2 / n) under a Ledoit-Wolf shrunk covariance: joint moves that training never showed.

    Shrinkage matters: 400 autocorrelated rows cannot estimate a 40x40 covariance,
    and the plain inverse turns tiny training variances into huge weights.
    """

    mean: np.ndarray
    precision: np.ndarray

    def score(self, z: np.ndarray) -> np.ndarray:
        centered = z - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centered, self.precision, centered), 0.0) / len(self.mean))

    def graph(self):
        nodes = [
            helper.make_node("Sub", ["z", "mh_mean"], ["mh_c"]),
            helper.make_node("MatMul", ["mh_c", "mh_precision"], ["mh_cp"]),
            helper.make_node("Mul", ["mh_cp", "mh_c"], ["mh_terms"]),
            helper.make_node("ReduceSum", ["mh_terms", "mh_axes"], ["mh_d2"], keepdims=0),
            helper.make_node("Div", ["mh_d2", "mh_n"], ["mh_d2n"]),
            helper.make_node("Relu", ["mh_d2n"], ["mh_pos"]),
            helper.make_node("Sqrt", ["mh_pos"], ["score"]),
        ]
        inits = [
            _const("mh_mean", self.mean.astype(np.float32)),
            _const("mh_precision", self.precision.astype(np.float32)),
            _const("mh_axes", [1]),
            _const("mh_n", np.float32(len(self.mean))),
        ]
        return nodes, inits, []


@dataclass(frozen=True)
class NearestNeighbours:
    """RMS distance (per feature) to the `k` nearest training rows: normal is what training looked like."""

    reference: np.ndarray
    k: int

    def score(self, z: np.ndarray) -> np.ndarray:
        step = max(1, DISTANCE_BYTES // (8 * len(self.reference)))
        return np.concatenate([self._score(z[i : i + step]) for i in range(0, len(z), step)] or [np.empty(0)])

    def _score(self, z: np.ndarray) -> np.ndarray:
        d2 = (z * z).sum(1)[:, None] - 2 * z @ self.reference.T + (self.reference**2).sum(1)[None, :]
        nearest = np.partition(np.maximum(d2, 0.0), self.k - 1, axis=1)[:, : self.k]
        return np.sqrt(nearest.mean(axis=1) / self.reference.shape[1])

    def graph(self):
        ref = self.reference.astype(np.float32)
        nodes = [
            helper.make_node("Mul", ["z", "z"], ["kn_z2"]),
            helper.make_node("ReduceSum", ["kn_z2", "kn_axes"], ["kn_zz"], keepdims=1),
            helper.make_node("MatMul", ["z", "kn_refT"], ["kn_cross"]),
            helper.make_node("Mul", ["kn_cross", "kn_two"], ["kn_cross2"]),
            helper.make_node("Sub", ["kn_zz", "kn_cross2"], ["kn_part"]),
            helper.make_node("Add", ["kn_part", "kn_rr"], ["kn_d2raw"]),
            helper.make_node("Relu", ["kn_d2raw"], ["kn_d2"]),
            helper.make_node("TopK", ["kn_d2", "kn_k"], ["kn_near", "kn_index"], axis=1, largest=0),
            helper.make_node("ReduceMean", ["kn_near", "kn_axes"], ["kn_mean"], keepdims=0),
            helper.make_node("Div", ["kn_mean", "kn_n"], ["kn_mean_n"]),
            helper.make_node("Sqrt", ["kn_mean_n"], ["score"]),
        ]
        inits = [
            _const("kn_refT", ref.T.copy()),
            _const("kn_rr", (ref.astype(np.float64) ** 2).sum(1).astype(np.float32)[None, :]),
            _const("kn_two", np.float32(2.0)),
            _const("kn_axes", [1]),
            _const("kn_k", [self.k]),
            _const("kn_n", np.float32(ref.shape[1])),
        ]
        return nodes, inits, []


@dataclass(frozen=True)
class IsolationForestDetector:
    """The seed's IsolationForest on the scaled features; score = -score_samples (0..1, higher = more isolated)."""

    forest: object  # sklearn.ensemble.IsolationForest

    def score(self, z: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(z.astype(np.float32))

    def graph(self):
        # One TreeEnsembleRegressor instead of skl2onnx's per-tree subgraphs (see iforest_onnx).
        return anomaly_score_graph(self.forest)


def fit_detector(recipe: Recipe, z: np.ndarray, seed: int = 0) -> Detector:
    """Fit the recipe's detector on scaled training features `z` [rows, n]."""
    n = z.shape[1]
    if recipe.detector == "robust-z":
        return RobustZ(max(1, int(round(recipe.top_fraction * n))))
    if recipe.detector == "envelope":
        levels = (
            [i for i, name in enumerate(feature_names(range(n // len(recipe.features.kinds)), recipe.features)) if name.endswith(":level")]
            if recipe.relations
            else None
        )
        return fit_envelope(
            z,
            max(1, int(round(recipe.top_fraction * n))),
            recipe.folds,
            recipe.drift_horizon,
            levels=levels,
            ridge=recipe.ridge,
            keep=recipe.keep,
            drift_measure=recipe.drift_measure,
        )
    if recipe.detector == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(z)
        return Mahalanobis(lw.location_, lw.precision_)
    if recipe.detector == "knn":
        return NearestNeighbours(z.copy(), min(recipe.neighbours, len(z)))
    if recipe.detector == "iforest":
        from sklearn.ensemble import IsolationForest

        return IsolationForestDetector(IsolationForest(n_estimators=100, random_state=seed).fit(z.astype(np.float32)))
    raise ValueError(f"unknown detector {recipe.detector!r}; accepted: envelope, robust-z, mahalanobis, knn, iforest")


def export_onnx(scaler: RobustScaler, detector: Detector) -> bytes:
    """The served graph: features -> (f - center) / scale -> clip(+-CLIP) -> detector -> score."""
    n = len(scaler.center)
    nodes, inits, opsets = detector.graph()
    prefix = [
        helper.make_node("Sub", ["features", "pw_center"], ["pw_centered"]),
        helper.make_node("Div", ["pw_centered", "pw_scale"], ["pw_z"]),
        helper.make_node("Clip", ["pw_z", "pw_low", "pw_high"], ["z"]),
    ]
    prefix_inits = [
        _const("pw_center", scaler.center.astype(np.float32)),
        _const("pw_scale", scaler.scale.astype(np.float32)),
        _const("pw_low", np.float32(-CLIP)),
        _const("pw_high", np.float32(CLIP)),
    ]
    graph = helper.make_graph(
        prefix + nodes,
        "plantwatch-detector",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        prefix_inits + inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), *opsets], producer_name="plantwatch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class Fitted:
    """A trained recipe: the ONNX bytes, the numpy reference and the alarm rule."""

    recipe: Recipe
    scaler: RobustScaler
    detector: Detector
    threshold: float
    validation: dict

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        """Raw scores computed in numpy, float32 inputs like the ONNX path (for tests and fold scoring)."""
        z = self.scaler.transform(features.astype(np.float32).astype(np.float64))
        return self.detector.score(z)

    def to_onnx(self) -> bytes:
        return export_onnx(self.scaler, self.detector)


def _fit_model(recipe: Recipe, features: np.ndarray, seed: int) -> tuple[RobustScaler, Detector]:
    scaler = fit_scaler(features)
    return scaler, fit_detector(recipe, scaler.transform(features), seed)


def out_of_fold_scores(recipe: Recipe, features: np.ndarray, seed: int = 0, progress: Progress = None) -> np.ndarray:
    """Each contiguous fold of training rows scored by a model (scaler included) fitted on the other folds."""
    bounds = np.linspace(0, len(features), recipe.folds + 1).astype(int)
    scores = np.empty(len(features))
    for fold, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]), 1):
        rest = np.concatenate([features[:start], features[end:]])
        scaler, detector = _fit_model(recipe, rest, seed)
        scores[start:end] = detector.score(scaler.transform(features[start:end]))
        if progress:
            progress(f"threshold: fold {fold} of {recipe.folds} scored out-of-fold")
    return scores


def knn_refusal(rows: int, features: int) -> str | None:
    """Why knn will not train on `rows` rows of `features` features, with what it would cost; None when it will."""
    if rows <= KNN_MAX_REFERENCE:
        return None
    return (
        f"recipe knn keeps every training row and compares each scored row with all of them: {rows} rows x {features} features "
        f"would cost {rows * features} multiply-adds per scored row and {rows**2 * 8 / 2**30:.1f} GiB of distances to calibrate "
        f"at once; accepted are at most {KNN_MAX_REFERENCE} rows after the warm-up (fewer --train-rows), or another recipe"
    )


def fit_recipe(recipe: Recipe, train_values: np.ndarray, seed: int = 0, progress: Progress = None) -> Fitted:
    """Train on normal rows [rows, channels] only: features, scaler, detector, threshold (see module doc).

    `progress` hears about each long step when there are more than CHUNK_ROWS rows.
    """
    warmup = recipe.features.warmup
    if len(train_values) < warmup + 10 * recipe.folds:
        raise ValueError(f"need at least {warmup + 10 * recipe.folds} training rows, got {len(train_values)}")
    if recipe.detector == "knn" and (why := knn_refusal(len(train_values) - warmup, train_values.shape[1] * len(recipe.features.kinds))):
        raise ValueError(why)
    say = progress if progress and len(train_values) > CHUNK_ROWS else None
    features = features_in_chunks(train_values, recipe.features, say)[warmup:]
    if say:
        say(f"fitting {recipe.detector} on {len(features)} rows x {features.shape[1]} features")
    scaler, detector = _fit_model(recipe, features, seed)
    in_sample_raw = detector.score(scaler.transform(features))
    calibration_raw = out_of_fold_scores(recipe, features, seed, say) if recipe.out_of_fold else in_sample_raw
    calibration = ewma(calibration_raw, recipe.span)
    threshold = max(choose_threshold(calibration, recipe.quantile, recipe.margin), recipe.floor)

    def alarm_rate(raw: np.ndarray) -> float:
        return float(
            alarm_rule(
                raw,
                threshold,
                recipe.span,
                recipe.cap,
                recipe.on_count,
                recipe.off_count,
                recipe.off_ratio,
                recipe.release,
                recipe.rearm,
                recipe.release_span,
            )[1].mean()
        )

    validation = {
        "threshold_from": "out-of-fold" if recipe.out_of_fold else "in-sample",
        "calibration_score_quantiles": {q: float(np.quantile(calibration, float(q))) for q in ("0.5", "0.9", "0.99")},
        "calibration_alarm_rate": alarm_rate(calibration_raw),
        "in_sample_alarm_rate": alarm_rate(in_sample_raw),
        "warmup_rows": warmup,
    }
    return Fitted(recipe, scaler, detector, threshold, validation)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # The default: per-feature limits plus limits on how the channels' levels relate, each with a
        # cross-validated drift allowance; 2 robust-z units beyond them (capped at 2x, EWMA over ~3 s)
        # is an alarm, released after 2 rows below 0.8x or once the score's 3-row EWMA is below half
        # its 60-row one (the fast release is what pays for the lower threshold). See README for the
        # comparison and held-out figures.
        Recipe(
            "relations",
            "envelope",
            features=FeatureSpec(noise=20),
            top_fraction=0.05,
            floor=2.0,
            drift_horizon=2.0,
            out_of_fold=False,
            relations=True,
            ridge=0.1,
            keep=0.5,
            cap=2.0,
            span=3.0,
            on_count=1,
            off_count=2,
            release=0.5,
            release_span=60.0,
        ),
        # One slow channel (`decide` sets its windows from the cadence, and adds the seasonal feature when
        # there is a daily cycle): limits on level, noise and missing (and the seasonal residual),
        # 1 unit beyond with no drift allowance, max over the few columns, smoothed over ~30 min
        # (README: the slow kind's figures; wider limits missed most level shifts).
        Recipe(
            "slow",
            "envelope",
            features=FeatureSpec(short=6, noise=12),
            top_fraction=0.05,
            floor=1.0,
            drift_horizon=0.0,
            out_of_fold=False,
            cap=2.0,
            span=6.0,
            on_count=1,
            off_count=6,
        ),
        # The previous default: per-feature limits only.
        Recipe("envelope", "envelope", top_fraction=0.05, floor=2.5, out_of_fold=False, drift_measure="tails"),
        Recipe("robust-z", "robust-z"),
        Recipe("mahalanobis", "mahalanobis"),
        Recipe("knn", "knn"),
        Recipe("iforest", "iforest"),
    )
}
#: `decide` picks among these three; `--recipe` names any recipe instead.
DEFAULT_RECIPE = "relations"
MULTIVARIATE_RECIPE = "relations"
#: A day-apart / half-a-day-apart change ratio below this is a daily cycle (see `daily_cycle`).
CYCLE_RATIO = 0.6

#: Rows this far apart or more are "slow" (minutes): the 1 Hz windows of the multivariate default would span hours.
SLOW_CADENCE_S = 60.0
DAY_S = 86_400.0


def daily_cycle(values: np.ndarray, period: int) -> float:
    """How much readings one `period` apart agree compared with readings half a period apart (< 1: a cycle).

    The median absolute change over a period against over half of it: a daily
    cycle repeats after a day and is at its other extreme after half of one;
    without a cycle (noise, drift) the two are alike (~1 or above).
    """
    x = fill_missing(np.asarray(values, dtype=np.float64)[:, :1])[:, 0]
    half = period // 2
    if len(x) < 3 * period or half < 1:
        return float("nan")
    whole, part = np.median(np.abs(x[period:] - x[:-period])), np.median(np.abs(x[half:] - x[:-half]))
    return float(whole / part) if part > 0 else float("nan")


def decide(train_values: np.ndarray, seconds: np.ndarray | None = None) -> Recipe:
    """The default recipe for these training rows, from what they are: cadence, channel count, a daily cycle.

    Several channels, or rows seconds apart: `relations` (the multivariate
    default). One channel read minutes apart: windows in rows of that cadence
    (level over ~30 min, noise over ~1 h, smoothing over ~30 min, on after
    ~15 min above the threshold, off after 4 h below) and, when the training
    rows show a daily cycle over at least 3 days, the `seasonal` feature: the
    level's departure from its trailing half-day median against the same time
    of day's over up to the 7 previous days, so a changed cycle or a shift
    inside the daily range stands out. The returned recipe's `decision` says what was seen and why.
    """
    channels = train_values.shape[1]
    steps = np.diff(np.asarray(seconds, dtype=np.float64)) if seconds is not None and len(seconds) > 1 else np.empty(0)
    cadence = float(np.median(steps)) if len(steps) else None
    seen = f"{channels} channel{'s' if channels != 1 else ''}, " + (f"a row every {cadence:g} s" if cadence else "no time stamps")
    if channels > 1 or cadence is None or cadence < SLOW_CADENCE_S:
        why = "several channels" if channels > 1 else ("no time stamps to tell the cadence" if cadence is None else "rows seconds apart")
        return replace(RECIPES[MULTIVARIATE_RECIPE], decision=f"{seen}: {MULTIVARIATE_RECIPE} ({why})")
    period = int(round(DAY_S / cadence))
    ratio = daily_cycle(train_values, period)
    per_hour = max(1, int(round(3600 / cadence)))
    slow = replace(
        RECIPES["slow"],
        features=FeatureSpec(short=max(2, per_hour // 2), noise=max(4, per_hour), kinds=("level", "noise", "missing")),
        span=max(2.0, per_hour / 2),
        # At least ~15 min above the threshold to start, 4 h below it to end: a fault period's alarm
        # flickers off for an hour or two between its bursts and bumps, each restart a false episode.
        on_count=max(1, per_hour // 4),
        off_count=4 * per_hour,
    )
    days = len(train_values) * cadence / DAY_S
    if ratio < CYCLE_RATIO:
        cycles = int(min(7, max(1, days // 2)))
        spec = replace(slow.features, kinds=("level", "seasonal", "noise", "missing"), period=period, baseline=cycles * period)
        return replace(
            slow,
            name="seasonal",
            features=spec,
            decision=f"{seen}, {days:.1f} days: seasonal (one slow channel with a daily cycle: readings a day apart differ "
            f"{ratio:.2f} x as much as half a day apart, below {CYCLE_RATIO}; baseline the same time of day over the "
            f"{cycles} previous days)",
        )
    why = "too few days to see one" if np.isnan(ratio) else f"readings a day apart differ {ratio:.2f} x as much as half a day apart"
    return replace(slow, decision=f"{seen}, {days:.1f} days: slow (one slow channel, no daily cycle: {why})")
