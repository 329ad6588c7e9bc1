"""Labelled camera frames for the fire detector: flames and no flames, made here, seeded.

Each frame is a small industrial scene (grey, blue and green machinery on a wall,
a gradient, sensor noise) under a lighting level from dark to bright. Positives
carry one or more flames: teardrop shapes, white-yellow core to red edge, ragged
by noise, from 1.5 % to 20 % of the frame, in any lighting. Negatives are plain
scenes and the distractors a colour rule can trip on: red objects (paint, signs),
red warning lights, warm (sodium, sunset) lighting over the whole scene, bright
white lamps, and orange objects (safety vests, orange paint), which are flame
coloured and so the baseline's known false alarms.

`labelled_frames(n, seed)` returns (kind, is_fire, uint8 RGB [H, W, 3]) tuples;
the kinds cycle, so any n has every kind in near-equal shares.

`labelled_sequences(n, seed)` returns one camera's frames over time per kind (12
frames at 4 fps by default, `sequence`): flames flicker (shape, size, sway and
brightness change every frame); objects and lighting hold still or drift slowly,
and a sunset through a window (flame-coloured sky) deepens slowly. Thresholds are
chosen on seed 1 and measured on seed 2.
"""

from __future__ import annotations

import numpy as np

FIRE_KINDS = ("fire", "fire_dark", "fire_small", "fire_bright")
CLEAR_KINDS = ("plain", "dark", "bright", "red_object", "red_light", "warm_light", "lamp", "orange_object")
KINDS = FIRE_KINDS + CLEAR_KINDS
#: Sequences also show a sunset through a window: flame-coloured sky, changing only slowly.
SEQUENCE_KINDS = KINDS + ("sunset",)
#: A sequence's frames, and the frame rate they stand for (3 s of a camera at 4 frames a second).
SEQUENCE_FRAMES, FPS = 12, 4.0


def _scene(rng: np.random.Generator, size: int, light: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    cast = rng.uniform(0.85, 1.1, 3)
    base = rng.uniform(0.3, 0.6) * (1 - 0.3 * yy + 0.2 * rng.uniform(-1, 1) * xx)
    img = base[..., None] * cast
    for _ in range(rng.integers(1, 4)):  # machines: grey, blue-grey or green boxes
        x0, y0 = rng.integers(0, size - 8, 2)
        w, h = rng.integers(6, size // 2, 2)
        colour = rng.choice([[0.5, 0.5, 0.5], [0.3, 0.4, 0.55], [0.3, 0.5, 0.35], [0.2, 0.2, 0.22]])
        img[y0 : y0 + h, x0 : x0 + w] = np.asarray(colour) * rng.uniform(0.7, 1.2)
    return img * light


def _flame(rng: np.random.Generator, img: np.ndarray, share: float) -> tuple[float, float, float]:
    """Paint a flame of `share` of the frame at a random place; its (cx, cy, rx), for a sequence to redraw it."""
    size = img.shape[0]
    rx = np.sqrt(share * size * size / (np.pi * 1.8))
    cx, cy = rng.uniform(rx, size - rx), rng.uniform(1.8 * rx, size - 0.9 * rx)
    _draw_flame(rng, img, cx, cy, rx, 1.8 * rx)
    return cx, cy, rx


def _draw_flame(rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, rx: float, ry: float, gain: float = 1.0) -> None:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    # A teardrop: wider at the base, pointed at the top, ragged by noise.
    dy = (yy - cy) / ry
    dx = (xx - cx) / (rx * np.clip(1.0 - 0.5 * dy, 0.3, 1.4) * 0.8)
    d = np.sqrt(dx**2 + dy**2) + rng.normal(0, 0.12, (size, size))
    t = np.clip(1.0 - d, 0, 1)  # 1 at the core, 0 outside
    core, mid, edge = np.asarray([1.0, 0.95, 0.7]), np.asarray([1.0, 0.6, 0.12]), np.asarray([0.9, 0.35, 0.05])
    colour = np.where(t[..., None] > 0.5, mid + (core - mid) * ((t[..., None] - 0.5) * 2), edge + (mid - edge) * (t[..., None] * 2))
    alpha = np.clip(t * 3, 0, 1)[..., None]
    img[:] = img * (1 - alpha) + colour * rng.uniform(0.9, 1.05) * gain * alpha


def _patch(rng: np.random.Generator, img: np.ndarray, colour, share: float, disk: bool = False) -> None:
    size = img.shape[0]
    side = max(3, int(np.sqrt(share) * size))
    x0, y0 = rng.integers(0, size - side, 2)
    yy, xx = np.mgrid[0:side, 0:side]
    mask = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= (side / 2) ** 2) if disk else np.ones((side, side), bool)
    img[y0 : y0 + side, x0 : x0 + side][mask] = colour


def frame(kind: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One frame of `kind` (see KINDS) as uint8 RGB [size, size, 3]."""
    light = {"dark": 0.3, "fire_dark": 0.25, "bright": 1.6, "fire_bright": 1.5}.get(kind, rng.uniform(0.7, 1.2))
    img = _scene(rng, size, light * rng.uniform(0.85, 1.15))
    if kind in FIRE_KINDS:
        for _ in range(rng.integers(1, 3)):
            _flame(rng, img, rng.uniform(0.015, 0.04) if kind == "fire_small" else rng.uniform(0.04, 0.2))
    elif kind == "red_object":
        _patch(rng, img, np.asarray([rng.uniform(0.55, 0.95), rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.15)]), rng.uniform(0.05, 0.25))
    elif kind == "red_light":
        _patch(rng, img, np.asarray([1.0, rng.uniform(0.1, 0.25), rng.uniform(0.1, 0.25)]), rng.uniform(0.01, 0.05), disk=True)
    elif kind == "warm_light":
        img *= np.asarray([rng.uniform(1.3, 1.6), rng.uniform(1.0, 1.15), rng.uniform(0.55, 0.75)])
    elif kind == "lamp":
        _patch(rng, img, np.asarray([1.0, 1.0, rng.uniform(0.85, 1.0)]), rng.uniform(0.02, 0.08), disk=True)
    elif kind == "orange_object":
        _patch(rng, img, np.asarray([rng.uniform(0.85, 1.0), rng.uniform(0.35, 0.55), rng.uniform(0.0, 0.12)]), rng.uniform(0.03, 0.15))
    elif kind not in ("plain", "dark", "bright"):
        raise ValueError(f"unknown frame kind {kind!r}; kinds: {', '.join(KINDS)}")
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _sunset(img: np.ndarray, horizon: int, glow: float) -> None:
    """A window onto a sunset sky down to row `horizon`: orange at the horizon to yellow above, redder as `glow` deepens."""
    up = np.linspace(1, 0, horizon)[:, None, None]  # 1 at the top, 0 at the horizon
    img[:horizon] = np.concatenate([np.full((horizon, 1, 1), 1.0), 0.5 + 0.35 * up - 0.1 * glow, 0.15 + 0.3 * up], axis=2)


def sequence(kind: str, rng: np.random.Generator, n: int = SEQUENCE_FRAMES, size: int = 64) -> list[np.ndarray]:
    """`n` frames of one camera at FPS frames a second, as uint8 RGB [size, size, 3] (see SEQUENCE_KINDS).

    Flames flicker: each frame redraws them with a new width (x0.7-1.3), height
    (x0.65-1.35), raggedness, a sway of about a pixel and a brightness of x0.8-1.1.
    Everything else holds still but for sensor noise and a slow drift of the light
    (up to 6 % over the sequence); a sunset's glow deepens over it.
    """
    if kind in CLEAR_KINDS:  # the still frame's object or lighting, made once
        scene = frame(kind, rng, size).astype(float) / 255.0
    elif kind in FIRE_KINDS or kind == "sunset":
        light = {"fire_dark": 0.25, "fire_bright": 1.5}.get(kind, rng.uniform(0.7, 1.2))
        scene = _scene(rng, size, light * rng.uniform(0.85, 1.15))
    else:
        raise ValueError(f"unknown sequence kind {kind!r}; kinds: {', '.join(SEQUENCE_KINDS)}")
    flames = []
    if kind in FIRE_KINDS:
        for _ in range(rng.integers(1, 3)):
            flames.append(_flame(rng, scene.copy(), rng.uniform(0.015, 0.04) if kind == "fire_small" else rng.uniform(0.04, 0.2)))
    horizon, glow = int(size * rng.uniform(0.3, 0.55)), rng.uniform(0, 0.5)
    drift = rng.uniform(-0.06, 0.06)
    out = []
    for t in range(n):
        img = scene * (1 + drift * t / max(1, n - 1))
        for cx, cy, rx in flames:
            width, height, gain = rx * rng.uniform(0.7, 1.3), 1.8 * rx * rng.uniform(0.65, 1.35), rng.uniform(0.8, 1.1)
            _draw_flame(rng, img, cx + rng.normal(0, 1.0), cy, width, height, gain)
        if kind == "sunset":
            _sunset(img, horizon, glow + 0.2 * t / max(1, n - 1))
        img = img + rng.normal(0, 0.02, img.shape)
        out.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    return out


def labelled_sequences(n: int, seed: int, frames: int = SEQUENCE_FRAMES, size: int = 64) -> list[tuple[str, bool, list[np.ndarray]]]:
    """`n` sequences of one camera each, the kinds of SEQUENCE_KINDS in turn: (kind, is_fire, its frames)."""
    rng = np.random.default_rng(seed)
    kinds = (SEQUENCE_KINDS[i % len(SEQUENCE_KINDS)] for i in range(n))
    return [(k, k in FIRE_KINDS, sequence(k, rng, frames, size)) for k in kinds]


def labelled_frames(n: int, seed: int, size: int = 64) -> list[tuple[str, bool, np.ndarray]]:
    """`n` frames, the kinds in turn: (kind, is_fire, uint8 RGB [size, size, 3])."""
    rng = np.random.default_rng(seed)
    return [(k, k in FIRE_KINDS, frame(k, rng, size)) for k in (KINDS[i % len(KINDS)] for i in range(n))]
