"""Labelled recordings of a pump skid, to develop and judge detectors honestly.

Why a physical toy rather than Gaussian blobs: the hard parts of real plant data
are correlations (a valve closing raises pressure *and* lowers flow, a speed
change moves both the same way), slow drift (a motor warming up for the whole
recording), operating-point changes that are normal, single-point spikes that
are not faults, and faults that start subtly. The generator is pure and seeded:
the same seed gives the same recording, byte for byte.

Each recording is ~1 Hz, 5-10 channels, its first `train_rows` rows fault-free,
then sustained fault episodes labelled 1 in the `anomaly` column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

#: Every channel the skid can expose; a recording shows 5-10 of them.
ALL_CHANNELS = ("motor_speed", "current", "voltage", "pressure", "flow", "valve_position",
                "vibration_rms", "vibration2_rms", "temperature", "thermocouple")
#: Always present, so every fault type is observable in every recording.
CORE_CHANNELS = ("current", "pressure", "flow", "vibration_rms", "temperature")
FAULTS = ("bearing_wear", "overheating", "valve_closure", "cavitation", "stuck_sensor", "dropped_sensor")


@dataclass(frozen=True)
class Recording:
    """One labelled recording: values [rows, channels] (NaN where a sensor dropped out)."""

    channels: tuple[str, ...]
    values: np.ndarray
    anomaly: np.ndarray
    faults: tuple[tuple[str, int, int], ...]  # (kind, first row, end row exclusive)


def _operating_point(rng: np.random.Generator, n: int, train_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Speed and valve set-points: piecewise constant with first-order ramps.

    Half the recordings see two operating points during training and revisit
    points inside that range later (normal, must not alarm); the others run at
    one point with only small set-point nudges afterwards.
    """
    base = rng.uniform(0.65, 0.95)
    if rng.random() < 0.5:
        other = float(np.clip(base + rng.choice([-1, 1]) * rng.uniform(0.08, 0.18), 0.55, 1.0))
        low, high = sorted((base, other))
        change = int(rng.integers(120, train_rows - 80))
        steps = [(0, base), (change, other)]
        for start in sorted(rng.integers(train_rows + 50, n - 50, size=int(rng.integers(1, 4)))):
            steps.append((int(start), rng.uniform(low, high)))
    else:
        steps = [(0, base)]
        for start in sorted(rng.integers(train_rows + 50, n - 50, size=int(rng.integers(0, 3)))):
            steps.append((int(start), base + rng.uniform(-0.005, 0.005)))
    target = np.empty(n)
    for (start, level), (end, _) in zip(steps, steps[1:] + [(n, 0.0)]):
        target[start:end] = level
    speed = _lag(target, tau=rng.uniform(5, 20))
    valve = _lag(np.full(n, rng.uniform(0.85, 1.0)), tau=1.0)
    return speed, valve


def _lag(x: np.ndarray, tau: float, start: float | None = None) -> np.ndarray:
    """First-order lag (dy/dt = (x - y)/tau at 1 Hz): how real actuators and heat respond."""
    y = np.empty_like(x)
    state = x[0] if start is None else start
    alpha = 1.0 - np.exp(-1.0 / tau)
    for i, value in enumerate(x):
        state += alpha * (value - state)
        y[i] = state
    return y


def _ar_noise(rng: np.random.Generator, n: int, sigma: float, phi: float = 0.6) -> np.ndarray:
    """Coloured (AR(1)) noise with marginal std `sigma`: real sensor noise is not white."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - phi ** 2), n)
    out = np.empty(n)
    state = rng.normal(0.0, sigma)
    for i in range(n):
        state = phi * state + e[i]
        out[i] = state
    return out


def _episodes(rng: np.random.Generator, n: int, train_rows: int) -> list[tuple[str, int, int]]:
    """1-3 non-overlapping fault episodes of 80-350 s after the training rows."""
    episodes: list[tuple[str, int, int]] = []
    cursor = train_rows + int(rng.integers(30, 150))
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.integers(80, 351))
        if cursor + length > n - 20:
            break
        episodes.append((str(rng.choice(FAULTS)), cursor, cursor + length))
        cursor += length + int(rng.integers(60, 250))
    return episodes


def _ramp(n: int, start: int, end: int) -> np.ndarray:
    """0 before `start`, rising linearly to 1 at `end`, then back to 0 (the fault is repaired)."""
    r = np.zeros(n)
    r[start:end] = np.linspace(0.0, 1.0, end - start)
    return r


def _window(n: int, start: int, end: int) -> np.ndarray:
    w = np.zeros(n)
    w[start:end] = 1.0
    return w


def simulate(seed: int, train_rows: int = 400) -> Recording:
    """One recording of the pump skid (pure: same seed, same recording)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(train_rows + 600, train_rows + 900))
    speed, valve = _operating_point(rng, n, train_rows)
    episodes = _episodes(rng, n, train_rows)

    vib_factor = np.ones(n)
    heat = np.zeros(n)
    current_factor = np.ones(n)
    pressure_noise = np.ones(n)
    flow_loss = np.zeros(n)
    for kind, start, end in episodes:
        if kind == "bearing_wear":
            ramp = _ramp(n, start, end)
            vib_factor *= 1 + rng.uniform(0.3, 1.0) * ramp
            heat += rng.uniform(1.0, 4.0) * ramp
        elif kind == "overheating":
            heat += rng.uniform(3.0, 8.0) * _window(n, start, end)
            current_factor *= 1 + rng.uniform(0.02, 0.06) * _window(n, start, end)
        elif kind == "valve_closure":
            valve = valve * (1 - rng.uniform(0.1, 0.35) * _lag(_window(n, start, end), tau=rng.uniform(3, 15)))
        elif kind == "cavitation":
            w = _window(n, start, end)
            pressure_noise *= 1 + rng.uniform(2.0, 5.0) * w
            flow_loss += rng.uniform(0.03, 0.08) * w
            vib_factor *= 1 + rng.uniform(0.15, 0.4) * w

    ambient = 22 + rng.uniform(-3, 3) + np.cumsum(rng.normal(0, 0.01, n))
    flow = 120 * speed * np.sqrt(valve) * (1 - flow_loss)
    pressure = 1.5 + 4.0 * speed ** 2 / valve ** 1.5
    current = (3.0 + 9.0 * speed ** 3 * (0.7 + 0.3 * pressure / 5.5)) * current_factor
    # The motor warms up for the whole recording (tau ~ 10-25 min); fault heat arrives faster (tau ~ 1 min).
    steady = ambient + 1.6 * current
    temperature = (_lag(steady, tau=rng.uniform(600, 1500), start=steady[0] - rng.uniform(2, 8))
                   + _lag(heat, tau=rng.uniform(30, 90), start=0.0))
    vibration = (0.4 + 1.3 * speed ** 2) * vib_factor

    signals = {
        "motor_speed": 1480 * speed + _ar_noise(rng, n, 3.0),
        "current": current + _ar_noise(rng, n, 0.08),
        "voltage": 230 + _ar_noise(rng, n, 0.8, phi=0.9) + np.cumsum(rng.normal(0, 0.02, n)),
        "pressure": pressure + _ar_noise(rng, n, 0.03) * pressure_noise,
        "flow": flow + _ar_noise(rng, n, 1.0) * np.sqrt(pressure_noise),
        "valve_position": 100 * valve + _ar_noise(rng, n, 0.3),
        "vibration_rms": vibration * np.exp(_ar_noise(rng, n, 0.05)),
        "vibration2_rms": 0.8 * vibration * np.exp(_ar_noise(rng, n, 0.06)),
        "temperature": temperature + _ar_noise(rng, n, 0.1),
        "thermocouple": _lag(temperature, tau=20) + 1.5 + _ar_noise(rng, n, 0.25),
    }
    extras = [c for c in ALL_CHANNELS if c not in CORE_CHANNELS]
    chosen = set(CORE_CHANNELS) | set(rng.choice(extras, size=int(rng.integers(0, len(extras) + 1)), replace=False))
    channels = tuple(c for c in ALL_CHANNELS if c in chosen)
    values = np.column_stack([signals[c] for c in channels])

    # Single-point spikes are not faults: a detector must ride over them.
    spikes = rng.random(values.shape) < 0.002
    values = values + spikes * rng.choice([-1, 1], values.shape) * rng.uniform(4, 8, values.shape) * values.std(axis=0)

    for kind, start, end in episodes:
        col = int(rng.integers(0, len(channels)))
        if kind == "stuck_sensor":
            values[start:end, col] = values[start, col]
        elif kind == "dropped_sensor":
            values[start:end, col] = np.nan if rng.random() < 0.5 else 0.0

    anomaly = np.zeros(n, dtype=np.int8)
    for _, start, end in episodes:
        anomaly[start:end] = 1
    return Recording(channels, values, anomaly, tuple(episodes))


def write_csv(recording: Recording, path: Path, delimiter: str = ";",
              start: datetime = datetime(2024, 3, 1, 8, 0, 0)) -> None:
    """Write `datetime;<channels>;anomaly` (the layout of the hidden benchmark files)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["datetime", *recording.channels, "anomaly"])
        for i, row in enumerate(recording.values):
            stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow([stamp, *("" if np.isnan(v) else f"{v:.5g}" for v in row), int(recording.anomaly[i])])


def write_dataset(out: Path, recordings: int, seed: int = 0, train_rows: int = 400) -> list[Path]:
    """`recordings` CSV files under `out`; delimiters alternate so readers must detect them."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(recordings):
        path = out / f"recording-{i:03d}.csv"
        write_csv(simulate(seed * 100_003 + i, train_rows), path, delimiter=";" if i % 2 == 0 else ",")
        paths.append(path)
    return paths
