"""The gateway's MQTT subscriber: our own client (see wire.py) that reads in bulk and acknowledges per batch.

Delivery is at-least-once end to end: messages arrive with QoS 1 on a persistent
session and are acknowledged only after the pipeline has persisted them, so a gateway
killed mid-stream gets the unacknowledged ones again from the broker; the store is
keyed so that the redelivery stores nothing twice.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial

from plantwatch import metrics
from plantwatch.mqtt import wire
from plantwatch.mqtt.endpoint import Endpoint

log = logging.getLogger(__name__)


class BatchFailed(RuntimeError):
    """A batch (or the idle work) could not be stored: the pipeline stops, it does not reconnect.

    Deliberately not an OSError: an OSError from the socket means the broker went away and
    the loop reconnects, but one from the handler (a disk, a sink) means the pipeline's
    state has run ahead of what is stored, and only a restart (the broker redelivers what
    was never acknowledged) continues from what is.
    """


class BatchSubscriber:
    """A QoS 1 subscriber that reads in bulk and acknowledges a batch after its handler returns.

    The receive loop runs on the caller's thread (the pipeline's): read everything the
    socket has, parse every complete PUBLISH (mqtt.wire), hand the batch to `handle`,
    and send all its PUBACKs in one write once the batch is stored. No per-message
    callback. With a `client_id` the session is persistent, so what was never
    acknowledged comes again after a crash or a reconnect.
    """

    #: A connection must have stayed up this long for the next reconnect to be immediate: one
    #: the broker drops at once (another client took the same id, a refused subscription) is
    #: retried with the growing delay, not in a loop as fast as the broker answers.
    STABLE_S = 10.0

    def __init__(self, url: str, topics: list[str], client_id: str | None = None, keepalive: int = 30, read_size: int = 1 << 20):
        if not topics:
            raise ValueError("nothing to subscribe to: the plant has no SensorNode topics")
        self._endpoint = Endpoint.parse(url)
        self._topics = topics
        #: The MQTT client id: the given one (a persistent session), else a random one (a clean session).
        self.client_id = client_id or f"plantwatch-{uuid.uuid4().hex[:8]}"
        self._clean = client_id is None
        self._keepalive = keepalive
        self._read_size = read_size
        self.connected_once = threading.Event()
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def run(
        self, handle: Callable[[list[wire.Publish]], Future | None], stop: threading.Event, idle: Callable[[], None] = lambda: None
    ) -> None:
        """Receive until `stop` is set, reconnecting (with backoff) whenever the broker goes away.

        `handle(batch)` returns None when the batch is stored: its PUBACKs go out at once. Or
        it returns a Future that completes when the batch is stored: the PUBACKs go out then,
        from the thread that completes it, while this loop reads on. A failed Future
        acknowledges nothing and ends the loop with its exception, as does `handle` or `idle`
        raising (an OSError from them as BatchFailed: only the socket's own reconnect). Before reconnecting or
        returning, the loop waits for the batches in hand, so that their PUBACKs go out on
        the connection they came in on.
        """
        delay = 0.1
        while not stop.is_set():
            try:
                sock = self._connect()
            except (OSError, wire.ProtocolError) as exc:
                log.warning("broker %s:%s: %s; retrying in %.1fs", self._endpoint.host, self._endpoint.port, exc, delay)
                idle()
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            connected_at = time.monotonic()
            try:
                self._receive(sock, handle, stop, idle)
            except (OSError, wire.ProtocolError) as exc:
                if time.monotonic() - connected_at >= self.STABLE_S:
                    delay = 0.1
                log.warning("lost the broker: %s; reconnecting in %.1fs", exc, delay)
            finally:
                self._connected = False
                try:
                    if stop.is_set():
                        sock.sendall(wire.DISCONNECT_PACKET)
                except OSError:
                    pass
                sock.close()
            stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self._endpoint.host, self._endpoint.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(wire.connect(self.client_id, self._keepalive, self._clean, self._endpoint.username, self._endpoint.password))
        # CONNACK is always 4 bytes; whatever follows it (a persistent session's queued
        # messages may come in the same read) is kept for the receive loop.
        buf = bytearray()
        while len(buf) < 4:
            data = sock.recv(4096)
            if not data:
                raise wire.ProtocolError("the broker closed the connection during CONNECT")
            buf += data
        if buf[0] != wire.CONNACK << 4 or buf[1] != 2:
            raise wire.ProtocolError(f"expected CONNACK, got packet type {buf[0] >> 4}")
        if buf[3]:
            raise wire.ProtocolError(f"connection refused: {wire.CONNACK_ERRORS.get(buf[3], buf[3])}")
        sock.sendall(wire.subscribe(1, self._topics))
        self._pending = buf[4:]
        return sock

    def _receive(self, sock: socket.socket, handle, stop: threading.Event, idle) -> None:
        buf = self._pending
        topics = wire.TopicCache()
        sock.settimeout(0.1)
        send_lock = threading.Lock()  # PUBACKs may be sent from the thread that stores a batch
        in_hand: deque[Future] = deque()  # batches handed over and not yet stored, oldest first
        last_sent = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    data = sock.recv(self._read_size)
                    if not data:
                        raise OSError("the broker closed the connection")
                    buf += data
                except TimeoutError:
                    pass
                publishes, controls, used = wire.parse(buf, topics)
                if topics.evicted:
                    metrics.STATE_EVICTIONS.labels("mqtt_topic_cache").inc(topics.evicted)
                    topics.evicted = 0
                if used:
                    del buf[:used]
                for c in controls:
                    if c.type == wire.SUBACK:
                        if 0x80 in c.body[2:]:
                            raise wire.ProtocolError(f"the broker refused the subscription to {self._topics}")
                        self._connected = True
                        self.connected_once.set()
                if publishes:
                    acks = wire.puback([p.packet_id for p in publishes if p.qos == 1])
                    try:
                        stored = handle(publishes)
                    except (OSError, wire.ProtocolError) as exc:
                        raise BatchFailed(f"a batch could not be stored: {exc!r}") from exc
                    if stored is None:
                        _acknowledge(sock, send_lock, acks)
                    else:
                        in_hand.append(stored)
                        stored.add_done_callback(partial(_acknowledge, sock, send_lock, acks))
                while in_hand and in_hand[0].done():
                    try:
                        in_hand.popleft().result()  # raises what kept a batch from being stored
                    except (OSError, wire.ProtocolError) as exc:
                        raise BatchFailed(f"a batch could not be stored: {exc!r}") from exc
                try:
                    idle()
                except (OSError, wire.ProtocolError) as exc:
                    raise BatchFailed(f"the pipeline's clock-driven work failed: {exc!r}") from exc
                if time.monotonic() - last_sent > self._keepalive / 2:
                    with send_lock:
                        sock.sendall(wire.PINGREQ_PACKET)
                    last_sent = time.monotonic()
        finally:
            wait(in_hand)


def _acknowledge(sock: socket.socket, lock: threading.Lock, acks: bytes, stored: Future | None = None) -> None:
    """Send a stored batch's PUBACKs (nothing if it could not be stored)."""
    if not acks or (stored is not None and stored.exception() is not None):
        return
    with lock:
        try:
            sock.sendall(acks)
        except OSError:
            pass  # the connection is gone: the broker sends the batch again and the store keeps one copy
