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
"""

from __future__ import annotations

import numpy as np

FIRE_KINDS = ("fire", "fire_dark", "fire_small", "fire_bright")
CLEAR_KINDS = ("plain", "dark", "bright", "red_object", "red_light", "warm_light", "lamp", "orange_object")
KINDS = FIRE_KINDS + CLEAR_KINDS


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


def _flame(rng: np.random.Generator, img: np.ndarray, share: float) -> None:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    area = share * size * size
    rx = np.sqrt(area / (np.pi * 1.8))
    ry = 1.8 * rx
    cx, cy = rng.uniform(rx, size - rx), rng.uniform(ry, size - 0.5 * ry)
    # A teardrop: wider at the base, pointed at the top, ragged by noise.
    dy = (yy - cy) / ry
    dx = (xx - cx) / (rx * np.clip(1.0 - 0.5 * dy, 0.3, 1.4) * 0.8)
    d = np.sqrt(dx**2 + dy**2) + rng.normal(0, 0.12, (size, size))
    t = np.clip(1.0 - d, 0, 1)  # 1 at the core, 0 outside
    core, mid, edge = np.asarray([1.0, 0.95, 0.7]), np.asarray([1.0, 0.6, 0.12]), np.asarray([0.9, 0.35, 0.05])
    colour = np.where(t[..., None] > 0.5, mid + (core - mid) * ((t[..., None] - 0.5) * 2), edge + (mid - edge) * (t[..., None] * 2))
    alpha = np.clip(t * 3, 0, 1)[..., None]
    img[:] = img * (1 - alpha) + colour * rng.uniform(0.9, 1.05) * alpha


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


def labelled_frames(n: int, seed: int, size: int = 64) -> list[tuple[str, bool, np.ndarray]]:
    """`n` frames, the kinds in turn: (kind, is_fire, uint8 RGB [size, size, 3])."""
    rng = np.random.default_rng(seed)
    return [(k, k in FIRE_KINDS, frame(k, rng, size)) for k in (KINDS[i % len(KINDS)] for i in range(n))]
