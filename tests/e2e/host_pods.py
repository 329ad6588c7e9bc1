"""A Deployment's pods run as host processes, for the control plane whose kubelets (kwok) run no container.

The pods are the control plane's: the Deployment and ReplicaSet controllers create and delete them, kwok marks
them Running. `HostPods` plays the part of their kubelet on this host: for each Running pod of the selector it
starts the pod's own container (its args and env as the API server holds them, `$(VAR)` expanded, fieldRef
values filled in) with the pod's volumes materialised from the API server (ConfigMaps, projected ConfigMaps,
Secrets with their items, emptyDirs), each at `<pod folder><mountPath>`; it SIGTERMs the process of a pod that
is gone or terminating. What a pod reaches by cluster DNS names is given as host addresses (`hosts`), its HTTP
port becomes a free loopback port, and it talks to the API server with its ServiceAccount's token.

A new pod's process is started and must answer its readiness probe before any process of a removed pod is
stopped in the same round: kwok reports a pod Ready at once, so this is the order a RollingUpdate with
`maxUnavailable: 0` keeps where the kubelet really probes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from plantwatch.mqtt.broker import free_port

#: The image's ENTRYPOINT (Dockerfile): a container without `command` runs `plantwatch <args>`.
ENTRYPOINT = [sys.executable, "-m", "plantwatch.cli"]


def service_account_kubeconfig(cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig holding nothing but a token of ServiceAccount `account`: what a pod of that account presents."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    path.write_text(json.dumps(config))
    return path


def _get(cluster, kind: str, name: str, namespace: str) -> dict | None:
    got = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else None


def _expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion in args and env values (`$$` escapes; an unknown name stays as written)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


@dataclass
class HostPod:
    """One pod's container running here."""

    name: str
    template_hash: str
    port: int
    proc: subprocess.Popen
    log: Path
    #: The exit status once stopped; -9 for a process killed with SIGKILL.
    returncode: int | None = None

    def kill(self) -> None:
        """The pod lost with its node: SIGKILL, no shutdown of any kind."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.returncode = self.proc.wait()

    def stop(self, grace_s: float = 30.0) -> int:
        """What the kubelet does to a deleted pod: SIGTERM, SIGKILL after the grace period."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.returncode = self.proc.wait()
        return self.returncode


@dataclass
class HostPods:
    """Runs the Running pods of `selector` in `namespace` as host processes, polling every `interval_s`."""

    cluster: object
    namespace: str
    selector: str
    folder: Path
    #: In-cluster `host:port` (or URL) → what answers here, replaced in every arg and env value.
    hosts: dict[str, str]
    #: Flags whose default is a path inside the container, made explicit so that they are mapped too
    #: (the gateway's `--secrets-dir`, where the kubelet mounts Secrets).
    implicit_args: list[str] = field(default_factory=list)
    interval_s: float = 0.5
    running: dict[str, HostPod] = field(default_factory=dict)
    stopped: list[HostPod] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HostPods:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop following and stop every process still running."""
        self._stop.set()
        self._thread.join(60)
        with self._lock:
            for pod in list(self.running.values()):
                pod.stop()
                self.stopped.append(pod)
            self.running.clear()

    def kill(self, name: str) -> HostPod:
        """SIGKILL the process of pod `name` (it stays `running` until the pod is gone from the API server)."""
        with self._lock:
            pod = self.running[name]
            pod.kill()
            return pod

    def snapshot(self) -> dict[str, str]:
        """Pod name → its template hash, of the processes running now."""
        with self._lock:
            return {name: p.template_hash for name, p in self.running.items() if p.returncode is None}

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self._follow()
        except BaseException as exc:  # reported by the test through `error`
            self.error = exc

    def _follow(self) -> None:
        got = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-l", self.selector, "-o", "json")
        pods = json.loads(got.stdout)["items"]
        alive = {
            p["metadata"]["name"]: p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        }
        for name, pod in alive.items():
            if name not in self.running and not any(s.name == name for s in self.stopped):
                started = self._start(pod)
                with self._lock:
                    self.running[name] = started
        for name in [n for n in self.running if n not in alive]:
            pod = self.running[name]
            if pod.returncode is None and (code := pod.stop()) != 0:
                raise AssertionError(f"pod {name}'s process exited with {code} on SIGTERM: {pod.log.read_text()[-3000:]}")
            with self._lock:  # moved once stopped, so that `running` and `stopped` never miss it in between
                self.stopped.append(self.running.pop(name))

    def _start(self, pod: dict) -> HostPod:
        name, spec = pod["metadata"]["name"], pod["spec"]
        [container] = spec["containers"]
        root = self.folder / name
        root.mkdir(parents=True, exist_ok=True)
        self._materialise(spec.get("volumes", []), container.get("volumeMounts", []), root)
        env: dict[str, str] = {}
        for e in container.get("env", []):
            env[e["name"]] = self._env_value(e, pod, env)
        port = free_port()
        args = [_expand(a, env) for a in [*container.get("args", []), *self.implicit_args]]
        http = next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == "http")
        args = [str(port) if i and args[i - 1] == "--http-port" and a == str(http) else a for i, a in enumerate(args)]
        args, env = [self._here(a, root) for a in args], {k: self._here(v, root) for k, v in env.items()}
        kubeconfig = service_account_kubeconfig(self.cluster, self.namespace, spec["serviceAccountName"], root / "kubeconfig")
        base = {k: v for k, v in os.environ.items() if not k.startswith("PLANTWATCH_")}
        log = root.with_suffix(".log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*(container.get("command") or ENTRYPOINT), *args],
                env={**base, **env, "KUBECONFIG": str(kubeconfig)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started = HostPod(name, pod["metadata"]["labels"].get("pod-template-hash", ""), port, proc, log)
        probe = container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}{probe}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"pod {name}'s process never answered {probe} (exit {proc.poll()}): {log.read_text()[-3000:]}")
            time.sleep(0.1)
        return started

    def _materialise(self, volumes: list[dict], mounts: list[dict], root: Path) -> None:
        """Each mounted volume's files at `root`/<mountPath>."""
        by_name = {v["name"]: v for v in volumes}
        for mount in mounts:
            folder = root / mount["mountPath"].lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            volume = by_name[mount["name"]]
            sources = volume["projected"]["sources"] if "projected" in volume else [volume]
            for source in sources:
                for kind, ref, name_key, data in (("configmap", "configMap", "name", "data"), ("secret", "secret", "secretName", "data")):
                    if ref in source:
                        self._write(kind, source[ref], source[ref][name_key], data, folder, decode=kind == "secret")

    def _write(self, kind: str, source: dict, name: str, data: str, folder: Path, decode: bool) -> None:
        obj = _get(self.cluster, kind, name, self.namespace)
        if obj is None:
            if source.get("optional"):
                return
            raise AssertionError(f"{kind} {self.namespace}/{name} is mounted by the pod and does not exist")
        values = obj.get(data) or {}
        for item in source.get("items") or [{"key": k, "path": k} for k in values]:
            if item["key"] in values:
                value = values[item["key"]]
                (folder / item["path"]).write_bytes(base64.b64decode(value) if decode else value.encode())

    def _env_value(self, e: dict, pod: dict, env: dict[str, str]) -> str:
        if "value" in e:
            return _expand(e["value"], env)
        source = e["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.namespace": pod["metadata"]["namespace"], "metadata.name": pod["metadata"]["name"]}
            return fields[path]
        ref = source["secretKeyRef"]
        secret = _get(self.cluster, "secret", ref["name"], self.namespace)
        return base64.b64decode(secret["data"][ref["key"]]).decode()

    def _here(self, value: str, root: Path) -> str:
        """`value` as this host sees it: a container path the pod's volumes provide (alone or after `=`) under
        `root`, and each in-cluster address replaced."""
        flag, eq, path = value.rpartition("=") if value.startswith("--") else ("", "", value)
        if path.startswith("/") and (root / path.lstrip("/")).exists():
            value = flag + eq + str(root / path.lstrip("/"))
        for there, here in self.hosts.items():
            value = value.replace(there, here)
        return value


def _answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except (urllib.error.URLError, OSError):
        return False
