"""Image DetectorModels in the pipeline: each frame of a camera node scored, its score a reading.

A DetectorModel is an image model when its ONNX input is one (float32 [N, 3, H, W]
with a fixed H and W, `image.image_input`): the model says so, and the spec's
`features.sensors` names the camera's sensor (a jpeg-frame node's `image` sensor;
window, step and aggregations do not apply). Every frame is scored on its own: the
score, the model's first output column, is an `anomaly_score` reading of the frame's
node with sensor = the DetectorModel's name and the frame's time, so AnomalyScore
AlertRules fire and resolve on it like on a tabular detector's score.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from plantwatch import metrics
from plantwatch.inference.image import FrameError, preprocess_batch
from plantwatch.inference.stream import SCORE_TYPE, UNAVAILABLE_BACKOFF_S, ScoringUnavailable
from plantwatch.readings import Reading

log = logging.getLogger(__name__)


class FrameScorer:
    """One image DetectorModel over the frames of the nodes it selects; stateless between frames.

    `run` takes a batch's JPEGs and answers [N, K]: in process (`local_frames`), or the
    inference service over OIP (RemoteModel.frames, the JPEGs sent as they came).
    """

    def __init__(
        self,
        detector: str,
        nodes: Iterable[str],
        sensor: str,
        run: Callable[[list[bytes]], np.ndarray],
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
            scores = self._scores([f for _, f in mine])
        except FrameError:  # one frame's pixels do not decode: the others are scored one by one without it
            scored = []
            for r, f in mine:
                try:
                    scored.append((r, self._scores([f])[0]))
                except FrameError as exc:
                    self._skip(1, str(exc))
            mine, scores = [r for r, _ in scored], [s for _, s in scored]
        except ScoringUnavailable as exc:
            self._skip_until = time.monotonic() + self.backoff_s
            self._skip(len(mine), f"{exc}; not called again for {self.backoff_s:g}s")
            return []
        else:
            mine = [r for r, _ in mine]
        self.scored += len(mine)
        return [Reading(r.node, self.detector, SCORE_TYPE, float(s), r.ts) for r, s in zip(mine, scores)]

    def _scores(self, jpegs: list[bytes]) -> np.ndarray:
        """The first output column, one score per frame."""
        return np.asarray(self.run(jpegs), dtype=np.float64).reshape(len(jpegs), -1)[:, 0]

    def _skip(self, frames: int, why: str) -> None:
        self.skipped += frames
        metrics.SCORES_SKIPPED.labels(self.detector).inc(frames)
        log.warning("DetectorModel %s: %d frame(s) not scored: %s", self.detector, frames, why)

    def snapshot(self) -> dict:
        return {}

    def restore(self, snapshot: dict) -> None:
        """Nothing to restore: each frame is scored on its own."""


def local_frames(session, input_name: str, size: tuple[int, int]) -> Callable[[list[bytes]], np.ndarray]:
    """`run` for a model loaded here: the JPEGs decoded, resized and normalised (image.preprocess_batch)."""
    return lambda jpegs: session.run(None, {input_name: preprocess_batch(jpegs, size)})[0]
