"""A publisher (paho-mqtt, the package's only user of it): QoS 1 on a background network thread."""

from __future__ import annotations

import ssl
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

from plantwatch import metrics
from plantwatch.mqtt import connection
from plantwatch.mqtt.endpoint import Endpoint


def _client(endpoint: Endpoint, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    username, password = endpoint.credentials()
    if username:
        c.username_pw_set(username, password)
    if endpoint.tls is not None:
        # The same context as our own client's: the certificate and the host name verified.
        c.tls_set_context(endpoint.tls.context())
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(1000)
    c.reconnect_delay_set(0.1, 5)
    return c


#: QoS 1 packet ids are 16 bits: paho refuses a message while all 65,535 are taken by messages not yet acknowledged.
PACKET_IDS = 65_535


class Publisher:
    """Publishes on a background network thread; `publish` does not block on the network until
    PACKET_IDS messages wait for it.

    With `max_queued`, at most that many messages wait for the network (in flight included):
    one published beyond is dropped and counted (`dropped`, and the metric
    plantwatch_state_evictions_total{structure="mqtt_publish_queue"}). For a publisher fed
    by the network, such as the gateway's dead letters, whose own rate an attacker sets.
    Without it (0), nothing is dropped: once every QoS 1 packet id is taken by a message not
    yet acknowledged (a broker slower than the caller, or away), `publish` waits for one.
    """

    def __init__(self, broker: str | Endpoint, client_id: str | None = None, max_queued: int = 0):
        self._endpoint = Endpoint.of(broker)
        self._client = _client(self._endpoint, client_id or f"plantwatch-pub-{uuid.uuid4().hex[:8]}")
        self._client.max_queued_messages_set(max_queued)
        self._bounded = max_queued > 0
        self.dropped = 0
        self._last: mqtt.MQTTMessageInfo | None = None
        self._connected = threading.Event()
        #: Set by the broker's first answer, a refusal included; `refused` says why it refused.
        self._answered = threading.Event()
        self.refused: str | None = None
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode, properties: object) -> None:
        if reason.is_failure:
            self.refused = str(reason)
        else:
            self._connected.set()
        self._answered.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this inside its `except OSError`, and passes no exception: it is the one being handled.
        if isinstance(sys.exception(), ssl.SSLCertVerificationError):  # retrying would not verify it either
            self.refused = connection.diagnose(self._endpoint) or "its certificate does not verify"
            self._answered.set()

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect in the background (retrying); wait up to `timeout` (None: do not wait).

        Messages published before the connection wait in paho's queue (QoS 1). Waiting, a
        refusal (bad credentials, a client id the broker rejects, a broker certificate that does
        not verify) raises ConnectionRefusedError at once: retrying would only be refused again.
        A timeout says why the connection did not come about where one more try can tell (TLS
        spoken to a plain port or the other way round, a client certificate the broker wants).
        """
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()
        if timeout is None:
            return
        where = str(self._endpoint)
        if self._answered.wait(timeout) and self.refused is not None:
            self._client.loop_stop()
            raise ConnectionRefusedError(f"the broker at {where} refused the connection: {self.refused}")
        if not self._connected.is_set():
            self._client.loop_stop()
            why = connection.diagnose(self._endpoint, timeout=min(timeout, 5.0))
            raise TimeoutError(f"could not connect to the broker at {where} within {timeout:g}s" + (f": {why}" if why else ""))

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE and not self._bounded:  # every packet id taken: wait for an acknowledgement
            time.sleep(0.005)
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            metrics.STATE_EVICTIONS.labels("mqtt_publish_queue").inc()
        else:
            self._last = info

    def flushed(self, timeout: float) -> bool:
        """Whether what was published so far has left within `timeout` (QoS 1: the broker's PUBACK came)."""
        if self._last is None:
            return True
        try:
            self._last.wait_for_publish(timeout)
        except (RuntimeError, ValueError):  # paho could not send it (connection lost, queue full)
            return False
        return self._last.is_published()

    def stop(self, timeout: float = 10.0) -> None:
        """Wait until what was published has left (QoS 1: acknowledged), then disconnect."""
        if self._last is not None and self._client.is_connected():
            self._last.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
