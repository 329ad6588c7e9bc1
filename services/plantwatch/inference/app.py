"""`plantwatch serve inference`: one DetectorModel's slot, its file watcher, the HTTP server and status reporting."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from plantwatch.inference.models import ModelError, fetch_model
from plantwatch.inference.oip import InferenceServer, Limits
from plantwatch.inference.slot import ModelSlot
from plantwatch.inference.status import StatusReporter


@dataclass(frozen=True)
class InferenceOptions:
    name: str
    model: str | None = None
    model_url: str | None = None
    provider: str = "cpu"
    sha256: str | None = None
    threads: int = 1
    host: str = "127.0.0.1"  # the pod the operator renders binds 0.0.0.0 explicitly
    http_port: int = 8080
    max_batch: int | None = None  # None: slot.default_max_batch of the provider in use
    max_wait_ms: float = 1.0
    reload_interval_s: float = 2.0
    status_namespace: str | None = None
    limits: Limits = Limits()
    #: A candidate model scored beside the served one on the same rows (`inference.shadow`); never answers requests.
    shadow_model: str | None = None


def serve(opts: InferenceOptions) -> int:
    """Serve until SIGTERM. The first model must load (exit 2 with the reason otherwise); later ones may fail."""
    if (opts.model is None) == (opts.model_url is None) or (opts.model_url and not opts.sha256):
        print("plantwatch serve inference: give --model PATH, or --model-url URL with --sha256", file=sys.stderr)
        return 2
    reporter = None
    if opts.status_namespace:
        # The heartbeat that re-applies the service's verdict (StatusReporter); the e2e test shortens it.
        reporter = StatusReporter(opts.status_namespace, heartbeat_s=float(os.environ.get("PLANTWATCH_STATUS_HEARTBEAT_S", "60")))
    try:
        path = opts.model
        if opts.model_url:
            path = fetch_model(opts.model_url, opts.sha256, Path(tempfile.mkdtemp(prefix="plantwatch-model-")) / "model.onnx")
    except ModelError as exc:
        print(f"plantwatch serve inference: {exc.reason}: {exc}", file=sys.stderr)
        return 2
    slot = ModelSlot(
        opts.name,
        path,
        opts.provider,
        opts.sha256,
        opts.threads,
        opts.max_batch,
        opts.max_wait_ms / 1000.0,
        on_change=reporter.report if reporter else None,
    )
    slot.check()
    if slot.model is None:
        print(f"plantwatch serve inference: {slot.verdict.reason}: {slot.verdict.message}", file=sys.stderr)
        return 2
    if slot.model.active_provider != slot.model.requested_provider:
        print(
            f"plantwatch serve inference: {opts.provider} is not available here; serving on {slot.model.active_provider}", file=sys.stderr
        )
    if opts.model and opts.reload_interval_s > 0:  # a downloaded model is fixed by its sha256; nothing to watch
        slot.watch(opts.reload_interval_s)
    if opts.shadow_model:
        slot.shadow = ModelSlot(f"{opts.name}-shadow", opts.shadow_model, opts.provider, None, opts.threads, 1)
        slot.shadow.check()
        if slot.shadow.model is None:
            print(f"plantwatch serve inference: shadow model not loaded: {slot.shadow.verdict.message}", file=sys.stderr)
        if opts.reload_interval_s > 0:
            slot.shadow.watch(opts.reload_interval_s)
    try:
        server = InferenceServer({slot.name: slot}, opts.http_port, host=opts.host, limits=opts.limits)
    except OSError as exc:
        print(f"plantwatch serve inference: cannot listen on {opts.host}:{opts.http_port}: {exc.strerror or exc}", file=sys.stderr)
        slot.close()
        if reporter:
            reporter.close()
        return 2
    server.start()
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    stop.wait()
    server.stop()
    slot.close()
    if slot.shadow:
        slot.shadow.close()
    if reporter:
        reporter.close()
    return 0
