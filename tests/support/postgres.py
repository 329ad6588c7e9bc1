"""Run a real PostgreSQL server (Debian's `postgresql` package) on 127.0.0.1, for tests and benchmarks.

`initdb` into a fresh directory, then `postgres -D <dir> -k <dir> -p <free port>`, password
authentication (scram-sha-256) over TCP for the user `plantwatch`, whose password is kept in a
file beside it as a Secret would be mounted. PostgreSQL refuses to run as root: when the tests
run as root, initdb and the server run as `nobody` (the child drops to it itself, so that
`kill()` signals postgres, not a wrapper such as runuser), and their directory is nobody's;
a `kill()` (SIGKILL) and `start()` again keep the data directory and port. The fixtures `server`
(one per test module) and `password` (its password file named in the environment, as the chart
mounts it) are imported by the tests that use them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from plantwatch.mqtt.broker import free_port
from plantwatch.store.postgres import PASSWORD_FILE_ENV

USER, PASSWORD, DATABASE = "plantwatch", "plantwatch-test-password", "plantwatch"


def bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin (Debian keeps the server binaries off PATH)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise RuntimeError("no /usr/lib/postgresql/<version>/bin/postgres: install Debian's postgresql package (make deps)")
    return versions[-1].parent


class Postgres:
    """One postgres process on 127.0.0.1 with a database `plantwatch`; `url` names it, `password_file` holds the password."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="plantwatch-pg-"))
        self.data = self.dir / "data"
        self.password_file = self.dir / "password"
        self.password_file.write_text(PASSWORD + "\n")
        self.port = free_port()
        self.url = f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"
        self._as: dict = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            os.chown(self.password_file, nobody.pw_uid, nobody.pw_gid)
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        self.proc: subprocess.Popen | None = None
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={self.password_file}", "-E", "UTF8", "--no-sync")  # fmt: skip

    def _run(self, *args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, cwd=self.dir, **self._as)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self) -> None:
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-k", str(self.dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "max_connections=50"]  # fmt: skip
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=self.dir, **self._as)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {(self.dir / 'postgres.log').read_text()[-2000:]}")
            try:
                psycopg.connect(host=str(self.dir), port=self.port, user=USER, dbname="postgres").close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    log = (self.dir / "postgres.log").read_text()[-2000:]
                    raise RuntimeError(f"postgres did not accept connections within 30 s: {log}") from None
                time.sleep(0.05)
        with psycopg.connect(host=str(self.dir), port=self.port, user=USER, dbname="postgres", autocommit=True) as db:
            if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                db.execute(f"CREATE DATABASE {DATABASE}")

    def fresh_database(self, name: str) -> str:
        """A new empty database on this server; its URL."""
        with psycopg.connect(host=str(self.dir), port=self.port, user=USER, dbname="postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def kill(self) -> None:
        # The postmaster's backends notice its death and exit; the port is free again once they have.
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    """One started server for the module's tests; each takes its own `fresh_database`."""
    pg = Postgres()
    pg.start()
    yield pg
    pg.close()


@pytest.fixture
def password(server: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stores and processes started read the server's password from its file, as from a mounted Secret."""
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(server.password_file))
