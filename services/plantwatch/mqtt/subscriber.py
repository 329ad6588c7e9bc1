"""The gateway's MQTT subscriber: our own client (see wire.py) that reads in bulk and acknowledges per batch.

Delivery is at-least-once end to end: messages arrive with QoS 1 on a persistent
session and are acknowledged only after the pipeline has persisted them, so a gateway
killed mid-stream gets the unacknowledged ones again from the broker; the store is
keyed so that the redelivery stores nothing twice.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial

from plantwatch import metrics
from plantwatch.mqtt import connection, wire
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

    def __init__(
        self, broker: str | Endpoint, topics: list[str], client_id: str | None = None, keepalive: int = 30, read_size: int = 1 << 20
    ):
        if not topics:
            raise ValueError("nothing to subscribe to: the plant has no SensorNode topics")
        self._endpoint = Endpoint.of(broker)
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
                log.warning("broker %s: %s; retrying in %.1fs", self._endpoint, exc, delay)
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
        # The password file is read again at every connection: a rotated password is used at the next one.
        sock, self._pending = connection.handshake(self._endpoint, self.client_id, self._keepalive, self._clean)
        sock.sendall(wire.subscribe(1, self._topics))
        return sock

    def _receive(self, sock: socket.socket, handle, stop: threading.Event, idle) -> None:
        buf = self._pending
        topics = wire.TopicCache()
        sock.settimeout(0.1)
        channel = _Channel(sock)
        in_hand: deque[Future] = deque()  # batches handed over and not yet stored, oldest first
        last_sent = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    data = channel.read(self._read_size)
                    if data is not None:
                        if not data:
                            raise OSError("the broker closed the connection")
                        buf += data
                except TimeoutError:
                    pass
                channel.flush()
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
                        channel.acknowledge(acks)
                    else:
                        in_hand.append(stored)
                        stored.add_done_callback(partial(channel.acknowledge, acks))
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
                    channel.send(wire.PINGREQ_PACKET)
                    last_sent = time.monotonic()
        finally:
            wait(in_hand)
            try:
                channel.flush()
            except OSError:
                pass  # the connection is gone: the broker sends those batches again and the store keeps one copy
            channel.close()


class _Channel:
    """A connection's socket as the receive loop uses it: made and read on the loop's thread, PUBACKs from any thread.

    On a plain socket the thread that stored a batch sends its PUBACKs itself, under a lock, at
    once. An SSL socket must not be written by one thread while another reads it (an OpenSSL
    connection is not thread-safe), so there the PUBACKs are queued and the receive loop,
    woken through a socket pair, sends them between two reads.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._lock = threading.Lock()
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._reader = threading.current_thread()
        self._queued: list[bytes] = []
        self._wake_r, self._wake_w = socket.socketpair() if self._tls else (None, None)

    def read(self, size: int) -> bytes | None:
        """What the broker sent (b"": it closed the connection); None or TimeoutError after ~0.1 s with nothing."""
        if not self._tls:
            return self._sock.recv(size)
        if not self._sock.pending():
            ready, _, _ = select.select([self._sock, self._wake_r], [], [], 0.1)
            if self._wake_r in ready:
                self._wake_r.recv(4096)
            if self._sock not in ready:
                return None
        # One TLS record (at most 16 KiB) per recv: read on while more is already here, so that a
        # backlog still comes in batches of thousands of messages.
        data = self._sock.recv(size)
        chunks = [data]
        got = len(data)
        while data and got < size and (self._sock.pending() or select.select([self._sock], [], [], 0)[0]):
            try:
                data = self._sock.recv(size - got)
            except TimeoutError:
                break
            if not data:
                break  # the close is seen at the next read
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        """Send from the receive loop's thread (anything queued goes first)."""
        with self._lock:
            if self._queued:
                self._sock.sendall(b"".join(self._queued))
                self._queued.clear()
            self._sock.sendall(data)

    def acknowledge(self, acks: bytes, stored: Future | None = None) -> None:
        """Send (or, on TLS, queue for the receive loop) a stored batch's PUBACKs; nothing if it could not be stored."""
        if not acks or (stored is not None and stored.exception() is not None):
            return
        with self._lock:
            if self._tls and threading.current_thread() is not self._reader:
                self._queued.append(acks)
                if len(self._queued) == 1:  # else a wake-up is on its way already
                    try:
                        self._wake_w.send(b"\0")
                    except OSError:
                        pass  # the loop is closing the channel; its last flush has sent or dropped these
                return
            try:
                if self._queued:
                    self._sock.sendall(b"".join(self._queued))
                    self._queued.clear()
                self._sock.sendall(acks)
            except OSError:
                pass  # the connection is gone: the broker sends the batch again and the store keeps one copy

    def flush(self) -> None:
        """Send the queued PUBACKs (TLS), from the receive loop's thread."""
        if self._queued:
            with self._lock:
                data = b"".join(self._queued)
                self._queued.clear()
                self._sock.sendall(data)

    def close(self) -> None:
        if self._tls:
            self._wake_r.close()
            self._wake_w.close()
