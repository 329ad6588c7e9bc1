"""A trained detector on disk (DIR/model.onnx + DIR/model-card.json) and the one scoring path.

Scoring always goes through ONNX Runtime, loaded by `plantwatch.inference.models`
exactly as `plantwatch serve inference` loads it (checksum checked against the
card); features and the alarm rule are the shared numpy code, parameterised by
the card. So `detector score`, the experiment and a client of the served model
compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plantwatch.contracts import model_card
from plantwatch.contracts.model_card import ModelCard
from plantwatch.contracts.names import MODEL_FILE
from plantwatch.detect.alarms import alarm_rule
from plantwatch.detect.recipes import Fitted
from plantwatch.features import FeatureSpec, feature_names, window_features
from plantwatch.inference.models import LoadedModel, load_model, sha256_of


def card_of(fitted: Fitted, channels: tuple[str, ...], train_rows: int, model_bytes: bytes, source: str = "") -> ModelCard:
    """Everything needed to reproduce the features and the alarm rule, and to check the model file."""
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
    )


def save(out: str | Path, fitted: Fitted, channels: tuple[str, ...], train_rows: int, source: str = "") -> ModelCard:
    """Write DIR/model.onnx and DIR/model-card.json; returns the card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = fitted.to_onnx()
    (out / MODEL_FILE).write_bytes(data)
    card = card_of(fitted, channels, train_rows, data, source)
    model_card.write(out, card)
    return card


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

    def raw_scores(self, values: np.ndarray) -> np.ndarray:
        features = window_features(values, FeatureSpec(**model_card.window(self.card))).astype(np.float32)
        return self.model.session.run(["score"], {"features": features})[0].astype(np.float64)

    def score(self, values: np.ndarray) -> Scores:
        """Score every row of [rows, channels] (in card order); earlier rows serve as the windows' history."""
        raw = self.raw_scores(values)
        a = self.card["alarm"]
        # Cards before `cap` have no cap, cards before `release` no release.
        smoothed, alarm = alarm_rule(
            raw,
            a["threshold"],
            a["ewma_span"],
            a.get("cap", 0.0),
            a["on_count"],
            a["off_count"],
            a["off_ratio"],
            a.get("release", 0.0),
            a.get("rearm", 0.8),
            a.get("release_span", 60.0),
        )
        return Scores(raw, smoothed, alarm)


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
