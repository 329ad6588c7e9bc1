"""A plant's DetectorModels as StreamScorers for the pipeline: models loaded here, or their inference services.

Resolves each DetectorModel's model the way the cluster would: a `configMap`
source is looked up among the plant folder's other objects (the ConfigMap that
`plantwatch detector publish` writes, or the sample plant's starter model), a
`url` source is downloaded; both are checked against the spec's sha256 before
ONNX Runtime sees them. A ConfigMap that also carries `model-card.json` brings
the trained detector's features and smoothing along (see `stream.CardFeatures`).

In a cluster the gateway need not hold the models: `remote_scorers` scores
through each DetectorModel's inference Service over the Open Inference Protocol,
taking the card the service serves, so both paths compute the same scores.

A model with an image input (float32 [N, 3, H, W], `image.image_input`) scores a
camera's frames instead (`frame_scorer.FrameScorer`), here or through its service.
"""

from __future__ import annotations

import base64
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plantwatch.alarms import AlarmRule
from plantwatch.contracts import model_card
from plantwatch.contracts.model_card import ModelCard
from plantwatch.contracts.names import CARD_FILE, MODEL_FILE
from plantwatch.inference.client import RemoteModel, RemoteModelError
from plantwatch.inference.frame_scorer import FrameScorer, local_frames
from plantwatch.inference.image import image_input
from plantwatch.inference.models import LoadedModel, ModelError, TensorSpec, fetch_model, load_model
from plantwatch.inference.stream import Aggregations, CardFeatures, ScoringUnavailable, StreamScorer
from plantwatch.plant.load import Plant
from plantwatch.plant.load import scored_nodes as selected_nodes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """The files of a DetectorModel's model: the ONNX bytes, the model card when there is one."""

    model: bytes
    card: ModelCard | None
    expected_sha256: str | None
    where: str


def config_map_files(plant: Plant, name: str) -> dict[str, bytes] | None:
    """Keys of the plant's ConfigMap `name` (binaryData decoded, data encoded as UTF-8), None if absent."""
    for doc in plant.others:
        if doc.get("kind") == "ConfigMap" and (doc.get("metadata") or {}).get("name") == name:
            files = {k: v.encode() for k, v in (doc.get("data") or {}).items()}
            files.update({k: base64.b64decode(v) for k, v in (doc.get("binaryData") or {}).items()})
            return files
    return None


def model_source(plant: Plant, detector) -> ModelSource:
    """The model of a DetectorModel; ModelError (reason SourceNotFound) when it cannot be had here."""
    source = detector.spec.source
    if source.config_map is not None:
        ref = source.config_map
        files = config_map_files(plant, ref.name)
        if files is None:
            raise ModelError("SourceNotFound", f"ConfigMap {ref.name} is not in the plant's files")
        if ref.key not in files:
            raise ModelError("SourceNotFound", f"ConfigMap {ref.name} has no key {ref.key!r} (keys: {', '.join(sorted(files))})")
        card = model_card.loads(files[CARD_FILE]) if CARD_FILE in files else None
        return ModelSource(files[ref.key], card, source.sha256, f"ConfigMap {ref.name}/{ref.key}")
    if source.url is not None:
        path = fetch_model(source.url.url, source.url.sha256, Path(tempfile.mkdtemp(prefix="plantwatch-model-")) / MODEL_FILE)
        return ModelSource(path.read_bytes(), None, source.url.sha256, source.url.url)
    raise ModelError(
        "SourceNotFound",
        "a pvc source exists only in a cluster; use a configMap (plantwatch detector publish) or url source to run it here",
    )


def scored_nodes(plant: Plant, detector) -> list[str]:
    """Nodes the DetectorModel selects that have every one of its sensors."""
    return [n.name for n in selected_nodes(detector, plant.nodes)]


def _typed(plant: Plant, detector, image: bool) -> None:
    """ModelError `SensorTypeMismatch` when a scored node's sensor is of the wrong kind for the model:
    an image model must read a camera's `image` sensor, a tabular one never reads it (its values are frame sizes)."""
    wrong = [
        f"{n.name}/{s.name} ({s.type})"
        for n in selected_nodes(detector, plant.nodes)
        for s in n.spec.sensors
        if s.name in detector.spec.features.sensors and (s.type == "image") != image
    ]
    if wrong:
        what = (
            "takes images, so its sensor must be of type image"
            if image
            else "takes numbers, so none of its sensors may be of type image (a camera's frames)"
        )
        raise ModelError("SensorTypeMismatch", f"the model {what}; got {', '.join(wrong[:5])}{' and more' if len(wrong) > 5 else ''}")


def stream_scorer(
    plant: Plant, detector, run: Callable[[np.ndarray], np.ndarray], card: ModelCard | None, model_width: int = -1
) -> StreamScorer:
    """The StreamScorer of one DetectorModel around `run` (the model, here or remote); `model_width`: its feature count, -1 unknown."""
    features = detector.spec.features
    _typed(plant, detector, image=False)
    if card is not None:
        if list(card["channels"]) != list(features.sensors):
            raise ModelError(
                "SignatureMismatch",
                f"spec.features.sensors {list(features.sensors)} must be the model card's channels {card['channels']}, in order",
            )
        return StreamScorer(
            detector.name,
            scored_nodes(plant, detector),
            features.sensors,
            CardFeatures(card),
            run,
            features.step,
            AlarmRule.of_card(card["alarm"]),
        )
    builder = Aggregations(features.window, features.aggregations)
    width = len(features.sensors) * len(features.aggregations)
    if model_width not in (-1, width):
        raise ModelError(
            "SignatureMismatch",
            f"the model takes {model_width} features, spec.features gives "
            f"{len(features.sensors)} sensors x {len(features.aggregations)} aggregations = {width}",
        )
    return StreamScorer(detector.name, scored_nodes(plant, detector), features.sensors, builder, run, features.step)


def frame_scorer(plant: Plant, detector, run: Callable[[list[bytes]], np.ndarray]) -> FrameScorer:
    """The FrameScorer of an image DetectorModel: its one sensor is the camera's `image` sensor."""
    sensors = detector.spec.features.sensors
    if len(sensors) != 1:
        raise ModelError(
            "SignatureMismatch",
            f"the model takes images, so spec.features.sensors must name one sensor, a camera's (type image); got {list(sensors)}",
        )
    _typed(plant, detector, image=True)
    return FrameScorer(detector.name, scored_nodes(plant, detector), sensors[0], run)


def _local_run(model: LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
    session, input_name = model.session, model.inputs[0].name
    return lambda vectors: session.run(None, {input_name: vectors})[0]


def plant_scorers(plant: Plant, provider: str | None = None) -> tuple[list[StreamScorer | FrameScorer], list[ModelError]]:
    """Every DetectorModel of the plant that can be loaded here, and why each other one cannot.

    A model that cannot be served leaves its detector out rather than stopping the
    plant: readings, thresholds and absence alerts do not depend on it.
    """
    scorers, problems = [], []
    for detector in plant.detectors:
        try:
            source = model_source(plant, detector)
            with tempfile.TemporaryDirectory(prefix="plantwatch-model-") as tmp:
                path = Path(tmp) / MODEL_FILE
                path.write_bytes(source.model)
                model = load_model(detector.name, path, provider or detector.spec.execution_provider, source.expected_sha256)
            size = image_input(model.inputs[0])
            if size is not None:
                scorers.append(frame_scorer(plant, detector, local_frames(model.session, model.inputs[0].name, size)))
                continue
            width = model.inputs[0].shape[-1] if model.inputs[0].shape else -1
            scorers.append(stream_scorer(plant, detector, _local_run(model), source.card, width))
        except ModelError as exc:
            problems.append(ModelError(exc.reason, f"DetectorModel {detector.name}: {exc}"))
    return scorers, problems


#: What building a scorer from a service's answer raises when that answer cannot be used: a model or card
#: that does not fit the spec (ModelError), a card that is not JSON (a ValueError), metadata missing a field.
UNUSABLE = (ModelError, ValueError, KeyError, IndexError, TypeError)


def _unusable(exc: Exception) -> tuple[str, str]:
    """(reason, message) of an UNUSABLE error."""
    if isinstance(exc, ModelError):
        return exc.reason, str(exc)
    return "InvalidModel", f"the service's metadata or model card: {type(exc).__name__}: {exc}"


def _remote_scorer(plant: Plant, detector, model) -> StreamScorer | FrameScorer:
    """The scorer of a detector served at `model` (a RemoteModel): frames sent as JPEG to an image model, else
    a StreamScorer with the card the service serves."""
    meta = model.metadata(timeout=model.score_timeout_s)  # DeferredScorer probes on the pipeline's thread
    first = meta["inputs"][0]
    # The tabular path below reports what metadata lacks; only a whole image input is read here.
    if (
        isinstance(first, dict)
        and image_input(TensorSpec(first.get("name", ""), first.get("datatype", ""), list(first.get("shape") or ()))) is not None
    ):
        return frame_scorer(plant, detector, model.frames)
    card = meta.get("parameters", {}).get("model_card")
    shape = meta["inputs"][0]["shape"]
    return stream_scorer(plant, detector, model, model_card.loads(card) if card else None, shape[-1] if shape else -1)


class DeferredScorer:
    """A detector whose inference service did not answer when the gateway started.

    Asked again at most every `retry_s` while readings flow (on the pipeline's thread,
    so the probe is short), and scored from the first batch after it answers: a
    service that starts late or restarts is picked up without restarting the gateway.
    One that answers with a model the detector cannot use (a signature or card that
    does not fit its spec, a malformed card) is logged once and given up on
    (`gave_up`): the pipeline's readings must not stop for it.
    """

    def __init__(self, detector: str, build: Callable[[], StreamScorer], retry_s: float = 10.0):
        self.detector = detector
        self._build = build
        self._retry_s = retry_s
        self._next_try = time.monotonic() + retry_s
        self.scorer: StreamScorer | None = None
        #: A checkpoint's state for the scorer, kept until the service answers and the scorer exists.
        self._restored: dict | None = None
        #: Why the service's model cannot score this detector, once it answered with one that does not fit.
        self.gave_up: str | None = None

    def score(self, readings) -> list:
        if self.scorer is None:
            now = time.monotonic()
            if self.gave_up is not None or now < self._next_try:
                return []
            self._next_try = now + self._retry_s
            try:
                self.scorer = self._build()
            except ScoringUnavailable:
                return []
            except UNUSABLE as exc:
                self.gave_up = ": ".join(_unusable(exc))
                log.error(
                    "DetectorModel %s: its inference service answers with a model it cannot score with, "
                    "not scored until the gateway restarts: %s",
                    self.detector,
                    self.gave_up,
                )
                return []
            if self._restored is not None:
                self.scorer.restore(self._restored)
                self._restored = None
            log.info("DetectorModel %s: its inference service answers; scoring from now on", self.detector)
        return self.scorer.score(readings)

    def score_frames(self, frames) -> list:
        """An image model's scores of the batch's frames, once `score` has found its service (else none)."""
        score_frames = getattr(self.scorer, "score_frames", None)
        return score_frames(frames) if score_frames is not None else []

    def snapshot(self) -> dict:
        if self.scorer is not None:
            return self.scorer.snapshot()
        return self._restored or {}

    def restore(self, snapshot: dict) -> None:
        if self.scorer is not None:
            self.scorer.restore(snapshot)
        else:
            self._restored = snapshot


def remote_scorers(
    plant: Plant, url_template: str, wait_s: float = 60.0, retry_s: float = 10.0
) -> tuple[list[StreamScorer | FrameScorer | DeferredScorer], list[ModelError]]:
    """Every DetectorModel scored by its inference service (`url_template` with {name}, e.g.
    http://plantwatch-detector-{name}:8080), features and smoothing from the card it serves.

    Services that start alongside the gateway get `wait_s` to answer; one that has not
    answered by then is reported as a problem and asked again every `retry_s` (a
    DeferredScorer). A detector whose spec does not fit what its service serves is left out.
    """
    scorers: list[StreamScorer | FrameScorer | DeferredScorer] = []
    problems = []
    deadline = time.monotonic() + wait_s
    for detector in plant.detectors:
        try:
            model = RemoteModel(url_template.format(name=detector.name), detector.name)
        except ValueError as exc:
            problems.append(ModelError("ServiceUnavailable", f"DetectorModel {detector.name}: {exc}"))
            continue
        try:
            while True:
                try:
                    scorers.append(_remote_scorer(plant, detector, model))
                    break
                except RemoteModelError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(1.0)
        except RemoteModelError as exc:
            problems.append(ModelError("ServiceUnavailable", f"DetectorModel {detector.name}: {exc}; asking again every {retry_s:g}s"))
            scorers.append(DeferredScorer(detector.name, lambda d=detector, m=model: _remote_scorer(plant, d, m), retry_s))
        except UNUSABLE as exc:  # what the service serves does not fit the spec, or a malformed card or metadata
            reason, detail = _unusable(exc)
            problems.append(ModelError(reason, f"DetectorModel {detector.name}: {detail}"))
    return scorers, problems
