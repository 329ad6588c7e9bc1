"""Does an execution provider really serve here? `python -m plantwatch.inference.providers cuda tensorrt`.

For each provider: load a real model the way the service does, asking for that
provider, and compare its scores with the CPU's on the same rows. The answer
is one of three, never a silent pass:

  passed   the provider is what ONNX Runtime used, and its scores match the CPU's
  failed   the provider was used and its scores differ, or loading failed
  not run  this ONNX Runtime has no such provider (the service would fall back to
           cpu and say so in status.activeProvider); nothing was checked

Exit status: 0 every provider passed, 1 one failed, 4 none failed but one was not run.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from plantwatch.contracts.names import EXECUTION_PROVIDERS, ORT_PROVIDERS
from plantwatch.inference.models import ModelError, load_model
from plantwatch.inference.zscore import zscore_model


def check(provider: str, rows: int = 4096) -> dict:
    """One provider's verdict, as a JSON-ready dict with `result` passed / failed / not run."""
    if provider not in EXECUTION_PROVIDERS:
        raise ValueError(f"provider {provider!r}; accepted: {', '.join(EXECUTION_PROVIDERS)}")
    available = ort.get_available_providers()
    if ORT_PROVIDERS[provider] not in available:
        return {
            "provider": provider,
            "result": "not run",
            "reason": f"this onnxruntime {ort.__version__} has {available}; the service falls back to cpu and reports it",
        }
    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, 9)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="plantwatch-provider-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(zscore_model([0.0] * 9, [1.0] * 9))
        try:
            model = load_model("provider-check", path, provider)
            reference = load_model("provider-check", path, "cpu")
        except ModelError as exc:
            return {"provider": provider, "result": "failed", "reason": f"{exc.reason}: {exc}"}
    if model.active_provider != provider:
        return {
            "provider": provider,
            "result": "failed",
            "reason": f"ONNX Runtime lists {ORT_PROVIDERS[provider]} but the session runs on {model.active_provider}",
        }
    got = model.session.run(None, {"features": features})[0]
    want = reference.session.run(None, {"features": features})[0]
    difference = float(np.abs(got - want).max())
    ok = bool(np.allclose(got, want, rtol=1e-3, atol=1e-4))
    return {
        "provider": provider,
        "result": "passed" if ok else "failed",
        "rows": rows,
        "max_abs_difference_vs_cpu": difference,
        "session_providers": model.session.get_providers(),
    }


def main(argv: list[str] | None = None) -> int:
    wanted = (argv if argv is not None else sys.argv[1:]) or ["cuda", "tensorrt"]
    try:
        results = [check(p) for p in wanted]
    except ValueError as exc:
        print(f"providers: {exc}", file=sys.stderr)
        return 2
    for r in results:
        print(json.dumps(r))
    if any(r["result"] == "failed" for r in results):
        return 1
    return 4 if any(r["result"] == "not run" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
