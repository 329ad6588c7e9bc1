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
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from plantwatch import metrics
from plantwatch.inference.image import FrameError, preprocess
from plantwatch.inference.stream import SCORE_TYPE
from plantwatch.readings import Reading

log = logging.getLogger(__name__)


class FrameScorer:
    """One image DetectorModel over the frames of the nodes it selects; stateless between frames."""

    def __init__(self, detector: str, nodes: Iterable[str], sensor: str, size: tuple[int, int], run: Callable[[np.ndarray], np.ndarray]):
        self.detector = detector
        self.nodes = frozenset(nodes)
        self.sensor = sensor
        self.size = size
        self.run = run
        self.scored = 0
        #: Frames whose header read as a JPEG but whose pixels did not decode.
        self.unreadable = 0

    def score(self, readings: Iterable[Reading]) -> list[Reading]:
        """Readings carry no frames: an image model scores only `score_frames`."""
        return []

    def score_frames(self, frames: Sequence[tuple[Reading, bytes]]) -> list[Reading]:
        """Score a batch's frames (the reading each made, its JPEG) in one model call."""
        mine, batch = [], []
        for reading, frame in frames:
            if reading.sensor != self.sensor or reading.node not in self.nodes:
                continue
            try:
                batch.append(preprocess(frame, self.size, f"frame of {reading.node} at {reading.ts:.3f}"))
            except FrameError as exc:
                self.unreadable += 1
                metrics.SCORES_SKIPPED.labels(self.detector).inc()
                log.warning("DetectorModel %s: %s; not scored", self.detector, exc)
                continue
            mine.append(reading)
        if not batch:
            return []
        scores = np.asarray(self.run(np.stack(batch)), dtype=np.float64).reshape(len(batch), -1)[:, 0]
        self.scored += len(mine)
        return [Reading(r.node, self.detector, SCORE_TYPE, float(s), r.ts) for r, s in zip(mine, scores)]

    def snapshot(self) -> dict:
        return {}

    def restore(self, snapshot: dict) -> None:
        """Nothing to restore: each frame is scored on its own."""
