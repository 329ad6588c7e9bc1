"""Image frames for image DetectorModels: decode, resize and normalise once per frame, then batch.

An image model takes float32 [N, 3, H, W] (RGB, values in [0, 1]) and answers
[N, K] (K = 1: a probability; more: class scores, the first column read as the
score). A model that expects another normalisation (ImageNet mean and std) folds
it into its graph, so every frame is prepared the same way whatever model serves it.

Frames travel to the inference service as JPEG (or PNG) bytes, base64 in an Open
Inference Protocol BYTES tensor: a 64x64 JPEG is a few kilobytes where the same
frame as JSON floats is about a hundred. The service decodes each frame once on
its worker thread, and the model call itself goes through the micro-batcher, so
concurrent frames share one session call. Pillow decodes (libjpeg, libpng).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from plantwatch.inference.models import TensorSpec

#: Formats a frame may be sent in; anything else Pillow could open (TIFF, BMP…) is refused by name.
FRAME_FORMATS = ("JPEG", "PNG")


class FrameError(ValueError):
    """A frame that cannot be read; the message says which one and what is accepted."""


def image_input(spec: TensorSpec) -> tuple[int, int] | None:
    """(H, W) when `spec` is an image input (float [N, 3, H, W] with a fixed H and W), else None (pure)."""
    shape = spec.shape
    if spec.datatype == "FP32" and len(shape) == 4 and shape[1] == 3 and shape[2] > 0 and shape[3] > 0:
        return shape[2], shape[3]
    return None


def encode_frame(rgb: np.ndarray, quality: int = 90) -> bytes:
    """An RGB frame (uint8 [H, W, 3], or float in [0, 1]) as JPEG bytes, as a camera sends it."""
    if rgb.dtype.kind == "f":
        rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def preprocess(frame: bytes, size: tuple[int, int], where: str = "frame") -> np.ndarray:
    """One JPEG/PNG frame as float32 [3, H, W] in [0, 1], resized (bilinear) to `size` = (H, W)."""
    try:
        image = Image.open(io.BytesIO(frame))
        if image.format not in FRAME_FORMATS:
            raise FrameError(f"{where}: a {image.format} image; frames must be {' or '.join(FRAME_FORMATS)}")
        image = image.convert("RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise FrameError(f"{where}: not a readable {' or '.join(FRAME_FORMATS)} image ({len(frame)} bytes): {exc}") from None
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def preprocess_batch(frames: Sequence[bytes], size: tuple[int, int]) -> np.ndarray:
    """Frames as one float32 [N, 3, H, W] batch."""
    batch = np.empty((len(frames), 3, *size), np.float32)
    for i, frame in enumerate(frames):
        batch[i] = preprocess(frame, size, f"frame {i}")
    return batch


def frames_from_tensor(name: str, tensor: dict, size: tuple[int, int]) -> np.ndarray:
    """An OIP BYTES tensor of base64 frames (shape [N]) as the model's [N, 3, H, W] input (pure but for decoding)."""
    data, shape = tensor.get("data"), tensor.get("shape")
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise FrameError(f"input {name}: BYTES data must be a list of base64 strings, one JPEG or PNG frame each")
    if shape != [len(data)]:
        raise FrameError(f"input {name}: BYTES shape must be [number of frames] = [{len(data)}], got {shape!r}")
    frames = []
    for i, text in enumerate(data):
        try:
            frames.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise FrameError(f"input {name}: frame {i} is not base64") from None
    return preprocess_batch(frames, size)


def frames_request(input_name: str, frames: Sequence[bytes]) -> dict:
    """The Open Inference Protocol request that sends `frames` to an image model (the client's side)."""
    return {
        "inputs": [
            {"name": input_name, "shape": [len(frames)], "datatype": "BYTES", "data": [base64.b64encode(f).decode() for f in frames]}
        ]
    }
