"""Reading recordings (the I/O edge of the detector): CSV with delimiter detection, or the embedded store.

Label columns (`anomaly`, `changepoint`, `label`) are always left out of the
channels: in a benchmark file they are constant 0 over the training rows, and a
detector that sees them would "find" every labelled fault by reading the answer.
"""

from __future__ import annotations

import csv
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

LABEL_COLUMNS = ("anomaly", "changepoint", "label")
DELIMITERS = ";,\t|"


BAD_CELLS = ("fill", "drop-column", "fail")
#: Column names taken as the time stamps when no time column is named (case-insensitive, first match).
TIME_NAMES = ("timestamp", "datetime", "time", "date")
_COMMA_NUMBER = re.compile(r"^\s*[+-]?\d*,\d+(?:[eE][+-]?\d+)?\s*$")
_POINT_NUMBER = re.compile(r"^\s*[+-]?\d*\.\d+(?:[eE][+-]?\d+)?\s*$")


@dataclass(frozen=True)
class Table:
    """A CSV file: its time stamps (or row numbers), numeric channels and any columns kept aside."""

    timestamps: list[str]
    channels: tuple[str, ...]
    values: np.ndarray  # [rows, channels] float64, NaN where empty or unparsable
    extra: dict[str, list[str]]  # columns not used as channels (labels, excluded, non-numeric)
    #: What reading decided that the user did not ask for: a column dropped and why, bad cells
    #: read as missing, the time column found by name, decimal commas. One sentence each.
    notes: tuple[str, ...] = ()


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


def _bad(cells: list[str]) -> list[int]:
    """Indices of the non-empty cells that are not numbers (`nan` is a number: a missing reading)."""
    return [i for i, c in enumerate(cells) if c.strip() and np.isnan(_number(c)) and c.strip().lower() != "nan"]


def _shown(cells: list[str], bad: list[int], first_line: int = 2) -> str:
    """`'ERR' on lines 18, 904` for up to five bad cells (file lines: the header is line 1)."""
    values = list(dict.fromkeys(cells[i].strip() for i in bad))
    lines = ", ".join(str(i + first_line) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
    return f"{', '.join(repr(v) for v in values[:3])}{', ...' if len(values) > 3 else ''} on line{'s' if len(bad) > 1 else ''} {lines}"


def _decimal_comma(path: Path, delimiter: str, columns: dict[str, list[str]]) -> bool:
    """Whether the numbers are written `1,5`: only in a file that is not comma-separated, and never mixed with `1.5`."""
    comma = next(((n, i, c) for n, cells in columns.items() for i, c in enumerate(cells) if _COMMA_NUMBER.match(c)), None)
    if comma is None:
        return False
    name, row, cell = comma
    if delimiter == ",":
        raise ValueError(
            f"{path}: cell {cell!r} (column {name!r}, line {row + 2}) looks like a decimal comma inside a comma-separated file; "
            "accepted: decimal points, or decimal commas with ';', tab or '|' between the fields"
        )
    point = next(((n, i, c) for n, cells in columns.items() for i, c in enumerate(cells) if _POINT_NUMBER.match(c)), None)
    if point is not None:
        raise ValueError(
            f"{path}: numbers with a decimal comma ({cell!r}, column {name!r}, line {row + 2}) and with a decimal point "
            f"({point[2]!r}, column {point[0]!r}, line {point[1] + 2}); accepted: one decimal mark per file"
        )
    return True


def read_table(
    path: str | Path, time_column: str | None = None, exclude: tuple[str, ...] = (), labels: tuple[str, ...] = (), bad_cells: str = "fill"
) -> Table:
    """Read a recording; channels are the numeric columns other than time, labels and `exclude`.

    `labels` names more label columns (e.g. `evaluate --label-column fault`): like
    `anomaly`, they are set aside when present, and need not be. Without `time_column`,
    the first column named like one of TIME_NAMES is the time column. A column whose
    filled cells are mostly not numbers is text and never a channel; a numeric column
    with a few bad cells (`ERR`) is, by `bad_cells`: `fill` reads them as missing (the
    features carry the previous reading forward), `drop-column` leaves the column out,
    `fail` refuses the file. Every such decision is a sentence in `Table.notes`.
    """
    if bad_cells not in BAD_CELLS:
        raise ValueError(f"bad cells {bad_cells!r}: accepted are {', '.join(BAD_CELLS)}")
    path = Path(path)
    with open(path, newline="") as f:
        header = f.readline()
        f.seek(0)
        delimiter = detect_delimiter(header)
        rows = list(csv.reader(f, delimiter=delimiter))
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header and at least one row")
    names, body = [n.strip() for n in rows[0]], rows[1:]
    notes: list[str] = []
    if time_column is None:
        time_column = next((n for n in names if n.lower() in TIME_NAMES), None)
        if time_column is not None:
            notes.append(f"time column {time_column!r} found by its name (--time-column names another)")
    elif time_column not in names:
        raise ValueError(f"{path}: no time column {time_column!r}; columns are {names}")
    unknown = [c for c in exclude if c not in names]
    if unknown:
        raise ValueError(f"{path}: cannot exclude {unknown}; columns are {names}")
    columns = {name: [r[i] if i < len(r) else "" for r in body] for i, name in enumerate(names)}
    label_names = set(LABEL_COLUMNS) | {c.lower() for c in labels}
    aside = set(exclude) | {c for c in names if c.lower() in label_names} | ({time_column} if time_column else set())
    candidates = {n: columns[n] for n in names if n not in aside}
    if _decimal_comma(path, delimiter, candidates):
        candidates = {n: [c.replace(",", ".") for c in cells] for n, cells in candidates.items()}
        notes.append(f"numbers read with a decimal comma (fields separated by {delimiter!r})")
    kept, refused = [], []
    for name, cells in candidates.items():
        filled, bad = sum(1 for c in cells if c.strip()), _bad(cells)
        if not filled:
            notes.append(f"column {name!r} left out: every cell is empty")
        elif 2 * len(bad) > filled:
            notes.append(f"column {name!r} left out: text, not numbers ({_shown(cells, bad[:3])})")
        elif not bad:
            kept.append(name)
        elif bad_cells == "fill":
            kept.append(name)
            notes.append(f"column {name!r}: {len(bad)} of {filled} cells are not numbers ({_shown(cells, bad)}), read as missing")
        elif bad_cells == "drop-column":
            why = f"{len(bad)} of {filled} cells are not numbers ({_shown(cells, bad)})"
            notes.append(f"column {name!r} left out (--bad-cells drop-column): {why}")
        else:
            refused.append(f"column {name!r}: {len(bad)} of {filled} cells are not numbers ({_shown(cells, bad)})")
    if refused:
        raise ValueError(f"{path}: {'; '.join(refused)}; --bad-cells fill reads them as missing, drop-column leaves the column out")
    channels = tuple(kept)
    if not channels:
        said = "".join(f"; {n}" for n in notes)
        raise ValueError(f"{path}: no numeric channels left (columns {names}, excluded {sorted(aside)}){said}")
    values = np.array([[_number(c) for c in candidates[n]] for n in channels], dtype=np.float64).T
    timestamps = columns[time_column] if time_column else [str(i) for i in range(len(body))]
    extra = {n: columns[n] for n in names if n not in channels}
    return Table(timestamps, channels, values, extra, tuple(notes))


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


def parse_time(text: str) -> float:
    """Epoch seconds from epoch seconds or ISO 8601 (`2024-03-01T08:00:00`, UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r}: accepted are epoch seconds or ISO 8601 such as 2024-03-01T08:00:00Z") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def pivot(readings: list[tuple[str, float, float]], exclude: tuple[str, ...] = (), step: float = 1.0) -> Table:
    """(sensor, ts, value) readings -> one row per `step` seconds, one channel per sensor (pure).

    The rows run from the first reading's step to the last's; a step with no
    reading of a sensor is NaN (the features forward-fill and count it as
    missing), several readings in one step average. Sensors are sorted by name.
    """
    if not readings:
        raise ValueError("no readings to pivot")
    channels = tuple(sorted({sensor for sensor, _, _ in readings} - set(exclude)))
    if not channels:
        raise ValueError(f"no sensors left after excluding {list(exclude)}")
    first = min(ts for _, ts, _ in readings) // step
    rows = int(max(ts for _, ts, _ in readings) // step - first) + 1
    total, count = np.zeros((rows, len(channels))), np.zeros((rows, len(channels)))
    column = {name: j for j, name in enumerate(channels)}
    for sensor, ts, value in readings:
        if sensor in column:
            i = int(ts // step - first)
            total[i, column[sensor]] += value
            count[i, column[sensor]] += 1
    with np.errstate(invalid="ignore"):
        values = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    stamps = [datetime.fromtimestamp((first + i) * step, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(rows)]
    return Table(stamps, channels, values, {})


def read_store(path: str | Path, node: str, since: float | None = None, until: float | None = None, exclude: tuple[str, ...] = ()) -> Table:
    """One node's readings in [since, until) from the embedded SQLite store, pivoted to 1 s rows (`pivot`).

    Opened read-only: training never writes to (or creates) a live plant's store.
    Stored anomaly scores (type `anomaly_score`) are not channels: a detector
    trained on a detector's output would learn its own past alarms.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"store {path}: no such file")
    query = "SELECT sensor, ts, value FROM readings WHERE node = ? AND type != 'anomaly_score'"
    params: list = [node]
    if since is not None:
        query, params = query + " AND ts >= ?", params + [since]
    if until is not None:
        query, params = query + " AND ts < ?", params + [until]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        readings = db.execute(query + " ORDER BY ts", params).fetchall()
        if not readings:
            nodes = [n for (n,) in db.execute("SELECT DISTINCT node FROM readings ORDER BY node")]
            raise ValueError(f"store {path}: no readings of node {node!r} in the time range; nodes stored: {nodes}")
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"store {path}: cannot read the readings table: {exc}") from None
    finally:
        db.close()
    return pivot(readings, exclude)
