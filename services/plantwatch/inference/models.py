"""Loading ONNX models for serving: checksum, execution provider with CPU fallback, signature."""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from plantwatch.contracts.names import EXECUTION_PROVIDERS, ORT_PROVIDERS

#: DetectorModel executionProvider → ONNX Runtime providers to try, in preference order: each falls back to cpu.
FALLBACKS = {
    "cpu": [ORT_PROVIDERS["cpu"]],
    "cuda": [ORT_PROVIDERS["cuda"], ORT_PROVIDERS["cpu"]],
    "tensorrt": [ORT_PROVIDERS["tensorrt"], ORT_PROVIDERS["cuda"], ORT_PROVIDERS["cpu"]],
}
_FROM_ORT = {ort_name: provider for provider, ort_name in ORT_PROVIDERS.items()}
_ORT_TO_OIP = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(float16)": "FP16",
}
OIP_TO_NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_, "FP16": np.float16}


class ModelError(ValueError):
    """The model cannot be served; `reason` is the CamelCase reason for ModelValid=False."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass
class LoadedModel:
    """An ONNX Runtime session ready to serve, and what it is."""

    name: str
    session: ort.InferenceSession
    sha256: str
    requested_provider: str
    active_provider: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_model(url: str, expected_sha256: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download a model over HTTP(S); nothing is kept unless its sha256 matches."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError as exc:
        raise ModelError("SourceNotFound", f"cannot download {url}: {exc}") from None
    digest = sha256_of(data)
    if digest != expected_sha256:
        raise ModelError("ChecksumMismatch", f"{url} has sha256 {digest}, the DetectorModel expects {expected_sha256}")
    dest.write_bytes(data)
    return dest


def load_model(name: str, path: str | Path, provider: str = "cpu", expected_sha256: str | None = None, threads: int = 1) -> LoadedModel:
    """Load and check a model; raises ModelError with a reason a status condition can carry."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError("SourceNotFound", f"cannot read the model at {path}: {exc.strerror}") from None
    digest = sha256_of(data)
    if expected_sha256 and digest != expected_sha256:
        raise ModelError("ChecksumMismatch", f"model sha256 is {digest}, the DetectorModel expects {expected_sha256}")
    if provider not in EXECUTION_PROVIDERS:
        raise ModelError("UnknownProvider", f"execution provider {provider!r}; accepted: {', '.join(EXECUTION_PROVIDERS)}")
    available = set(ort.get_available_providers())
    providers = [p for p in FALLBACKS[provider] if p in available]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise ModelError("InvalidModel", f"ONNX Runtime cannot load the model: {exc}") from None
    active = _FROM_ORT[session.get_providers()[0]]

    def specs(args) -> list[TensorSpec]:
        return [TensorSpec(a.name, _ORT_TO_OIP.get(a.type, a.type), [d if isinstance(d, int) else -1 for d in a.shape]) for a in args]

    return LoadedModel(name, session, digest, provider, active, specs(session.get_inputs()), specs(session.get_outputs()))
