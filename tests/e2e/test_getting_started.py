"""docs/getting-started.md, run step by step: every command of the guide, in order, so it cannot rot.

The guide marks each step with an HTML comment, invisible when rendered, that says how to run
the shell block after it and what must be seen:

    <!-- guide -->                                   run it; it must exit 0
    <!-- guide expect="REGEX" -->                    ... and print something matching REGEX
    <!-- guide fails expect="REGEX" -->              it must fail, saying REGEX
    <!-- guide then=NAME shows="REGEX" -->           afterwards, background NAME shows REGEX (in new output)
    <!-- guide background=NAME ready="REGEX" -->     start it as a terminal of its own; wait for REGEX
    <!-- guide interrupt=NAME [shows="REGEX"] -->    Ctrl-C that terminal (no block); it stops, showing REGEX

Blocks run in bash, in a scratch folder that links to everything at the repository's root (so
`my-plant/` is not written into the checkout), each starting from the environment the previous
one left (`source .venv/bin/activate`, `export KUBECONFIG=...` carry on as in a terminal). The
one change made to the commands: the broker's port 1883 and `up`'s HTTP port become free ones,
because other tests run beside this one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from plantwatch.mqtt.broker import free_port
from tests.e2e.cluster import ROOT

GUIDE = ROOT / "docs" / "getting-started.md"
DIRECTIVE = re.compile(r"^<!-- guide(?P<attrs>.*?)-->\s*$")
ATTR = re.compile(r'(\w+)(?:=(?:"((?:[^"\\]|\\.)*)"|(\S+)))?')


@dataclass
class Step:
    line: int
    attrs: dict[str, str]
    code: str | None


def steps(text: str) -> list[Step]:
    """The guide's steps: each directive and the ```sh block right after it (if any)."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = DIRECTIVE.match(line)
        if not m:
            continue
        attrs = {k: (quoted.replace('\\"', '"') if quoted else bare or "") for k, quoted, bare in ATTR.findall(m["attrs"])}
        code = None
        if i + 1 < len(lines) and lines[i + 1].strip() == "```sh":
            end = lines.index("```", i + 2)
            code = "\n".join(lines[i + 2 : end]) + "\n"
        out.append(Step(i + 1, attrs, code))
    return out


@dataclass
class Terminal:
    """A command running in a terminal of its own: its process group, and everything it printed."""

    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float, what: str, since: int = 0) -> None:
        """Until the output (from character `since` on) matches `pattern`."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output()[since:], re.M):
            if self.proc.poll() is not None:
                raise AssertionError(f"{what}: it exited ({self.proc.returncode}) before showing {pattern!r}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {pattern!r} not shown in {timeout:.0f}s:\n{self.output()[-3000:]}")
            time.sleep(0.2)

    def interrupt(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


@dataclass
class Session:
    cwd: Path
    env: dict[str, str]
    ports: dict[str, str]
    terminals: dict[str, Terminal] = field(default_factory=dict)

    def script(self, code: str, env_out: Path | None = None) -> str:
        for fixed, free in self.ports.items():
            code = code.replace(fixed, free)
        code = code.replace("plantwatch up -f", "plantwatch up --http-port 0 -f")
        keep = f'\nenv -0 > "{env_out}"\n' if env_out else ""
        return f"set -e -o pipefail\n{code}{keep}"

    def run(self, step: Step) -> str:
        env_out = self.cwd / ".guide-env"
        done = subprocess.run(
            ["bash", "-c", self.script(step.code, env_out)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = done.stdout + done.stderr
        if "fails" in step.attrs:
            assert done.returncode != 0, f"guide line {step.line}: expected to fail, it succeeded:\n{out}"
        else:
            assert done.returncode == 0, f"guide line {step.line}: exit {done.returncode}:\n{step.code}\n{out}"
            self.env = dict(item.split("=", 1) for item in env_out.read_text().split("\0") if "=" in item)
        return out

    def start(self, name: str, step: Step) -> Terminal:
        log = self.cwd / f".guide-{name}.log"
        proc = subprocess.Popen(
            ["bash", "-c", self.script(step.code)],
            cwd=self.cwd,
            env=self.env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches everything it started
        )
        self.terminals[name] = Terminal(proc, log)
        return self.terminals[name]


def scratch(tmp_path: Path) -> Path:
    """A folder that looks like the repository's root (links to each entry), to work in."""
    work = tmp_path / "repo"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "my-plant"):
            (work / entry.name).symlink_to(entry)
    return work


def test_the_guide_parses_into_steps_that_each_say_how_to_run():
    found = steps(GUIDE.read_text())
    assert len(found) >= 20
    blocks = GUIDE.read_text().count("```sh")
    assert sum(s.code is not None for s in found) == blocks, "every ```sh block of the guide is a step the test runs"
    for s in found:
        assert s.code is not None or "interrupt" in s.attrs, f"guide line {s.line}: a directive with no block to run"


def test_every_command_of_the_getting_started_guide(tmp_path):
    work = scratch(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "KUBECONFIG", "VIRTUAL_ENV")}
    session = Session(work, env, {"1883": str(free_port())})
    try:
        for step in steps(GUIDE.read_text()):
            a = step.attrs
            where = f"guide line {step.line}"
            if "interrupt" in a:
                terminal = session.terminals.pop(a["interrupt"])
                terminal.interrupt()
                errors = [line for line in terminal.output().splitlines() if " ERROR " in line]
                assert not errors, f"{where}: {a['interrupt']} logged errors a newcomer would take for failures: {errors[:3]}"
                if "shows" in a:
                    assert re.search(a["shows"], terminal.output(), re.M), f"{where}: after Ctrl-C:\n{terminal.output()[-3000:]}"
            elif "background" in a:
                session.start(a["background"], step).wait_for(a["ready"], 180, where)
            else:
                watched = session.terminals.get(a.get("then", ""))
                before = len(watched.output()) if watched else 0  # `then` looks only at what the block caused
                out = session.run(step)
                if "expect" in a:
                    assert re.search(a["expect"], out, re.M), f"{where}: expected {a['expect']!r} in:\n{out[-3000:]}"
                if "then" in a:
                    session.terminals[a["then"]].wait_for(a["shows"], 60, where, since=before)
        assert not session.terminals, f"the guide leaves running: {sorted(session.terminals)}"
    finally:
        for terminal in session.terminals.values():
            terminal.interrupt()
