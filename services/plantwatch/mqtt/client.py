"""The only paho-mqtt user: a subscriber that hands messages to a queue, and a publisher.

paho's network thread does nothing but enqueue; the pipeline works on its own thread.
Delivery is at-least-once end to end: messages arrive with QoS 1 on a persistent
session and are acknowledged only after the pipeline has persisted them (`ack`), so a
gateway killed mid-stream gets the unacknowledged ones again from the broker; the store
is keyed so that the redelivery stores nothing twice.
"""

from __future__ import annotations

import queue
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = urlparse(url if "://" in url else f"mqtt://{url}")
        if u.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// (e.g. mqtt://127.0.0.1:1883)")
        return cls(u.hostname or "127.0.0.1", u.port or 1883, u.username, u.password)


def _client(endpoint: Endpoint, client_id: str, clean: bool = True, manual_ack: bool = False) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, manual_ack=manual_ack)
    if endpoint.username:
        c.username_pw_set(endpoint.username, endpoint.password)
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(1000)
    c.reconnect_delay_set(0.1, 5)
    return c


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


class Subscriber:
    """Subscribes to topics with QoS 1 and puts each Message on `messages`; `ack` after persisting.

    With a `client_id` the session is persistent: the broker keeps what arrives while
    the subscriber is away and redelivers what it never acknowledged. Without one the
    session is clean (a throwaway id), for tools and tests.
    """

    def __init__(self, url: str, topics: list[str], client_id: str | None = None, maxsize: int = 100_000):
        self.messages: queue.Queue[Message] = queue.Queue(maxsize)
        self._topics = topics
        self._connected = threading.Event()
        self._client = _client(Endpoint.parse(url), client_id or f"plantwatch-{uuid.uuid4().hex[:8]}",
                               clean=client_id is None, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._endpoint = Endpoint.parse(url)

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self._topics])
            self._connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        self.messages.put(Message(msg.topic, msg.payload, msg.mid, msg.qos))

    def ack(self, messages: list[Message]) -> None:
        """Acknowledge messages the pipeline has persisted (QoS 0 needs none)."""
        for m in messages:
            if m.qos > 0:
                self._client.ack(m.mid, m.qos)

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect in the background (retrying until the broker answers); wait up to `timeout`.

        timeout=None returns at once: a gateway pod may start before its broker, and
        reports not-ready until it is connected.
        """
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()
        if timeout is not None and not self._connected.wait(timeout):
            self.stop()
            raise TimeoutError(f"could not connect to the broker at {self._endpoint.host}:{self._endpoint.port} within {timeout:g}s")

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Publisher:
    """Publishes on a background network thread; `publish` never blocks on the network."""

    def __init__(self, url: str, client_id: str | None = None):
        self._endpoint = Endpoint.parse(url)
        self._client = _client(self._endpoint, client_id or f"plantwatch-pub-{uuid.uuid4().hex[:8]}")
        self._last: mqtt.MQTTMessageInfo | None = None
        self._connected = threading.Event()
        self._client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else self._connected.set()

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect in the background (retrying); wait up to `timeout` (None: do not wait).

        Messages published before the connection wait in paho's queue (QoS 1).
        """
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()
        if timeout is not None and not self._connected.wait(timeout):
            self._client.loop_stop()
            raise TimeoutError(f"could not connect to the broker at {self._endpoint.host}:{self._endpoint.port} within {timeout:g}s")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self._last = self._client.publish(topic, payload, qos=qos)

    def stop(self, timeout: float = 10.0) -> None:
        """Wait until what was published has left (QoS 1: acknowledged), then disconnect."""
        if self._last is not None and self._client.is_connected():
            self._last.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
