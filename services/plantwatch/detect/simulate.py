"""Labelled recordings of a pump skid / test rig, to develop and judge detectors honestly.

Why a physical toy rather than Gaussian blobs: the hard parts of real plant data
are correlations (a valve closing raises pressure *and* lowers flow, a speed
change moves both the same way), slow drift (a motor warming up for the whole
recording), operating-point changes that are normal, single-point spikes that
are not faults, sensors that differ (noise, quantisation, lag), and faults that
start subtly or show only as a broken relationship between channels. The
generator is pure and seeded: the same seed and variant give the same
recording, byte for byte.

Each recording is ~1 Hz, 5-10 channels, its first `train_rows` rows fault-free,
then sustained fault episodes labelled 1 in the `anomaly` column. `VARIANTS`
are differently shaped plants: detectors are tuned on some and judged on one
they were never tuned on (see README).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

#: Every channel the skid can expose; a recording shows 5-10 of them.
ALL_CHANNELS = (
    "motor_speed",
    "current",
    "voltage",
    "pressure",
    "flow",
    "valve_position",
    "vibration_rms",
    "vibration2_rms",
    "temperature",
    "thermocouple",
)
#: Always present, so every fault type is observable in every recording.
CORE_CHANNELS = ("current", "pressure", "flow", "vibration_rms", "temperature")
#: Level faults (a channel leaves its range), noise faults, sensor faults, and relationship
#: faults (`leak`, `sensor_drift`: every channel stays in its normal range, but the
#: channels no longer agree with each other).
FAULTS = (
    "bearing_wear",
    "imbalance",
    "overheating",
    "valve_closure",
    "cavitation",
    "leak",
    "sensor_drift",
    "stuck_sensor",
    "dropped_sensor",
)


@dataclass(frozen=True)
class Variant:
    """How one kind of plant differs: its sensors, its operation and its faults."""

    name: str
    two_points: float  # probability that training sees two operating points
    noise: tuple[float, float]  # per-channel noise multiplier range (log-uniform)
    quantise: float  # probability that a channel is quantised to steps about its noise size
    lag: tuple[float, float]  # first-order lag (s) of the slow sensors (temperature, thermocouple, flow)
    drift: float  # random-walk drift of ambient and supply voltage, in their noise units per sqrt(s)
    spikes: float  # share of readings that are single-point spikes (not faults)
    gradual: float  # probability that a fault comes on gradually (a ramp) rather than suddenly
    severity: tuple[float, float]  # fault size multiplier range
    episode: tuple[int, int]  # fault episode length range (rows)
    wander: float  # slow common load fluctuation (moves correlated channels together)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        # The first simulator's plant: big set-point changes, clean sensors.
        Variant(
            "skid",
            two_points=0.5,
            noise=(0.7, 1.5),
            quantise=0.0,
            lag=(1.0, 3.0),
            drift=1.0,
            spikes=0.002,
            gradual=0.3,
            severity=(0.8, 1.3),
            episode=(80, 350),
            wander=0.0,
        ),
        # A test rig: one operating point, coarse and laggy sensors, load wander, more gradual onsets.
        Variant(
            "rig",
            two_points=0.15,
            noise=(0.5, 3.0),
            quantise=0.4,
            lag=(2.0, 10.0),
            drift=2.0,
            spikes=0.004,
            gradual=0.5,
            severity=(0.7, 1.2),
            episode=(40, 300),
            wander=0.01,
        ),
        # Held out from tuning: noisier, drifting, smaller faults, shorter episodes.
        Variant(
            "harsh",
            two_points=0.35,
            noise=(0.8, 4.0),
            quantise=0.3,
            lag=(1.0, 15.0),
            drift=4.0,
            spikes=0.006,
            gradual=0.6,
            severity=(0.6, 1.0),
            episode=(30, 250),
            wander=0.02,
        ),
    )
}
DEFAULT_VARIANT = "skid"


@dataclass(frozen=True)
class Recording:
    """One labelled recording: values [rows, channels] (NaN where a sensor dropped out)."""

    channels: tuple[str, ...]
    values: np.ndarray
    anomaly: np.ndarray
    faults: tuple[tuple[str, int, int], ...]  # (kind, first row, end row exclusive)
    cadence_s: float = 1.0  # seconds between rows


def _operating_point(rng: np.random.Generator, n: int, train_rows: int, variant: Variant) -> tuple[np.ndarray, np.ndarray]:
    """Speed and valve set-points: piecewise constant with first-order ramps, plus slow load wander.

    Some recordings see two operating points during training and revisit points
    inside that range later (normal, must not alarm); the others run at one
    point with only small set-point nudges afterwards.
    """
    base = rng.uniform(0.65, 0.95)
    if rng.random() < variant.two_points:
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
    speed = _lag(target, tau=rng.uniform(5, 20)) * (1 + _ar_noise(rng, n, variant.wander, phi=0.995))
    valve = _lag(np.full(n, rng.uniform(0.85, 1.0)), tau=1.0)
    return speed, valve


def _lag(x: np.ndarray, tau: float, start: float | None = None) -> np.ndarray:
    """First-order lag (dy/dt = (x - y)/tau at 1 Hz): how real actuators, heat and slow sensors respond."""
    y = np.empty_like(x, dtype=np.float64)
    state = x[0] if start is None else start
    alpha = 1.0 - np.exp(-1.0 / tau)
    for i, value in enumerate(x):
        state += alpha * (value - state)
        y[i] = state
    return y


def _ar_noise(rng: np.random.Generator, n: int, sigma: float, phi: float = 0.6) -> np.ndarray:
    """Coloured (AR(1)) noise with marginal std `sigma`: real sensor noise is not white."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - phi**2), n)
    out = np.empty(n)
    state = rng.normal(0.0, sigma)
    for i in range(n):
        state = phi * state + e[i]
        out[i] = state
    return out


def _episodes(rng: np.random.Generator, n: int, train_rows: int, variant: Variant) -> list[tuple[str, int, int]]:
    """1-4 non-overlapping fault episodes after the training rows."""
    episodes: list[tuple[str, int, int]] = []
    cursor = train_rows + int(rng.integers(20, 150))
    low, high = variant.episode
    for _ in range(int(rng.integers(1, 5))):
        length = int(rng.integers(low, high + 1))
        if cursor + length > n - 20:
            break
        episodes.append((str(rng.choice(FAULTS)), cursor, cursor + length))
        cursor += length + int(rng.integers(40, 250))
    return episodes


def _onset(rng: np.random.Generator, n: int, start: int, end: int, variant: Variant, gradual: bool | None = None) -> np.ndarray:
    """0 outside the episode; inside, a sudden (lagged step) or gradual (ramp) rise to 1; repaired at `end`."""
    shape = np.zeros(n)
    if gradual if gradual is not None else rng.random() < variant.gradual:
        ramp_end = start + max(2, int((end - start) * rng.uniform(0.3, 1.0)))
        shape[start:ramp_end] = np.linspace(0.0, 1.0, ramp_end - start)
        shape[ramp_end:end] = 1.0
    else:
        step = np.zeros(end - start + 1)
        step[:-1] = 1.0
        shape[start : end + 1] = _lag(step, tau=rng.uniform(1.0, 5.0), start=0.0)
    return shape


def simulate(seed: int, train_rows: int = 400, variant: str = DEFAULT_VARIANT) -> Recording:
    """One recording (pure: same seed and variant, same recording)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown simulator variant {variant!r}; accepted: {', '.join(VARIANTS)} (and {SLOW!r}: simulate_slow)")
    v = VARIANTS[variant]
    rng = np.random.default_rng(seed)
    n = int(rng.integers(train_rows + 600, train_rows + 900))
    speed, valve = _operating_point(rng, n, train_rows, v)
    episodes = _episodes(rng, n, train_rows, v)

    vib_factor, vib2_factor = np.ones(n), np.ones(n)
    heat = np.zeros(n)
    current_factor = np.ones(n)
    pressure_noise = np.ones(n)
    flow_loss = np.zeros(n)
    pressure_loss = np.zeros(n)
    drifting: list[tuple[np.ndarray, float]] = []  # (shape, size in noise units) of sensor_drift faults
    for kind, start, end in episodes:
        size = rng.uniform(*v.severity)
        if kind == "bearing_wear":
            ramp = _onset(rng, n, start, end, v, gradual=True)
            vib_factor *= 1 + size * rng.uniform(0.3, 1.0) * ramp
            vib2_factor *= 1 + size * rng.uniform(0.1, 0.6) * ramp
            heat += size * rng.uniform(1.0, 4.0) * ramp
        elif kind == "imbalance":
            shape = _onset(rng, n, start, end, v)
            vib_factor *= 1 + size * rng.uniform(0.25, 0.7) * shape
            vib2_factor *= 1 + size * rng.uniform(0.25, 0.7) * shape
        elif kind == "overheating":
            shape = _onset(rng, n, start, end, v)
            heat += size * rng.uniform(3.0, 8.0) * shape
            current_factor *= 1 + size * rng.uniform(0.02, 0.06) * shape
        elif kind == "valve_closure":
            valve = valve * (1 - size * rng.uniform(0.1, 0.3) * _onset(rng, n, start, end, v))
        elif kind == "cavitation":
            shape = _onset(rng, n, start, end, v)
            pressure_noise *= 1 + size * rng.uniform(2.0, 5.0) * shape
            flow_loss += size * rng.uniform(0.03, 0.08) * shape
            vib_factor *= 1 + size * rng.uniform(0.15, 0.4) * shape
        elif kind == "leak":
            # Fluid lost before the flow meter: less flow measured and less pressure at the same speed
            # and current; a speed change would move current too.
            shape = _onset(rng, n, start, end, v)
            flow_loss += size * rng.uniform(0.04, 0.12) * shape
            pressure_loss += size * rng.uniform(0.04, 0.12) * shape
        elif kind == "sensor_drift":
            drifting.append((_onset(rng, n, start, end, v, gradual=True), size * rng.uniform(6.0, 15.0)))

    ambient = 22 + rng.uniform(-3, 3) + np.cumsum(rng.normal(0, 0.01 * v.drift, n))
    flow = 120 * speed * np.sqrt(valve) * (1 - flow_loss)
    pressure = (1.5 + 4.0 * speed**2 / valve**1.5) * (1 - pressure_loss)
    current = (3.0 + 9.0 * speed**3 * (0.7 + 0.3 * pressure / 5.5)) * current_factor
    # The motor warms up for the whole recording (tau ~ 10-25 min); fault heat arrives faster (tau ~ 1 min).
    steady = ambient + 1.6 * current
    temperature = _lag(steady, tau=rng.uniform(600, 1500), start=steady[0] - rng.uniform(2, 8)) + _lag(
        heat, tau=rng.uniform(30, 90), start=0.0
    )
    vibration = 0.4 + 1.3 * speed**2
    slow = lambda x: _lag(x, tau=rng.uniform(*v.lag))  # noqa: E731 - a sensor's own time constant

    # (signal, noise std at multiplier 1, noise colour)
    clean = {
        "motor_speed": (1480 * speed, 3.0, 0.6),
        "current": (current, 0.08, 0.6),
        "voltage": (230 + np.cumsum(rng.normal(0, 0.02 * v.drift, n)) - 0.3 * (current - current[0]), 0.8, 0.9),
        "pressure": (pressure, 0.03, 0.6),
        "flow": (slow(flow), 1.0, 0.6),
        "valve_position": (100 * valve, 0.3, 0.6),
        "vibration_rms": (vibration * vib_factor, 0.05, 0.6),
        "vibration2_rms": (0.8 * vibration * vib2_factor, 0.06, 0.6),
        "temperature": (slow(temperature), 0.1, 0.8),
        "thermocouple": (_lag(temperature, tau=20) + 1.5, 0.25, 0.6),
    }
    extras = [c for c in ALL_CHANNELS if c not in CORE_CHANNELS]
    chosen = set(CORE_CHANNELS) | set(rng.choice(extras, size=int(rng.integers(0, len(extras) + 1)), replace=False))
    channels = tuple(c for c in ALL_CHANNELS if c in chosen)
    columns = []
    for name in channels:
        signal, sigma, phi = clean[name]
        sigma *= float(np.exp(rng.uniform(*np.log(v.noise))))
        noise = _ar_noise(rng, n, sigma, phi)
        if name.startswith("vibration"):
            reading = signal * np.exp(noise)  # RMS noise is multiplicative
        elif name == "pressure":
            reading = signal + noise * pressure_noise
        elif name == "flow":
            reading = signal + noise * np.sqrt(pressure_noise)
        else:
            reading = signal + noise
        if rng.random() < v.quantise:
            step = sigma * rng.uniform(0.5, 2.5)
            reading = np.round(reading / step) * step
        columns.append(reading)
    values = np.column_stack(columns)
    noise_scale = np.array([np.std(np.diff(values[:train_rows, j])) + 1e-9 for j in range(len(channels))])

    for shape, size in drifting:
        col = int(rng.integers(0, len(channels)))
        values[:, col] += rng.choice([-1, 1]) * size * noise_scale[col] * shape

    # Single-point spikes are not faults: a detector must ride over them.
    spikes = rng.random(values.shape) < v.spikes
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


#: The slow kind: one temperature every 5 minutes for months (a cold store, a furnace shell, a room).
SLOW = "slow"
SLOW_CADENCE_S = 300.0
SLOW_ROWS_PER_DAY = int(86_400 / SLOW_CADENCE_S)
#: Failures of the slow kind: the reading falls away, bursts of spikes, a lasting level shift,
#: a daily cycle that changed (flattened, grown, or shifted in time). Each is a period of hours to days.
SLOW_FAILURES = ("drop", "spikes", "level_shift", "changed_cycle")
#: Data-set seeds of the slow kind (`write_dataset(..., variant="slow")`): tuned on, and never tuned on.
SLOW_TUNING_SEEDS = (0, 1)
SLOW_HELD_OUT_SEEDS = (10, 11)


def simulate_slow(seed: int, train_days: int = 21, days: int = 75) -> Recording:
    """One slow single-channel recording (pure): 5-minute temperatures over `days` days.

    Normal behaviour: a daily cycle (amplitude and peak hour per recording, a
    second harmonic), load steps every few hours to days that move the level by
    up to ~1.5 K (lagged), slow ambient drift, coloured noise and rare single
    spikes. The first `train_days` days are failure-free; after them 3-6 failure
    periods (2-40 hours) from SLOW_FAILURES, labelled from start to repair.
    """
    rng = np.random.default_rng(seed)
    per_day = SLOW_ROWS_PER_DAY
    n, train_rows = days * per_day, train_days * per_day
    hours = np.arange(n) * SLOW_CADENCE_S / 3600.0
    amplitude, peak = rng.uniform(1.5, 4.0), rng.uniform(10, 18)
    cycle_of = lambda phase_h: np.cos(2 * np.pi * (hours - peak - phase_h) / 24) + 0.3 * np.cos(4 * np.pi * (hours - peak - phase_h) / 24)  # noqa: E731
    load = np.empty(n)
    cursor, level = 0, 0.0
    while cursor < n:
        length = int(rng.integers(per_day // 4, 3 * per_day))
        load[cursor : cursor + length] = level
        level = float(np.clip(level + rng.normal(0, 0.6), -1.5, 1.5))
        cursor += length
    base = 20 + rng.uniform(-10, 30) + _lag(load, tau=6.0) + np.cumsum(rng.normal(0, 0.01, n))

    episodes: list[tuple[str, int, int]] = []
    cursor = train_rows + int(rng.integers(per_day // 2, 4 * per_day))
    for _ in range(int(rng.integers(3, 7))):
        length = int(rng.integers(2 * per_day // 24, 40 * per_day // 24))
        if cursor + length > n - per_day:
            break
        episodes.append((str(rng.choice(SLOW_FAILURES)), cursor, cursor + length))
        cursor += length + int(rng.integers(2 * per_day, 10 * per_day))

    cycle_gain, cycle_phase = np.ones(n), np.zeros(n)
    shift = np.zeros(n)
    bursts = np.zeros(n, dtype=bool)
    for kind, start, end in episodes:
        if kind == "drop":
            shift[start:end] -= rng.uniform(1.5, 4.0) * amplitude
        elif kind == "level_shift":
            shift[start:end] += rng.choice([-1, 1]) * rng.uniform(0.8, 1.5) * amplitude
        elif kind == "spikes":
            bursts[start:end] = rng.random(end - start) < rng.uniform(0.1, 0.3)
        else:  # changed_cycle: flattened, doubled, or running hours late
            form = rng.integers(0, 3)
            if form == 0:
                cycle_gain[start:end] = rng.uniform(0.0, 0.3)
            elif form == 1:
                cycle_gain[start:end] = rng.uniform(1.8, 2.5)
            else:
                cycle_phase[start:end] = rng.choice([-1, 1]) * rng.uniform(5, 9)
    cycle = amplitude * cycle_gain * cycle_of(cycle_phase)
    reading = base + cycle + _lag(shift, tau=3.0, start=0.0) + _ar_noise(rng, n, rng.uniform(0.1, 0.3), phi=0.7)
    noise_size = np.std(np.diff(reading[:train_rows]))
    single = rng.random(n) < 0.001  # normal: a detector must ride over them
    spiky = single | bursts
    reading = reading + spiky * rng.choice([-1, 1], n) * rng.uniform(8, 20, n) * noise_size
    anomaly = np.zeros(n, dtype=np.int8)
    for _, start, end in episodes:
        anomaly[start:end] = 1
    return Recording(("temperature",), reading[:, None], anomaly, tuple(episodes), SLOW_CADENCE_S)


def write_csv(recording: Recording, path: Path, delimiter: str = ";", start: datetime = datetime(2024, 3, 1, 8, 0, 0)) -> None:
    """Write `datetime;<channels>;anomaly` (the layout of the hidden benchmark files), one row per `cadence_s`."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["datetime", *recording.channels, "anomaly"])
        for i, row in enumerate(recording.values):
            stamp = (start + timedelta(seconds=i * recording.cadence_s)).strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow([stamp, *("" if np.isnan(v) else f"{v:.6g}" for v in row), int(recording.anomaly[i])])


def recording_seed(seed: int, index: int) -> int:
    """The seed of recording `index` of data set `seed` (data sets never share a recording)."""
    return seed * 100_003 + index


def write_dataset(out: Path, recordings: int, seed: int = 0, train_rows: int = 400, variant: str = DEFAULT_VARIANT) -> list[Path]:
    """`recordings` CSV files under `out`; delimiters alternate so readers must detect them.

    `variant` "slow" writes the slow single-channel kind (`simulate_slow`; its
    training period is 21 days, whatever `train_rows` says).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(recordings):
        path = out / f"recording-{i:03d}.csv"
        recording = simulate_slow(recording_seed(seed, i)) if variant == SLOW else simulate(recording_seed(seed, i), train_rows, variant)
        write_csv(recording, path, delimiter=";" if i % 2 == 0 else ",")
        paths.append(path)
    return paths
