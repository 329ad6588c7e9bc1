"""A trained detector on disk (DIR/model.onnx + DIR/model-card.json) and the one scoring path.

Scoring always goes through ONNX Runtime, loaded by `plantwatch.inference.models`
exactly as `plantwatch serve inference` loads it (checksum checked against the
card); features and the alarm rule are the shared numpy code, parameterised by
the card. So `detector score`, the experiment and a client of the served model
compute the same numbers.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plantwatch.alarms import AlarmRule
from plantwatch.contracts import model_card
from plantwatch.contracts.model_card import Distribution, ModelCard
from plantwatch.contracts.names import MODEL_FILE
from plantwatch.detect.recipes import CHUNK_ROWS, Fitted, Progress, features_in_chunks
from plantwatch.features import FeatureSpec, feature_names
from plantwatch.inference import drift
from plantwatch.inference.models import LoadedModel, load_model, sha256_of


def card_of(
    fitted: Fitted,
    channels: tuple[str, ...],
    train_rows: int,
    model_bytes: bytes,
    source: str = "",
    train_values: np.ndarray | None = None,
) -> ModelCard:
    """Everything needed to reproduce the features and the alarm rule, and to check the model file.

    With `train_values` (the rows it trained on) the card also carries their distribution.
    """
    recipe = fitted.recipe
    return model_card.card(
        recipe=recipe.to_json(),
        channels=list(channels),
        feature_names=feature_names(channels, recipe.features),
        window=recipe.features.to_json(),
        sha256=sha256_of(model_bytes),
        alarm={
            "threshold": fitted.threshold,
            "ewma_span": recipe.span,
            "on_count": recipe.on_count,
            "off_count": recipe.off_count,
            "off_ratio": recipe.off_ratio,
            "cap": recipe.cap,
            "release": recipe.release,
            "rearm": recipe.rearm,
            "release_span": recipe.release_span,
        },
        train_rows=train_rows,
        source=source,
        validation=fitted.validation,
        distribution=None if train_values is None else training_distribution(fitted, channels, train_values, model_bytes),
    )


def save(
    out: str | Path,
    fitted: Fitted,
    channels: tuple[str, ...],
    train_rows: int,
    source: str = "",
    train_values: np.ndarray | None = None,
) -> ModelCard:
    """Write DIR/model.onnx and DIR/model-card.json (with the training distribution when given the rows); returns the card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = fitted.to_onnx()
    (out / MODEL_FILE).write_bytes(data)
    card = card_of(fitted, channels, train_rows, data, source, train_values)
    model_card.write(out, card)
    return card


#: Rows per ONNX Runtime call: a knn graph holds [rows, reference rows] distances (2048 x 10k: ~80 MiB each).
ONNX_ROWS = 2048


def onnx_scores(model: LoadedModel, features: np.ndarray, say: Progress = None) -> np.ndarray:
    """The graph's raw scores of [rows, features], ONNX_ROWS rows per call."""
    features = features.astype(np.float32)
    out = np.empty(len(features))
    for start in range(0, len(features), ONNX_ROWS):
        out[start : start + ONNX_ROWS] = model.session.run(["score"], {"features": features[start : start + ONNX_ROWS]})[0]
        if say and (start // ONNX_ROWS) % 10 == 9:
            say(f"scoring: {min(start + ONNX_ROWS, len(features))} of {len(features)} rows")
    return out


def training_distribution(fitted: Fitted, channels: tuple[str, ...], train_values: np.ndarray, model_bytes: bytes) -> Distribution:
    """The training rows' features (after warm-up, as fitted) and the exported graph's raw scores of them, as decile bins.

    Scored by the graph itself, as served: the numpy reference of a knn holds all distances at once.
    """
    spec = fitted.recipe.features
    features = features_in_chunks(train_values, spec)[spec.warmup :]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MODEL_FILE).write_bytes(model_bytes)
        model = load_model("training", Path(tmp) / MODEL_FILE)
    return drift.profile(feature_names(channels, spec), features, onnx_scores(model, features))


@dataclass(frozen=True)
class Scores:
    raw: np.ndarray
    smoothed: np.ndarray
    alarm: np.ndarray


@dataclass(frozen=True)
class Scorer:
    """A loaded detector: card + ONNX Runtime session."""

    card: ModelCard
    model: LoadedModel

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.card["channels"])

    def raw_scores(self, values: np.ndarray, progress: Progress = None) -> np.ndarray:
        """The graph's scores, ONNX_ROWS rows per call: one call over 300k rows holds every intermediate at once."""
        say = progress if progress and len(values) > CHUNK_ROWS else None
        return onnx_scores(self.model, features_in_chunks(values, FeatureSpec(**model_card.window(self.card)), say), say)

    def score(self, values: np.ndarray, progress: Progress = None) -> Scores:
        """Score every row of [rows, channels] (in card order); earlier rows serve as the windows' history.

        The card's alarm rule starts at the features' warm-up row, where the stream's
        does (`inference.stream`): the rows before it rest on a handful of readings (and
        row 0's noise borrows row 1's step, which no stream can know), so they carry
        their raw score and never alarm, and `detector score` and a served rule agree row for row.
        """
        raw = self.raw_scores(values, progress)
        start = min(len(raw), FeatureSpec(**model_card.window(self.card)).warmup - 1)
        smoothed, alarm = AlarmRule.of_card(self.card["alarm"]).run(raw[start:])
        return Scores(raw, np.r_[raw[:start], smoothed], np.r_[np.zeros(start, dtype=np.int8), alarm])


def load(directory: str | Path) -> Scorer:
    """Load a detector directory; the model's sha256 must match its card."""
    directory = Path(directory)
    card = model_card.read(directory)
    model = load_model(directory.name or "detector", directory / card["model"]["file"], expected_sha256=card["model"]["sha256"])
    return Scorer(card, model)


def columns_in_card_order(channels: tuple[str, ...], values: np.ndarray, wanted: tuple[str, ...], source: str = "") -> np.ndarray:
    """Reorder a table's channels to the card's; every card channel must be present."""
    missing = [c for c in wanted if c not in channels]
    if missing:
        raise ValueError(f"{source}: the model needs channels {missing}, the file has {list(channels)}")
    return values[:, [channels.index(c) for c in wanted]]
