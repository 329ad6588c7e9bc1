"""Where `plantwatch up` keeps a plant's store by default, and where `plantwatch query` looks for it.

`${XDG_STATE_HOME:-~/.local/state}/plantwatch/<plant>.db`, `<plant>` the name of the first
`-f` path (its folder's name, or a file's name without `.yaml`): the XDG base-directory place
for state that outlives a run but is no document of the user's, one file per plant, so that a
second plant run from the same account neither mixes its readings into the first's nor resumes
the first's rule state. `plantwatch query` reads that plant's file with `-f`, else the one
written last (right after `up`, the one it filled).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

STATE_ENV = "XDG_STATE_HOME"


def state_dir() -> Path:
    """$XDG_STATE_HOME/plantwatch, or ~/.local/state/plantwatch (an unset or relative value is ignored, as the spec says)."""
    base = os.environ.get(STATE_ENV, "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state") / "plantwatch"


def plant_name(path: str) -> str:
    """`examples/plant/` → `plant`, `line-1.yaml` → `line-1`: the default store's file name, in safe characters."""
    p = Path(path).resolve()
    name = p.name if p.is_dir() or p.suffix not in (".yaml", ".yml") else p.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "plant"


def default_db(paths: list[str]) -> str:
    """The store `up -f paths` fills when no --db is given."""
    return str(state_dir() / f"{plant_name(paths[0])}.db")


def latest_db() -> str | None:
    """The default store written last (its WAL counts: SQLite writes the main file only at checkpoints); None when none is."""
    stores = list(state_dir().glob("*.db"))

    def written(db: Path) -> float:
        return max(f.stat().st_mtime for f in (db, db.with_name(db.name + "-wal")) if f.exists())

    return str(max(stores, key=written)) if stores else None
