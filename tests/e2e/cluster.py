"""A real Kubernetes control plane on 127.0.0.1, for the end-to-end tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built from the pinned
k8s.io/kubernetes by `make tools`, plus kwok, which plays the kubelets of the plant's edge
nodes. The fake nodes are made from the edge's own description (edge/k3s/nodes.yaml), so
the placement the tests prove is the placement the real edge gets. Every port is free-picked
and all state lives in one temporary folder, so several can run side by side.

    python tests/e2e/cluster.py up     # start one, print its KUBECONFIG, keep it until Ctrl-C
    make cluster                       # the same, its kubeconfig also at .cache/cluster/kubeconfig
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import ipaddress
import json
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from plantwatch.mqtt.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".cache" / "bin"
EDGE_NODES = ROOT / "edge" / "k3s" / "nodes.yaml"
KWOK_STAGES = Path(__file__).resolve().parent / "kwok" / "stages.yaml"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class ClusterError(RuntimeError):
    """The control plane could not start; the message says which part and shows its log."""


# --- the edge, as fake nodes -------------------------------------------------------------


def edge_devices() -> list[dict]:
    """The devices of edge/k3s/nodes.yaml, the one description of the edge."""
    return yaml.safe_load(EDGE_NODES.read_text())


def k3s_labels(device: dict) -> dict[str, str]:
    """The labels k3s gives the device through its config's `node-label`."""
    return {"plantwatch.io/hardware": device["hardware"], **device.get("labels", {})}


def k3s_taints(device: dict) -> list[dict[str, str]]:
    """The taints k3s gives the device through its config's `node-taint` (key=value:Effect)."""
    taints = []
    for text in device.get("taints", []):
        key_value, effect = text.rsplit(":", 1)
        key, _, value = key_value.partition("=")
        taints.append({"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect})
    return taints


def fake_node(device: dict) -> dict:
    """The Node a device's kubelet would register: k3s's labels and taints plus the kubelet's own
    labels (hostname, arch, os), its capacity, and the annotation that hands it to kwok."""
    labels = {
        **k3s_labels(device),
        "kubernetes.io/hostname": device["name"],
        "kubernetes.io/arch": device["arch"],
        "kubernetes.io/os": "linux",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": device["name"], "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"taints": k3s_taints(device)},
        "status": {
            "capacity": device["capacity"],
            "allocatable": device["capacity"],
            "nodeInfo": {"architecture": device["arch"], "operatingSystem": "linux"},
        },
    }


def edge_nodes() -> list[dict]:
    return [fake_node(d) for d in edge_devices()]


# --- certificates and keys ---------------------------------------------------------------


#: The name the API server's aggregator presents (its proxy client certificate) to extension API
#: servers such as prometheus-adapter; they accept only this name, signed by the front-proxy CA.
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_pub: Path
    #: The aggregation layer's own CA (kept apart from the cluster CA, as kubeadm does, so that a
    #: client certificate of the cluster cannot pose as the aggregator) and its proxy client pair.
    front_proxy_ca: Path
    proxy_client_cert: Path
    proxy_client_key: Path


def _private(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_pki(directory: Path) -> Pki:
    """A throwaway CA, the API server's serving certificate (valid for the names and the
    service IP in-cluster clients use), the service-account signing key pair, and the
    aggregation layer's front-proxy CA with the API server's proxy client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key, key, sa_key, fp_key, proxy_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(5))
    ca = _certificate("plantwatch-e2e-ca", ca_key.public_key(), ca_key, issuer=None)
    names = [x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.96.0.1")]
    serving = _certificate("kube-apiserver", key.public_key(), ca_key, issuer=ca, names=names)
    front_proxy = _certificate("plantwatch-e2e-front-proxy-ca", fp_key.public_key(), fp_key, issuer=None)
    proxy_client = _certificate(FRONT_PROXY_CLIENT, proxy_key.public_key(), fp_key, issuer=front_proxy)

    files = ("ca.crt", "apiserver.crt", "apiserver.key", "sa.key", "sa.pub", "front-proxy-ca.crt")
    pki = Pki(*(directory / n for n in (*files, "front-proxy-client.crt", "front-proxy-client.key")))
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    pki.serving_key.write_bytes(_private(key))
    pki.front_proxy_ca.write_bytes(front_proxy.public_bytes(serialization.Encoding.PEM))
    pki.proxy_client_cert.write_bytes(proxy_client.public_bytes(serialization.Encoding.PEM))
    pki.proxy_client_key.write_bytes(_private(proxy_key))
    pki.service_account_key.write_bytes(_private(sa_key))
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


def _certificate(common_name: str, public_key, signing_key, issuer, names=None):
    """A one-day certificate: self-signed CA when `issuer` is None, else a leaf with `names`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(public_key)
        .issuer_name(issuer.subject if issuer else subject)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


# --- processes ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in each child before exec: if the test process dies without stopping the
    control plane (killed by a timeout, say), the kernel kills the child too, so no orphaned
    apiserver keeps eating the machine's two cores. SIGKILL, because an apiserver whose
    etcd is gone may never finish a graceful shutdown."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- clusters ----------------------------------------------------------------------------


class Cluster:
    """Any cluster reachable through a kubeconfig (kind, k3s, ... or a ControlPlane)."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Runs kubectl against this cluster; with `check`, a failure raises with kubectl's stderr."""
        binary = BIN / "kubectl" if (BIN / "kubectl").exists() else shutil.which("kubectl")
        if binary is None:
            raise ClusterError("kubectl not found: run `make tools` or put kubectl on PATH")
        result = subprocess.run(
            [str(binary), "--kubeconfig", self.kubeconfig, *args], input=input, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


class ControlPlane(Cluster):
    """Starts and stops the whole control plane; all state in one temporary folder."""

    def __init__(self) -> None:
        super().__init__(kubeconfig="")
        self.workdir: Path | None = None
        self.components: list[Component] = []
        self.startup_seconds: float | None = None
        self._token = secrets.token_urlsafe(24)
        self._api = ""
        self._ca: Path | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Starts every component and returns once the edge nodes are Ready and the
        `default` ServiceAccount exists, i.e. once pods can be created and scheduled."""
        missing = [b for b in BINARIES if not (BIN / b).exists()]
        if missing:
            raise ClusterError(f"missing {', '.join(missing)} in {BIN}: run `make tools`")
        started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="plantwatch-k8s-"))
        try:
            pki = write_pki(self.workdir)
            self._ca = pki.ca_cert
            self._start_apiserver(self._start_etcd(), pki)
            self._wait(lambda: self._api_get("/readyz") is not None, "kube-apiserver /readyz", timeout)
            self._start_controller_manager(pki)
            self._start_scheduler()
            self._start_kwok()
            self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(edge_nodes()))
            self._wait(self._edge_nodes_ready, "the edge nodes to be Ready", timeout)
            self._wait(lambda: self._api_get("/api/v1/namespaces/default/serviceaccounts/default"), "the default ServiceAccount", timeout)
        except BaseException:
            self.stop(keep_logs=True)
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self, keep_logs: bool = False) -> None:
        """Terminates the components in the reverse order of their start, so that each one
        still has what it depends on while it shuts down (the API server its etcd), and kills
        any that lingers. Then removes the temporary folder, or keeps it and says where."""
        for c in reversed(self.components):
            c.proc.terminate()
            try:
                c.proc.wait(10)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
        self.components.clear()
        if self.workdir is None:
            return
        if keep_logs:
            print(f"control plane logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    # --- components ----------------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> None:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(BIN / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.components.append(Component(name, proc, log))

    def _start_etcd(self) -> str:
        client = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        self._spawn(
            "etcd",
            "--name=e2e",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e2e={peer}",
            "--unsafe-no-fsync",  # throwaway data: an fsync per write would cost seconds per test
            "--log-level=warn",
        )
        return client

    def _start_apiserver(self, etcd: str, pki: Pki) -> None:
        port = free_port()
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self._token},admin,admin,"system:masters"\n')
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers={etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            # The aggregation layer, for extension API servers such as prometheus-adapter (custom and
            # external metrics for the HPA). Aggregator routing: the API server dials the Service's
            # endpoint address itself, as there is no kube-proxy here to route its cluster IP.
            f"--requestheader-client-ca-file={pki.front_proxy_ca}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.proxy_client_cert}",
            f"--proxy-client-key-file={pki.proxy_client_key}",
            "--enable-aggregator-routing=true",
        )
        self._api = f"https://127.0.0.1:{port}"
        self._write_kubeconfig()

    def _start_controller_manager(self, pki: Pki) -> None:
        """The default controllers (Deployments, ReplicaSets, garbage collection, namespaces,
        ServiceAccounts and their tokens, ...). They act with the admin's credentials: a
        ServiceAccount per controller (--use-service-account-credentials) more than doubles
        the start-up time and changes nothing these tests can see."""
        self._spawn(
            "kube-controller-manager",
            *self._client_flags(),
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            # HPAs judged every 5 s instead of 15, so that a test sees one follow its metric within its
            # time box (tests/e2e/test_gateway_hpa.py); the rest of the HPA's arithmetic is the default.
            "--horizontal-pod-autoscaler-sync-period=5s",
        )

    def _start_scheduler(self) -> None:
        self._spawn("kube-scheduler", *self._client_flags())

    def _client_flags(self) -> list[str]:
        """What the controller manager and the scheduler share: the admin kubeconfig (also to
        check who calls their own endpoints), no leader election, a free port on 127.0.0.1."""
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
        ]

    def _start_kwok(self) -> None:
        self._spawn(
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={KWOK_STAGES}",
            # only the edge's fake nodes, never a real node of the cluster
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            # renew each node's Lease like a kubelet, so the node controller keeps them Ready
            "--node-lease-duration-seconds=40",
            "--node-ip=10.0.0.1",
            "--cidr=10.42.0.0/16",  # the nodes' InternalIP; pod IPs from k3s's default pod CIDR
        )

    # --- plumbing ------------------------------------------------------------------------

    def _write_kubeconfig(self) -> None:
        path = self.workdir / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "plantwatch-e2e",
                    "clusters": [{"name": "plantwatch-e2e", "cluster": {"server": self._api, "certificate-authority": str(self._ca)}}],
                    "users": [{"name": "admin", "user": {"token": self._token}}],
                    "contexts": [{"name": "plantwatch-e2e", "context": {"cluster": "plantwatch-e2e", "user": "admin"}}],
                }
            )
        )
        self.kubeconfig = str(path)

    def _api_get(self, path: str) -> dict | str | None:
        """GET on the API server as admin: the JSON body (or text), None on any failure.
        Cheaper than a kubectl process per poll on a two-core machine."""
        request = urllib.request.Request(self._api + path, headers={"Authorization": f"Bearer {self._token}"})
        try:
            with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(self._ca)), timeout=5) as response:
                body = response.read().decode()
        except OSError:
            return None
        return json.loads(body) if body.startswith("{") else body

    def _edge_nodes_ready(self) -> bool:
        nodes = self._api_get("/api/v1/nodes") or {"items": []}
        ready = {
            n["metadata"]["name"]
            for n in nodes["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
        }
        return ready >= {d["name"] for d in edge_devices()}

    def _wait(self, check: Callable[[], object], what: str, timeout: float) -> None:
        """Polls `check` until truthy. Fails at once when a component exits, with its log;
        on timeout, with the end of every log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for c in self.components:
                if c.proc.poll() is not None:
                    raise ClusterError(f"{c.name} exited with {c.proc.returncode} while waiting for {what}; its log ({c.log}):\n{c.tail()}")
            if check():
                return
            time.sleep(0.2)
        logs = "\n\n".join(f"--- {c.name} ({c.log}) ---\n{c.tail(10)}" for c in self.components)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--kubeconfig", type=Path, help="also write the kubeconfig here (make cluster: .cache/cluster/kubeconfig)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM as on Ctrl-C
    plane = ControlPlane()
    try:
        plane.start()
        kubeconfig = Path(plane.kubeconfig)
        if args.kubeconfig:
            args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            args.kubeconfig.write_bytes(kubeconfig.read_bytes())
            kubeconfig = args.kubeconfig.resolve()
        print(f"control plane up in {plane.startup_seconds:.1f}s; Ctrl-C stops it\nexport KUBECONFIG={kubeconfig}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except ClusterError as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        plane.stop()


if __name__ == "__main__":
    sys.exit(main())
