"""free_port: the ports `make test`'s two pytest processes hand their servers never overlap."""

from __future__ import annotations

import socket

from plantwatch.mqtt import broker


def test_a_port_range_is_walked_in_turn_skipping_ports_in_use(monkeypatch):
    monkeypatch.setenv(broker.PORT_RANGE_ENV, "41000-41009")
    monkeypatch.setattr(broker, "_next_port", [41000])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 41001))
        busy.listen()
        ports = [broker.free_port() for _ in range(12)]
    assert 41001 not in ports[:9]  # in use while handed out
    assert ports[:3] == [41000, 41002, 41003]
    assert all(41000 <= p <= 41009 for p in ports)
    assert len(set(ports[:9])) == 9  # none handed out twice before the range wraps


def test_without_a_range_the_kernel_picks_from_its_ephemeral_ports(monkeypatch):
    monkeypatch.delenv(broker.PORT_RANGE_ENV, raising=False)
    port = broker.free_port()
    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert low <= port <= high
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
