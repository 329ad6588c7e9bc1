"""The model served under one name: checked loads, hot reload from a watched file, and its verdict.

A DetectorModel's file arrives through a mounted ConfigMap or volume, which the
kubelet updates in place (an atomic swap of the `..data` symlink). The slot
polls the file's identity (device, inode, size, mtime, following symlinks)
rather than using inotify, which does not see a symlink swap in a parent
folder reliably. A changed file is read once, its sha256 checked, loaded by
ONNX Runtime and its signature compared with the one being served; only a
model that passes all of it replaces the current one. Anything else leaves
the previous model serving and records why (`Verdict`), which the service
reports as the DetectorModel's ModelValid condition.

Expected sha256: `--sha256` (the DetectorModel's spec.source.sha256) when given;
else the `model-card.json` next to the model, when there is one (a ConfigMap
from `plantwatch detector publish` carries both, and the kubelet swaps both
at once), which catches a model and card that do not belong together.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plantwatch.contracts import model_card
from plantwatch.contracts.model_card import ModelCard
from plantwatch.contracts.names import CARD_FILE
from plantwatch.inference.batcher import MicroBatcher
from plantwatch.inference.drift import DriftMonitor
from plantwatch.inference.models import LoadedModel, ModelError, TensorSpec, load_model
from plantwatch.inference.shadow import ShadowWindow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The latest load attempt: ModelValid's status, reason and message."""

    valid: bool
    reason: str
    message: str


def signature_problem(old: list[TensorSpec], new: list[TensorSpec], kind: str) -> str | None:
    """Why `new` cannot replace `old` for the same clients, or None when it can."""
    if [(t.name, t.datatype, t.shape) for t in old] != [(t.name, t.datatype, t.shape) for t in new]:
        show = lambda ts: ", ".join(f"{t.name} {t.datatype} {t.shape}" for t in ts)  # noqa: E731
        return f"{kind} are [{show(new)}]; the served model's are [{show(old)}]"
    return None


def batchable(model: LoadedModel) -> bool:
    """One input and every output batched along the first axis: rows of requests can be concatenated."""
    return (
        len(model.inputs) == 1
        and bool(model.inputs[0].shape)
        and model.inputs[0].shape[0] == -1
        and all(o.shape and o.shape[0] == -1 for o in model.outputs)
    )


def default_max_batch(provider: str) -> int:
    """Coalesce requests on a GPU, not on a CPU (bench/inference.py, `micro_batching`).

    On the CPU a detector's call costs microseconds and concurrent calls run in
    parallel with the GIL released, so handing rows to one worker thread measured
    0.5-1.1x of letting each request call the session (2 cores, 8 clients). On a GPU
    every call pays kernel launches and host-device copies, which batching shares.
    """
    return 1 if provider == "cpu" else 256


class ModelSlot:
    """One served model name: the current model, its micro-batcher and the verdict of the last load."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        provider: str = "cpu",
        expected_sha256: str | None = None,
        threads: int = 1,
        max_batch: int | None = None,
        max_wait_s: float = 0.001,
        on_change: Callable[[ModelSlot], None] | None = None,
    ):
        self.name = name
        self.path = Path(path)
        self.provider = provider
        self.expected_sha256 = expected_sha256
        self.threads = threads
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_change = on_change
        self.model: LoadedModel | None = None
        #: The model card beside the served model, if any: its features and smoothing, for stream clients.
        self.card: ModelCard | None = None
        self.verdict = Verdict(False, "NotLoaded", "no model loaded yet")
        #: The served rows against the card's training distribution; None when the card carries none.
        self.drift: DriftMonitor | None = None
        #: A candidate model scored on the same rows (never answered with), and the two models' alarms compared.
        self.shadow: ModelSlot | None = None
        self.shadow_window = ShadowWindow()
        self._batcher: MicroBatcher | None = None
        self._seen: tuple | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reloads = 0

    # --- loading -------------------------------------------------------------------------

    def _identity(self) -> tuple | None:
        try:
            st = os.stat(self.path)
            card = self.path.parent / CARD_FILE
            card_st = os.stat(card) if card.exists() else None
        except OSError:
            return None
        card_id = (card_st.st_ino, card_st.st_size, card_st.st_mtime_ns) if card_st else None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, card_id)

    def _read_card(self) -> ModelCard | None:
        card = self.path.parent / CARD_FILE
        if not card.exists():
            return None
        try:
            parsed = model_card.loads(card.read_text())
            model_card.model_sha256(parsed)
            return parsed
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError("InvalidModel", f"{card}: not a model card with model.sha256: {exc}") from None

    def check(self) -> bool:
        """Load the file if it changed since the last look; True when a new model is now served."""
        identity = self._identity()
        if identity is not None and identity == self._seen:
            return False
        self._seen = identity
        try:
            card = self._read_card()
            expected = self.expected_sha256 or (model_card.model_sha256(card) if card else None)
            try:
                model = load_model(self.name, self.path, self.provider, expected, self.threads)
            except ModelError as exc:
                if exc.reason == "ChecksumMismatch" and not self.expected_sha256:
                    raise ModelError(
                        exc.reason,
                        f"{self.path} does not have the sha256 {expected} that "
                        f"{CARD_FILE} beside it names (a model and card that do not belong together)",
                    ) from None
                raise
            if self.model is not None:
                problem = signature_problem(self.model.inputs, model.inputs, "inputs") or signature_problem(
                    self.model.outputs, model.outputs, "outputs"
                )
                if problem:
                    raise ModelError("SignatureMismatch", problem)
        except ModelError as exc:
            serving = f"; still serving sha256 {self.model.sha256[:12]}" if self.model else ""
            self._set(Verdict(False, exc.reason, f"{exc}{serving}"))
            log.warning("model %s refused: %s: %s%s", self.name, exc.reason, exc, serving)
            return False
        if self.model is not None and model.sha256 == self.model.sha256:
            # Same model bytes: nothing to swap but the card, which may have changed on its own
            # (a new threshold or smoothing published for the same model).
            with self._lock:
                if (card or {}).get("distribution") != (self.card or {}).get("distribution"):
                    self.drift = self._drift_monitor(model, card)
                self.card = card
            self._set(self._loaded_verdict(model))
            return False
        with self._lock:
            self.model = model
            self.card = card
            self.drift = self._drift_monitor(model, card)  # a new model starts a new window
            # One batcher for the slot's life: a reload keeps the signature, so a batch simply
            # runs on whichever model is current when it runs.
            max_batch = self.max_batch if self.max_batch is not None else default_max_batch(model.active_provider)
            if self._batcher is None and batchable(model) and max_batch > 1:
                self._batcher = MicroBatcher(self._run_current, max_batch, self.max_wait_s)
        self.reloads += 1
        self._set(self._loaded_verdict(model))
        log.info("model %s: serving sha256 %s on %s", self.name, model.sha256[:12], model.active_provider)
        return True

    def _drift_monitor(self, model: LoadedModel, card: ModelCard | None) -> DriftMonitor | None:
        """A monitor of the card's input and score when the card carries their training distribution."""
        if not card or "distribution" not in card or not batchable(model) or len(model.inputs[0].shape) != 2:
            return None
        width = model.inputs[0].shape[1]
        try:
            return DriftMonitor(card["distribution"], width if width > 0 else len(card["distribution"]["features"]))
        except ValueError as exc:  # a hand-made card that does not fit its model: serve it, judge no drift
            log.warning("model %s: no drift checks: %s", self.name, exc)
            return None

    def _observe(self, model: LoadedModel, rows: np.ndarray, outputs: list[np.ndarray]) -> list[np.ndarray]:
        score = outputs[next((i for i, o in enumerate(model.outputs) if o.name == "score"), 0)]
        drift = self.drift
        if drift is not None:
            drift.observe(rows, score)
        shadow, card = self.shadow, self.card
        if shadow is not None and shadow.model is not None and card and shadow.card and "alarm" in card and "alarm" in shadow.card:
            _, shadow_outputs = shadow.run({shadow.model.inputs[0].name: rows})
            shadow_score = shadow_outputs[next((i for i, o in enumerate(shadow.model.outputs) if o.name == "score"), 0)]
            self.shadow_window.observe(
                np.ravel(score) > card["alarm"]["threshold"], np.ravel(shadow_score) > shadow.card["alarm"]["threshold"]
            )
        return outputs

    @staticmethod
    def _loaded_verdict(model: LoadedModel) -> Verdict:
        fallback = (
            f" (requested {model.requested_provider}, not available here)" if model.active_provider != model.requested_provider else ""
        )
        return Verdict(True, "ModelLoaded", f"serving sha256 {model.sha256} on {model.active_provider}{fallback}")

    def _set(self, verdict: Verdict) -> None:
        changed = verdict != self.verdict
        self.verdict = verdict
        if changed and self.on_change is not None:
            self.on_change(self)

    def _run_current(self, rows: np.ndarray) -> list[np.ndarray]:
        model = self.model
        return model.session.run(None, {model.inputs[0].name: rows})

    # --- serving -------------------------------------------------------------------------

    @property
    def batched(self) -> bool:
        """Requests go through the micro-batcher: a call waits for others to share it."""
        return self._batcher is not None

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[LoadedModel, list[np.ndarray]]:
        """Outputs for validated feeds, through the micro-batcher when the model allows it."""
        with self._lock:
            model, batcher = self.model, self._batcher
        if model is None:
            raise ModelError("NotLoaded", f"model {self.name} is not loaded: {self.verdict.message}")
        rows = feeds[model.inputs[0].name]
        if batcher is not None:
            return model, self._observe(model, rows, batcher.submit(rows))
        return model, self._observe(model, rows, model.session.run(None, feeds))

    # --- watching ------------------------------------------------------------------------

    def watch(self, interval_s: float = 2.0) -> None:
        def loop():
            while not self._stop.wait(interval_s):
                try:
                    self.check()
                except Exception:  # a watcher that dies silently would freeze the model forever
                    log.exception("model %s: reload check failed", self.name)

        self._watcher = threading.Thread(target=loop, name=f"watch-{self.name}", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        if self._batcher is not None:
            self._batcher.close()
