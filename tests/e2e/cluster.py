"""A real Kubernetes control plane on 127.0.0.1, for the end-to-end tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built from
k8s.io/kubernetes by `make tools`) plus kwok, which plays the kubelets of the plant's
edge nodes. The fake nodes are made from the edge's own k3s configs
(edge/k3s/nodes/*.yaml) and hardware figures (edge/k3s/hardware.yaml), so the
placement the tests prove is the placement the real edge gets.

    python tests/e2e/cluster.py up     # start one and keep it until Ctrl-C (prints KUBECONFIG)
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".cache" / "bin"
EDGE = ROOT / "edge" / "k3s"
KWOK_STAGES = Path(__file__).resolve().parent / "kwok" / "stages.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edge_nodes() -> list[dict]:
    """Fake Node objects for every edge device described in edge/k3s."""
    hardware = yaml.safe_load((EDGE / "hardware.yaml").read_text())
    nodes = []
    for path in sorted((EDGE / "nodes").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        labels = dict(item.split("=", 1) for item in config.get("node-label", []))
        kind = hardware[labels["plantwatch.io/hardware"]]
        name = config["node-name"]
        labels.update({"kubernetes.io/hostname": name, "kubernetes.io/arch": kind["arch"], "kubernetes.io/os": "linux",
                       "type": "kwok"})
        taints = [dict(zip(("key", "value", "effect"), _taint(t))) for t in config.get("node-taint", [])]
        nodes.append({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {"taints": taints} if taints else {},
            "status": {"capacity": kind["capacity"], "allocatable": kind["capacity"],
                       "nodeInfo": {"architecture": kind["arch"], "operatingSystem": "linux", "kubeletVersion": "fake"}},
        })
    return nodes


def _taint(text: str) -> tuple[str, str, str]:
    key, _, rest = text.partition("=")
    value, _, effect = rest.partition(":")
    return key, value, effect


class ClusterError(RuntimeError):
    pass


@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class ExistingCluster:
    """A cluster someone else runs (kind, k3s, ...), reached through a kubeconfig."""

    kubeconfig: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        binary = BIN / "kubectl" if (BIN / "kubectl").exists() else shutil.which("kubectl")
        if binary is None:
            raise ClusterError("kubectl not found: run `make tools` or install kubectl")
        result = subprocess.run([str(binary), "--kubeconfig", self.kubeconfig, *args], input=input,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


@dataclass
class ControlPlane(ExistingCluster):
    """Starts and stops the whole control plane; all state in one temporary folder."""

    kubeconfig: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="plantwatch-k8s-")))
    components: list[Component] = field(default_factory=list)
    token: str = "plantwatch-e2e-admin-token"

    def start(self, timeout: float = 120.0) -> None:
        missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
                   if not (BIN / b).exists()]
        if missing:
            raise ClusterError(f"missing {', '.join(missing)} in {BIN}: run `make tools`")
        started = time.monotonic()
        try:
            pki = self._pki()
            etcd_port = self._etcd()
            api_port = self._apiserver(etcd_port, pki)
            self._wait(lambda: self._get(f"https://127.0.0.1:{api_port}/readyz"), "kube-apiserver /readyz", timeout)
            self._controller_manager(pki)
            self._scheduler()
            self._kwok()
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(edge_nodes()))
            self._wait(self._nodes_ready, "the fake edge nodes to be Ready", timeout)
            self._wait(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
                       "the default ServiceAccount", timeout)
        except BaseException:
            self.stop(keep_logs=True)
            raise
        self.startup_seconds = time.monotonic() - started

    # --- components ---------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> Component:
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen([str(BIN / name), *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        component = Component(name, proc, log)
        self.components.append(component)
        return component

    def _etcd(self) -> int:
        client, peer = free_port(), free_port()
        self._spawn(
            "etcd", "--name", "e2e", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a throwaway test cluster: durability costs seconds on every write
            "--log-level", "warn",
        )
        return client

    def _apiserver(self, etcd_port: int, pki: dict[str, Path]) -> int:
        port = free_port()
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}", f"--token-auth-file={tokens}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki['sa.pub']}", f"--service-account-signing-key-file={pki['sa.key']}",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
            "--allow-privileged=true", f"--cert-dir={self.workdir / 'certs'}",
        )
        self.api_port = port
        self._write_kubeconfig(port, pki["ca.crt"])
        return port

    def _controller_manager(self, pki: dict[str, Path]) -> None:
        self._spawn(
            "kube-controller-manager", f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            f"--service-account-private-key-file={pki['sa.key']}", f"--root-ca-file={pki['ca.crt']}",
            "--use-service-account-credentials=true", "--controllers=*",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
        )

    def _scheduler(self) -> None:
        self._spawn(
            "kube-scheduler", f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        )

    def _kwok(self) -> None:
        self._spawn(
            "kwok", f"--kubeconfig={self.kubeconfig}", f"--config={KWOK_STAGES}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--manage-nodes-with-label-selector=",
            "--cidr=10.244.0.1/16", "--node-ip=10.244.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        )

    # --- plumbing -----------------------------------------------------------------

    def _pki(self) -> dict[str, Path]:
        """A CA, the API server's serving certificate and the service-account key pair."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        out: dict[str, Path] = {}

        def write(name: str, data: bytes) -> None:
            out[name] = self.workdir / name
            out[name].write_bytes(data)

        def pem_key(key) -> bytes:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plantwatch-e2e-ca")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.96.0.1")]
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(ca_key, hashes.SHA256()))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write("ca.crt", ca.public_bytes(serialization.Encoding.PEM))
        write("apiserver.crt", cert.public_bytes(serialization.Encoding.PEM))
        write("apiserver.key", pem_key(key))
        write("sa.key", pem_key(sa))
        write("sa.pub", sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return out

    def _write_kubeconfig(self, port: int, ca: Path) -> None:
        path = self.workdir / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": f"https://127.0.0.1:{port}", "certificate-authority": str(ca)}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        }))
        self.kubeconfig = str(path)

    def _get(self, url: str) -> bool:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _nodes_ready(self) -> bool:
        result = self.kubectl("get", "nodes", "-o", "yaml", check=False)
        if result.returncode != 0:
            return False
        items = yaml.safe_load(result.stdout)["items"]
        ready = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))]
        return len(ready) == len(edge_nodes())

    def _wait(self, check, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [c for c in self.components if c.proc.poll() is not None]
            if dead:
                c = dead[0]
                raise ClusterError(f"{c.name} exited with {c.proc.returncode} while waiting for {what}; its log:\n{c.tail()}")
            if check():
                return
            time.sleep(0.25)
        logs = "\n\n".join(f"--- {c.name} ---\n{c.tail(15)}" for c in self.components)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")

    def stop(self, keep_logs: bool = False) -> None:
        for c in reversed(self.components):
            if c.proc.poll() is None:
                os.killpg(c.proc.pid, signal.SIGTERM)
        for c in reversed(self.components):
            try:
                c.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait()
        self.components.clear()
        if keep_logs:
            print(f"control plane logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main() -> int:
    if sys.argv[1:] != ["up"]:
        print(__doc__)
        return 2
    cp = ControlPlane()
    cp.start()
    print(f"control plane up in {cp.startup_seconds:.1f}s\nexport KUBECONFIG={cp.kubeconfig}", flush=True)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    try:
        while not stop[0]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
