"""Run the real Telegraf that tools/build-go-tools.sh builds (only the plugins named in its tags table).

`Telegraf(config, workdir)` writes the TOML, starts `telegraf --debug`, and follows its log: at debug
level each output logs `Wrote batch of N metrics`, so `written(output)` says how many metrics an
output has delivered without querying the sink (which would compete with it for the CPU).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from tests.support.process import terminate

TELEGRAF = Path(__file__).resolve().parents[2] / ".cache" / "bin" / "telegraf"
_WROTE = re.compile(r"\[(?P<output>outputs\.[\w.]+)\] Wrote batch of (?P<n>\d+) metrics")


class TelegrafError(RuntimeError):
    pass


class Telegraf:
    def __init__(self, config: str, workdir: Path):
        if not TELEGRAF.exists():
            raise TelegrafError(f"{TELEGRAF} is missing: run tools/build-go-tools.sh (make tools)")
        self.config = workdir / "telegraf.conf"
        self.config.write_text(config)
        self.log: list[str] = []
        self._written: Counter[str] = Counter()
        self._changed = threading.Condition()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(TELEGRAF), "--config", str(self.config), "--debug"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._follow, name="telegraf-log", daemon=True).start()

    def _follow(self) -> None:
        for line in self.proc.stderr:
            m = _WROTE.search(line)
            with self._changed:
                if m:
                    self._written[m["output"]] += int(m["n"])
                else:
                    self.log.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def written(self, output: str) -> int:
        with self._changed:
            return self._written[output]

    def wait_written(self, output: str, count: int, timeout: float) -> None:
        """Until `output` has delivered `count` metrics; raises with Telegraf's log if it exits or runs out of time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._written[output] < count:
                left = deadline - time.monotonic()
                if self.proc.poll() is not None or left <= 0:
                    why = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else f"ran {timeout:g}s"
                    tail = "\n".join(self.log[-20:])
                    raise TelegrafError(f"telegraf {why} having written {self._written[output]} of {count} metrics to {output}:\n{tail}")
                self._changed.wait(min(left, 0.5))

    def stop(self) -> None:
        terminate(self.proc)
