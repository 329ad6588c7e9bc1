"""Reading recordings from CSV (the I/O edge of the detector): delimiter detection, column selection.

Label columns (`anomaly`, `changepoint`, `label`) are always left out of the
channels: in a benchmark file they are constant 0 over the training rows, and a
detector that sees them would "find" every labelled fault by reading the answer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABEL_COLUMNS = ("anomaly", "changepoint", "label")
DELIMITERS = ";,\t|"


@dataclass(frozen=True)
class Table:
    """A CSV file: its time stamps (or row numbers), numeric channels and any columns kept aside."""

    timestamps: list[str]
    channels: tuple[str, ...]
    values: np.ndarray  # [rows, channels] float64, NaN where empty or unparsable
    extra: dict[str, list[str]]  # columns not used as channels (labels, excluded, non-numeric)


def detect_delimiter(header: str) -> str:
    """The delimiter that splits the header line into the most fields (`;` `,` tab `|`)."""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise ValueError(f"cannot find a delimiter ({' '.join(repr(d) for d in DELIMITERS)}) in the header {header[:80]!r}")
    return best


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _is_numeric_column(cells: list[str]) -> bool:
    """Numeric when at least one cell parses and every non-empty cell does."""
    filled = [c for c in cells if c.strip()]
    return bool(filled) and all(not np.isnan(_number(c)) or c.strip().lower() == "nan" for c in filled)


def read_table(path: str | Path, time_column: str | None = None, exclude: tuple[str, ...] = ()) -> Table:
    """Read a recording; channels are the numeric columns other than time, labels and `exclude`."""
    path = Path(path)
    with open(path, newline="") as f:
        header = f.readline()
        f.seek(0)
        rows = list(csv.reader(f, delimiter=detect_delimiter(header)))
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header and at least one row")
    names, body = [n.strip() for n in rows[0]], rows[1:]
    if time_column is not None and time_column not in names:
        raise ValueError(f"{path}: no time column {time_column!r}; columns are {names}")
    unknown = [c for c in exclude if c not in names]
    if unknown:
        raise ValueError(f"{path}: cannot exclude {unknown}; columns are {names}")
    columns = {name: [r[i] if i < len(r) else "" for r in body] for i, name in enumerate(names)}
    aside = set(exclude) | {c for c in names if c.lower() in LABEL_COLUMNS} | ({time_column} if time_column else set())
    channels = tuple(n for n in names if n not in aside and _is_numeric_column(columns[n]))
    if not channels:
        raise ValueError(f"{path}: no numeric channels left (columns {names}, excluded {sorted(aside)})")
    values = np.array([[_number(c) for c in columns[n]] for n in channels], dtype=np.float64).T
    timestamps = columns[time_column] if time_column else [str(i) for i in range(len(body))]
    extra = {n: columns[n] for n in names if n not in channels}
    return Table(timestamps, channels, values, extra)


def labels_of(table: Table, label_column: str, path: str | Path = "") -> np.ndarray:
    """The 0/1 label column as int8 (anything but 0 counts as anomalous)."""
    if label_column not in table.extra:
        raise ValueError(f"{path}: no label column {label_column!r}; columns aside are {sorted(table.extra)}")
    return np.array([0 if _number(v) == 0 else 1 for v in table.extra[label_column]], dtype=np.int8)


def write_predictions(path: str | Path, timestamps: list[str], scores: np.ndarray, alarms: np.ndarray) -> None:
    """`timestamp,score,anomaly` one row per scored input row."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "score", "anomaly"])
        for stamp, score, alarm in zip(timestamps, scores, alarms):
            writer.writerow([stamp, f"{score:.6g}", int(alarm)])


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Timestamps and 0/1 alarms of a `detector score` output."""
    table = read_table(path, time_column="timestamp")
    return table.timestamps, labels_of(table, "anomaly", path)
