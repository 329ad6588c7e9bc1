"""The model card: what a trained detector needs besides its ONNX file, as one typed document.

`plantwatch detector train` writes it beside the model (`names.CARD_FILE`), `detector
publish` puts it in the ConfigMap next to the model, the inference service serves it
in its model metadata (parameter `model_card`), and the gateway's stream scorers and
`detector score` read it to build the features the model was trained on and smooth its
scores the way its threshold was chosen for.

A `TypedDict` rather than a dataclass: the card crosses processes as JSON (a file, a
ConfigMap key, an HTTP parameter) and readers take it as it was written, including
cards older than some fields (`alarm.cap`, `alarm.release`: absent means off) and the
partial cards of hand-made models (only `model.sha256`, which the inference service
checks). `dumps` is the one writer of its text and `loads` the one reader; `card` the
one builder of a new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

from plantwatch.contracts.names import CARD_FILE, MODEL_FILE

KIND = "plantwatch-detector"


class Window(TypedDict):
    """The feature windows in rows (the features module's `FeatureSpec`)."""

    short: int
    long: int
    noise: int
    kinds: list[str]
    period: int  # absent in cards written before seasonal features (then 0)
    baseline: int  # likewise


class CardFeatures(TypedDict):
    names: list[str]
    window: Window


class CardModel(TypedDict):
    file: str
    sha256: str
    input: str
    output: str


class Alarm(TypedDict, total=False):
    """The alarm rule (the detect package's `alarm_rule`); `cap`, `release`, `rearm`, `release_span` may be absent."""

    threshold: float
    ewma_span: float
    on_count: int
    off_count: int
    off_ratio: float
    cap: float
    release: float
    rearm: float
    release_span: float


class Training(TypedDict):
    rows: int
    source: str


class Bins(TypedDict):
    """One value's training distribution: its decile edges and the share of training rows in each bin they make."""

    edges: list[float]
    shares: list[float]


class Distribution(TypedDict):
    """The training distribution of every input feature (by name, in input order) and of the raw score.

    What the inference service measures served rows against (`plantwatch.inference.drift`);
    absent from cards written before it, whose models report no drift.
    """

    rows: int
    features: dict[str, Bins]
    score: Bins


class ModelCard(TypedDict, total=False):
    kind: str
    version: int
    recipe: dict[str, Any]
    channels: list[str]
    features: CardFeatures
    model: CardModel
    alarm: Alarm
    training: Training
    validation: dict[str, Any]
    distribution: Distribution


def card(
    *,
    recipe: dict[str, Any],
    channels: list[str],
    feature_names: list[str],
    window: Window,
    sha256: str,
    alarm: Alarm,
    train_rows: int,
    source: str,
    validation: dict[str, Any],
    distribution: Distribution | None = None,
) -> ModelCard:
    """A new card for a model written as MODEL_FILE with `sha256`."""
    new: ModelCard = {
        "kind": KIND,
        "version": 1,
        "recipe": recipe,
        "channels": list(channels),
        "features": {"names": feature_names, "window": window},
        "model": {"file": MODEL_FILE, "sha256": sha256, "input": "features", "output": "score"},
        "alarm": alarm,
        "training": {"rows": train_rows, "source": source},
        "validation": validation,
    }
    if distribution is not None:
        new["distribution"] = distribution
    return new


def dumps(card: ModelCard) -> str:
    """The card's text, as the file, the ConfigMap and the served metadata carry it."""
    return json.dumps(card, indent=2) + "\n"


def loads(text: str | bytes) -> ModelCard:
    """A card from its text; json.JSONDecodeError (a ValueError) when it is not JSON."""
    return json.loads(text)


def read(directory: str | Path) -> ModelCard:
    """DIR/model-card.json; ValueError saying which file and why when it cannot be read."""
    path = Path(directory) / CARD_FILE
    try:
        return loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{Path(directory)}: cannot read {CARD_FILE}: {exc}") from None


def write(directory: str | Path, card: ModelCard) -> None:
    (Path(directory) / CARD_FILE).write_text(dumps(card))


def model_sha256(card: ModelCard) -> str:
    """The sha256 the card names for its model; TypeError or KeyError when it names none."""
    sha = card["model"]["sha256"]
    if not isinstance(sha, str):
        raise TypeError("model.sha256 is not a string")
    return sha


def window(card: ModelCard) -> Window:
    return card["features"]["window"]


def history(card: ModelCard) -> int:
    """Rows of readings the card's features look back over (the longest window, plus the row itself).

    A seasonal feature compares levels `baseline` rows apart, each against its trailing half-period
    median of `short`-row levels.
    """
    spec = window(card)
    longest = max(v for v in spec.values() if isinstance(v, int))
    if "seasonal" in spec["kinds"]:
        longest = max(longest, spec["baseline"] + spec["period"] // 2 + spec["short"])
    return 1 + longest
