"""Start an MQTT broker for the local runtime: mosquitto when installed, else an embedded one.

Both listen on 127.0.0.1 only. mosquitto is the real thing factories run; the
embedded broker (amqtt) keeps `plantwatch up` working with nothing but pip.
"""

from __future__ import annotations

import asyncio
import ctypes
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: LOW-HIGH: where free_port draws ports from instead of the kernel's ephemeral range. `make test` gives its
#: two pytest processes disjoint ranges below the ephemeral ports, so that a port one of them was handed
#: cannot be taken by the other (or by an outgoing connection) before its server binds it.
PORT_RANGE_ENV = "PLANTWATCH_PORT_RANGE"
_next_port: list[int] = []
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the caller's server binds it next)."""
    span = os.environ.get(PORT_RANGE_ENV)
    if not span:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    low, high = (int(x) for x in span.split("-"))
    with _port_lock:
        if not _next_port:
            _next_port.append(low + os.getpid() % (high - low + 1))
        for _ in range(high - low + 1):
            # In turn through the range: a port handed out is not handed out again before the range wraps.
            port = _next_port[0]
            _next_port[0] = low if port >= high else port + 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise OSError(f"no free port in {PORT_RANGE_ENV}={span}")


def wait_for_port(port: int, timeout: float = 10.0, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the broker exited during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Broker:
    """A running broker: where it listens and how to stop it."""

    kind: str
    port: int
    _stop: Callable[[], None] = field(repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop()


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGTERM when the thread that started it dies.

    So a `plantwatch up` killed with SIGKILL (no handler runs) leaves no broker behind.
    """
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _password_file(folder: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file, hashed by mosquitto_passwd (the passwords never on a command line)."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise FileNotFoundError("mosquitto_passwd is not installed (it comes with the mosquitto package)")
    path = folder / "passwords"
    path.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
    path.chmod(0o600)
    subprocess.run([tool, "-U", str(path)], check=True, capture_output=True)
    return path


def start_mosquitto(
    port: int | None = None,
    workdir: str | Path | None = None,
    data_dir: str | Path | None = None,
    users: dict[str, str] | None = None,
    die_with_parent: bool = False,
    sys_interval: int | None = None,
) -> Broker:
    """Run the mosquitto binary with a loopback-only config: anonymous, or with `users` {name: password} only.

    In memory by default; with `data_dir`, sessions and queued messages persist there,
    so a broker restarted on the same folder keeps what subscribers have not yet taken.
    With `die_with_parent` (Linux), the broker ends when the calling thread does, even killed.
    `sys_interval`: seconds between its `$SYS/broker/...` updates (mosquitto's default: 10).
    """
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
    port = port or free_port()
    tmp = tempfile.TemporaryDirectory(prefix="plantwatch-mosquitto-", dir=workdir)
    conf = Path(tmp.name) / "mosquitto.conf"
    persistence = (
        f"persistence true\npersistence_location {Path(data_dir).resolve()}/\nautosave_interval 1\n" if data_dir else "persistence false\n"
    )
    auth = f"allow_anonymous false\npassword_file {_password_file(Path(tmp.name), users)}\n" if users else "allow_anonymous true\n"
    conf.write_text(
        # Started by root, mosquitto would switch to the `mosquitto` user, who cannot read this
        # private folder (its password file); as anyone else it runs as them anyway.
        f"user {getpass.getuser()}\n"
        f"listener {port} 127.0.0.1\n{auth}{persistence}"
        # Room for a gateway's backlog while it restarts, and a wide window of unacknowledged
        # messages: the gateway acknowledges a whole batch once it is stored.
        "max_queued_messages 1000000\nmax_inflight_messages 10000\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n" + (f"sys_interval {sys_interval}\n" if sys_interval is not None else "")
    )
    log = open(Path(tmp.name) / "mosquitto.log", "wb")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        tmp.cleanup()

    try:
        wait_for_port(port, alive=lambda: proc.poll() is None)
    except Exception as exc:
        said = (Path(tmp.name) / "mosquitto.log").read_text(errors="replace").strip().splitlines()
        stop()
        raise RuntimeError(f"mosquitto on port {port}: {exc}" + (f": {said[-1]}" if said else "")) from exc
    return Broker("mosquitto", port, stop)


def start_embedded(port: int | None = None) -> Broker:
    """Run an amqtt broker on its own event-loop thread."""
    from amqtt.broker import Broker as AmqttBroker

    port = port or free_port()
    loop = asyncio.new_event_loop()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = AmqttBroker(config, loop=loop)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(broker.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
    thread.start()
    if not started.wait(10):
        raise TimeoutError("the embedded broker did not start within 10s")

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return Broker("embedded", port, stop)


def start_broker(kind: str = "auto", port: int | None = None, die_with_parent: bool = False) -> Broker:
    """kind: `mosquitto`, `embedded`, or `auto` (mosquitto when installed); `die_with_parent`: see start_mosquitto."""
    if kind == "mosquitto" or (kind == "auto" and (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())):
        return start_mosquitto(port, die_with_parent=die_with_parent)
    if kind in ("embedded", "auto"):
        return start_embedded(port)
    raise ValueError(f"broker kind {kind!r}; accepted: auto, mosquitto, embedded")
