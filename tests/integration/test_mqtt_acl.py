"""A real mosquitto run from exactly the password and ACL files `render_broker_auth` renders.

Each node may publish only its own data and status topics and read only its own
commands; the gateway reads every data topic and writes dead letters and commands;
wrong passwords and anonymous clients get a CONNACK refusal; a rotated Secret, re-rendered
and reloaded (SIGHUP), locks out the old password without touching other nodes.
Clients speak MQTT 5 so a refused publish is seen in its PUBACK (0x87 Not authorized),
not inferred from silence; "never arrives" is shown with a barrier (a later permitted
message from the same publisher, which the broker delivers in order).
"""

from __future__ import annotations

import queue
import socket
import threading

import paho.mqtt.client as mqtt
import pytest

from plantwatch.mqtt import acl
from plantwatch.plant.model import SensorNode, parse_resource
from tests.support.mqtt_security import SecureBroker, mosquitto_passwd_file, start_secure_mosquitto, workdir

WAIT_S = 10.0
NOT_AUTHORIZED = 0x87
GATEWAY = ("plantwatch-gateway", "gateway-password-0123")
A = ("press-a", "press-a-password-0001")
B = ("press-b", "press-b-password-0002")
EDGE = ("edge-7", "edge-7-password-000003")
A_DATA, B_DATA = "sensors/hall-1/press-a/data", "sensors/hall-1/press-b/data"
A_STATUS, B_STATUS = "sensors/hall-1/press-a/status", "sensors/hall-1/press-b/status"
A_CMD, B_CMD = "sensors/hall-1/press-a/cmd", "sensors/hall-1/press-b/cmd"
EDGE_NDATA, EDGE_NCMD = "spBv1.0/plant-a/NDATA/edge-7", "spBv1.0/plant-a/NCMD/edge-7"


def node(name: str, topic: str, fmt: str = "esp32-json") -> SensorNode:
    doc = {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "SensorNode",
        "metadata": {"name": name},
        "spec": {
            "hardware": "esp32",
            "deviceId": name,
            "payload": {"format": fmt, "topic": topic},
            "credentials": {"secretRef": {"name": f"{name}-mqtt"}},
            "sensors": [{"name": "temperature", "type": "temperature"}],
        },
    }
    return parse_resource(doc)


NODES = [node("press-a", A_DATA), node("press-b", B_DATA), node("edge-7", EDGE_NDATA, "sparkplug-b")]


class Client:
    """A paho MQTT 5 client: CONNACK and PUBACK reason codes, received messages, disconnects."""

    def __init__(self, broker: SecureBroker, user: tuple[str, str] | None, client_id: str, will: str | None = None):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        if user is not None:
            self.c.username_pw_set(*user)
        if will is not None:
            self.c.will_set(will, b"offline", qos=1, retain=False)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.connects = 0
        self.disconnected = threading.Event()
        self._acks: dict[int, queue.Queue[int]] = {}
        self._lock = threading.Lock()
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.c.on_publish = self._on_publish
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnected.set()
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        self.rc = self.connack.get(timeout=WAIT_S)

    def _on_connect(self, c, u, flags, rc, props) -> None:
        self.connects += 1
        self.connack.put(rc.value)

    def _on_publish(self, c, u, mid, rc, props) -> None:
        with self._lock:
            self._acks.setdefault(mid, queue.Queue()).put(rc.value)

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (0: accepted)."""
        info = self.c.publish(topic, payload, qos=1)
        with self._lock:
            acks = self._acks.setdefault(info.mid, queue.Queue())
        return acks.get(timeout=WAIT_S)

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda c, u, mid, codes, props: done.set()
        self.c.subscribe([(f, 1) for f in filters])
        assert done.wait(WAIT_S), f"no SUBACK for {filters}"

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=WAIT_S)

    def drop(self) -> None:
        """Lose the connection without DISCONNECT, as a node losing power does: the broker sends the will."""
        self.c.socket().shutdown(socket.SHUT_RDWR)
        assert self.disconnected.wait(WAIT_S)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def write(folder, auth: acl.BrokerAuth) -> None:
    (folder / "passwd").write_text(auth.password_file)
    (folder / "acl").write_text(auth.acl_file)


@pytest.fixture
def plant():
    folder = workdir("plantwatch-acl-")
    creds = {"press-a": A, "press-b": B, "edge-7": EDGE}
    auth = acl.render_broker_auth(NODES, creds, GATEWAY)
    assert auth.refused == {}
    write(folder, auth)
    broker = start_secure_mosquitto(folder / "broker", password_file=folder / "passwd", acl_file=folder / "acl", plain=True)
    clients: list[Client] = []

    def connect(user, client_id, will=None) -> Client:
        client = Client(broker, user, client_id, will)
        clients.append(client)
        return client

    yield broker, connect, folder, creds, auth
    for client in clients:
        client.close()
    broker.stop()


def test_a_node_publishes_only_its_own_topics_and_the_gateway_sees_them(plant):
    broker, connect, *_ = plant
    gateway = connect(GATEWAY, "plantwatch-gateway")
    gateway.subscribe("sensors/#", "spBv1.0/#")
    a = connect(A, "press-a", will=A_STATUS)
    assert a.rc == 0
    assert a.publish(B_DATA, b"forged") == NOT_AUTHORIZED
    assert a.publish(B_STATUS, b"offline") == NOT_AUTHORIZED
    assert a.publish(EDGE_NDATA, b"forged") == NOT_AUTHORIZED
    assert a.publish("plantwatch/dead-letter/press-b", b"forged") == NOT_AUTHORIZED
    assert a.publish(B_CMD, b"forged") == NOT_AUTHORIZED
    assert a.publish(A_STATUS, b"online") == 0
    assert a.publish(A_DATA, b"reading") == 0
    # In order: had any forged message got through, it would have come first.
    assert gateway.next_message() == (A_STATUS, b"online")
    assert gateway.next_message() == (A_DATA, b"reading")
    edge = connect(EDGE, "edge-7")
    assert edge.publish("spBv1.0/plant-a/NBIRTH/edge-7") == 0 and edge.publish(EDGE_NDATA) == 0
    assert edge.publish("spBv1.0/plant-a/NDATA/edge-8") == NOT_AUTHORIZED
    assert edge.publish(A_DATA) == NOT_AUTHORIZED
    assert [gateway.next_message()[0] for _ in range(2)] == ["spBv1.0/plant-a/NBIRTH/edge-7", EDGE_NDATA]


def test_a_last_will_on_another_nodes_status_is_never_published(plant):
    _, connect, *_ = plant
    gateway = connect(GATEWAY, "plantwatch-gateway")
    gateway.subscribe("sensors/#")
    liar = connect(A, "press-a-liar", will=B_STATUS)
    assert liar.rc == 0  # mosquitto 2.0 checks a will's topic when it would send it, not at CONNECT
    liar.drop()
    honest = connect(A, "press-a", will=A_STATUS)  # the broker has handled the first drop before this CONNECT
    honest.drop()
    assert gateway.next_message() == (A_STATUS, b"offline")


def test_wrong_passwords_unknown_users_and_anonymous_clients_get_a_connack_refusal(plant):
    _, connect, *_ = plant
    assert connect((A[0], B[1]), "press-a").rc == NOT_AUTHORIZED  # mosquitto 2.0 says 0x87 for a bad password too
    assert connect((A[0], A[1] + "x"), "press-a").rc == NOT_AUTHORIZED
    assert connect(("intruder", A[1]), "intruder").rc == NOT_AUTHORIZED
    assert connect(None, "anonymous").rc == NOT_AUTHORIZED
    assert connect(A, "press-a").rc == 0


def test_a_node_reads_only_its_own_commands_and_the_gateway_writes_commands_and_dead_letters(plant):
    _, connect, *_ = plant
    gateway = connect(GATEWAY, "plantwatch-gateway")
    a, b, edge = connect(A, "press-a"), connect(B, "press-b"), connect(EDGE, "edge-7")
    for client in (a, b, edge):
        client.subscribe("#")  # subscribing is not checked; delivery is
    assert gateway.publish(B_CMD, b"for b") == 0
    assert gateway.publish(EDGE_NCMD, b"rebirth") == 0
    assert gateway.publish(A_CMD, b"for a") == 0
    assert gateway.publish("plantwatch/dead-letter/press-a", b"{}") == 0
    assert gateway.publish(A_DATA, b"forged") == NOT_AUTHORIZED  # the gateway does not speak for nodes
    assert a.next_message() == (A_CMD, b"for a")
    assert b.next_message() == (B_CMD, b"for b")
    assert edge.next_message() == (EDGE_NCMD, b"rebirth")
    # What a node may publish it may not read back: data, status and dead letters are the gateway's to read.
    assert b.publish(B_DATA, b"mine") == 0 and b.publish(B_STATUS, b"online") == 0
    assert gateway.publish(B_CMD, b"barrier") == 0
    assert b.next_message() == (B_CMD, b"barrier")
    assert a.messages.empty() and edge.messages.empty()


def test_a_client_id_naming_another_node_grants_none_of_its_rights(plant):
    _, connect, *_ = plant
    gateway = connect(GATEWAY, "plantwatch-gateway")
    gateway.subscribe("sensors/#")
    posing = connect(A, "press-b")  # A's password, B's client id
    posing.subscribe(B_CMD, A_CMD)
    assert posing.publish(B_DATA, b"forged") == NOT_AUTHORIZED
    assert gateway.publish(B_CMD, b"for b") == 0 and gateway.publish(A_CMD, b"for a") == 0
    assert posing.next_message() == (A_CMD, b"for a")  # its rights are its username's: A's command only
    assert posing.publish(A_DATA, b"a's own") == 0
    # The gateway reads sensors/#, its own commands included; a forged B_DATA would precede A_DATA.
    assert [gateway.next_message() for _ in range(3)] == [(B_CMD, b"for b"), (A_CMD, b"for a"), (A_DATA, b"a's own")]


def test_rotating_a_nodes_secret_locks_out_its_old_password_and_leaves_other_nodes_connected(plant):
    broker, connect, folder, creds, first = plant
    gateway = connect(GATEWAY, "plantwatch-gateway")
    gateway.subscribe("sensors/#")
    a, b = connect(A, "press-a"), connect(B, "press-b")
    assert b.publish(B_DATA, b"before") == 0
    assert gateway.next_message() == (B_DATA, b"before")
    new_a = (A[0], "press-a-password-rotated")
    rotated = acl.render_broker_auth(NODES, {**creds, "press-a": new_a}, GATEWAY, previous_password_file=first.password_file)
    before, after = acl.parse_password_file(first.password_file), acl.parse_password_file(rotated.password_file)
    assert after[B[0]] == before[B[0]] and after[A[0]] != before[A[0]]
    write(folder, rotated)
    broker.reload()
    # mosquitto re-checks every connected client on reload: A's session on the old password ends...
    assert a.disconnected.wait(WAIT_S), "A's session on the old password outlived the reload"
    # ...while B's goes on, never dropped, never reconnected.
    assert b.publish(B_DATA, b"after") == 0
    assert gateway.next_message() == (B_DATA, b"after")
    assert not b.disconnected.is_set() and b.connects == 1
    assert not gateway.disconnected.is_set() and gateway.connects == 1
    assert connect(A, "press-a").rc == NOT_AUTHORIZED
    a2 = connect(new_a, "press-a")
    assert a2.rc == 0 and a2.publish(A_DATA, b"rotated") == 0
    assert gateway.next_message() == (A_DATA, b"rotated")


def test_the_rendered_password_file_is_read_the_way_mosquitto_passwd_writes_it(plant):
    """mosquitto_passwd's hashes verify here, and the rendered file holds the four identities and nothing else."""
    _, _, folder, _, auth = plant
    reference = acl.parse_password_file(mosquitto_passwd_file(folder, {A[0]: A[1]}).read_text())
    assert acl.password_matches(reference[A[0]], A[1]) and not acl.password_matches(reference[A[0]], B[1])
    assert sorted(acl.parse_password_file(auth.password_file)) == sorted([GATEWAY[0], A[0], B[0], EDGE[0]])
    assert auth.password_file.count("\n") == 1 + 4  # the header and four lines
