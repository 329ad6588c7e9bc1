"""Image DetectorModels in the pipeline: each frame of a camera node scored, its score a reading.

A DetectorModel is an image model when its ONNX input is one (float32 [N, 3, H, W]
with a fixed H and W, `image.image_input`): the model says so, and the spec's
`features.sensors` names the camera's sensor (a jpeg-frame node's `image` sensor;
window, step and aggregations do not apply). Every frame is scored on its own: the
score, the model's first output column, is an `anomaly_score` reading of the frame's
node with sensor = the DetectorModel's name and the frame's time, so AnomalyScore
AlertRules fire and resolve on it like on a tabular detector's score.

A model that also answers a `flame_mask` output (the shipped fire detector,
`fire.MASK_OUTPUT`) is gated by flicker: the scorer keeps each camera's last
masks and multiplies the colour score by `fire.flicker_gate` of how much the
flame region changes from frame to frame, so a still orange object or a sunset
is not a fire. Any other model's frames are scored each on their own.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from plantwatch import metrics
from plantwatch.inference.fire import FLICKER_PAIRS, MASK_OUTPUT, flicker_gate, flicker_ratio
from plantwatch.inference.image import FrameError, preprocess_batch
from plantwatch.inference.stream import SCORE_TYPE, UNAVAILABLE_BACKOFF_S, ScoringUnavailable
from plantwatch.readings import Reading

log = logging.getLogger(__name__)


class FrameScorer:
    """One image DetectorModel over the frames of the nodes it selects.

    `run` takes a batch's JPEGs and answers the model's outputs by name, the first
    [N, K] (its first column the score): in process (`local_frames`), or the inference
    service over OIP (RemoteModel.frames, the JPEGs sent as they came). With a
    `flame_mask` output, each node's last FLICKER_PAIRS + 1 masks are its state.
    """

    def __init__(
        self,
        detector: str,
        nodes: Iterable[str],
        sensor: str,
        run: Callable[[list[bytes]], dict[str, np.ndarray]],
        backoff_s: float = UNAVAILABLE_BACKOFF_S,
    ):
        self.detector = detector
        self.nodes = frozenset(nodes)
        self.sensor = sensor
        self.run = run
        self.scored = 0
        #: Frames not scored: whose header read as a JPEG but whose pixels did not decode, or the model was unreachable.
        self.skipped = 0
        self.backoff_s = backoff_s
        self._skip_until = -math.inf
        self._masks: dict[str, deque[np.ndarray]] = {}

    def score(self, readings: Iterable[Reading]) -> list[Reading]:
        """Readings carry no frames: an image model scores only `score_frames`."""
        return []

    def score_frames(self, frames: Sequence[tuple[Reading, bytes]]) -> list[Reading]:
        """Score a batch's frames (the reading each made, its JPEG) in one model call."""
        mine = [(r, f) for r, f in frames if r.sensor == self.sensor and r.node in self.nodes]
        if not mine:
            return []
        if time.monotonic() < self._skip_until:
            self._skip(len(mine), "backing off after the model could not be reached")
            return []
        try:
            outputs = self._outputs([f for _, f in mine])
        except FrameError:  # one frame's pixels do not decode: the others are scored one by one without it
            parts = []
            for r, f in mine:
                try:
                    parts.append((r, self._outputs([f])))
                except FrameError as exc:
                    self._skip(1, str(exc))
            if not parts:
                return []
            mine = [r for r, _ in parts]
            outputs = {k: np.concatenate([o[k] for _, o in parts]) for k in parts[0][1]}
        except ScoringUnavailable as exc:
            self._skip_until = time.monotonic() + self.backoff_s
            self._skip(len(mine), f"{exc}; not called again for {self.backoff_s:g}s")
            return []
        else:
            mine = [r for r, _ in mine]
        scores = next(iter(outputs.values())).astype(np.float64).reshape(len(mine), -1)[:, 0]
        if MASK_OUTPUT in outputs:
            scores = self._gated(mine, scores, outputs[MASK_OUTPUT].reshape(len(mine), -1))
        self.scored += len(mine)
        return [Reading(r.node, self.detector, SCORE_TYPE, float(s), r.ts) for r, s in zip(mine, scores)]

    def _outputs(self, jpegs: list[bytes]) -> dict[str, np.ndarray]:
        return {name: np.asarray(v) for name, v in self.run(jpegs).items()}

    def _gated(self, readings: list[Reading], scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Each frame's colour score times its flicker gate, against its node's earlier masks (in frame order)."""
        gated = scores.copy()
        for i, r in enumerate(readings):
            kept = self._masks.setdefault(r.node, deque(maxlen=FLICKER_PAIRS + 1))
            kept.append(masks[i].astype(np.float32))
            gated[i] = scores[i] * flicker_gate(flicker_ratio(kept))
        return gated

    def _skip(self, frames: int, why: str) -> None:
        self.skipped += frames
        metrics.SCORES_SKIPPED.labels(self.detector).inc(frames)
        log.warning("DetectorModel %s: %d frame(s) not scored: %s", self.detector, frames, why)

    def snapshot(self) -> dict:
        """Per node, its last flame masks (rounded to 1/1000), JSON-ready; empty for a model without a mask."""
        return {node: [np.round(m, 3).tolist() for m in kept] for node, kept in self._masks.items()}

    def restore(self, snapshot: dict) -> None:
        """Continue from a snapshot; nodes this scorer no longer selects are dropped."""
        for node, masks in snapshot.items():
            if node in self.nodes:
                self._masks[node] = deque((np.asarray(m, np.float32) for m in masks), maxlen=FLICKER_PAIRS + 1)


def local_frames(session, input_name: str, size: tuple[int, int]) -> Callable[[list[bytes]], dict[str, np.ndarray]]:
    """`run` for a model loaded here: the JPEGs decoded, resized and normalised (image.preprocess_batch)."""
    names = [o.name for o in session.get_outputs()]
    return lambda jpegs: dict(zip(names, session.run(None, {input_name: preprocess_batch(jpegs, size)})))
