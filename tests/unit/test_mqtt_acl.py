"""The broker's password and ACL files rendered from SensorNodes: what each identity may do, what is refused.

The files are read back the way mosquitto 2.0 reads them (`mosquitto_acl` below follows
aclfile__parse in src/security_default.c: fgets lines, trailing whitespace cut, `#`
lines skipped, tokens split on spaces, the rest of the line trimmed), so a line smuggled
into a topic or a username shows up as a grant nobody rendered.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantwatch.mqtt import acl
from plantwatch.plant.model import SensorNode, parse_resource

PASSWORD = "correct-horse-battery"  # 21 characters
GATEWAY = ("plantwatch-gateway", "gateway-password-0123")
#: mosquitto_passwd -b (mosquitto 2.0.11) for alice / secret: 101 rounds, 12-byte salt.
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$sFmK4O5hkrIXuZQA$wRauHBVFet9jsqmfq0FI+stFBEJlz255y8Mo79J24djOhvRXi3UyUD2AiC9tIEZgsMGfh6iSHFZMZKc2C2+sLw=="
)
_C_SPACE = " \t\n\v\f\r"


def node(name: str, topic: str, fmt: str = "esp32-json", secret: str | None = "s") -> SensorNode:
    doc = {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "SensorNode",
        "metadata": {"name": "base"},
        "spec": {
            "hardware": "generic",
            "deviceId": "edge-1",
            "payload": {"format": fmt, "topic": "sensors/base/data"},
            "sensors": [{"name": "temperature", "type": "temperature"}],
            **({"credentials": {"secretRef": {"name": secret}}} if secret else {}),
        },
    }
    base = parse_resource(doc)
    # Replaced after parsing: the CRD would stop most odd values first, and the renderer must not rely on it.
    return replace(base, meta=replace(base.meta, name=name), spec=replace(base.spec, payload=replace(base.spec.payload, topic=topic)))


def mosquitto_acl(text: str) -> dict[str | None, list[tuple[str, str]]]:
    """{username (None: anonymous): [(access, topic)]} as mosquitto 2.0's aclfile__parse reads `text`."""
    grants: dict[str | None, list[tuple[str, str]]] = defaultdict(list)
    user = None
    for raw in text.split("\n"):
        line = raw.rstrip(_C_SPACE)
        if line.startswith("#"):
            continue
        tokens = line.lstrip(" ")
        if not tokens:
            continue
        first, _, rest = tokens.partition(" ")
        rest = rest.lstrip(" ")
        if first == "topic":
            access, _, topic = rest.partition(" ")
            access, topic = (access, topic.strip(_C_SPACE)) if topic.strip(" ") else ("readwrite", access)
            grants[user].append((access, topic))
        elif first == "user":
            user = rest.strip(_C_SPACE)
        else:
            raise AssertionError(f"mosquitto refuses the whole ACL file at line {raw!r}")
    return dict(grants)


def expected_acl(auth: acl.BrokerAuth) -> dict[str | None, list[tuple[str, str]]]:
    return {i.username: [("write", t) for t in i.publish] + [("read", t) for t in i.read] for i in auth.identities}


def render(nodes: list[SensorNode], creds: dict[str, tuple[str, str]] | None = None, **kw) -> acl.BrokerAuth:
    creds = creds if creds is not None else {n.meta.name: (n.meta.name, PASSWORD) for n in nodes}
    return acl.render_broker_auth(nodes, creds, GATEWAY, salt=lambda n: bytes(range(n)), **kw)


def test_each_node_publishes_its_data_and_status_and_reads_its_commands_the_gateway_reads_all():
    auth = render([node("press-1", "sensors/hall-1/press-1/data"), node("env-2", "lab/env-2/readings")])
    assert auth.refused == {}
    assert mosquitto_acl(auth.acl_file) == {
        "env-2": [("write", "lab/env-2/readings"), ("write", "lab/env-2/status"), ("read", "lab/env-2/cmd")],
        "plantwatch-gateway": [
            ("write", "lab/env-2/cmd"),
            ("write", "plantwatch/dead-letter/#"),
            ("write", "sensors/hall-1/press-1/cmd"),
            ("read", "lab/#"),
            ("read", "sensors/#"),
        ],
        "press-1": [
            ("write", "sensors/hall-1/press-1/data"),
            ("write", "sensors/hall-1/press-1/status"),
            ("read", "sensors/hall-1/press-1/cmd"),
        ],
    }


def test_a_sparkplug_edge_node_and_its_devices_are_one_client_with_births_deaths_and_commands():
    nodes = [
        node("edge", "spBv1.0/plant-a/NDATA/edge-7", "sparkplug-b"),
        node("press-3", "spBv1.0/plant-a/DDATA/edge-7/press-3", "sparkplug-b"),
    ]
    auth = render(nodes, {"edge": ("edge-7", PASSWORD), "press-3": ("edge-7", PASSWORD)})
    assert auth.refused == {}
    grants = mosquitto_acl(auth.acl_file)
    p = "spBv1.0/plant-a"
    assert grants["edge-7"] == [
        ("write", f"{p}/DBIRTH/edge-7/press-3"),
        ("write", f"{p}/DDATA/edge-7/press-3"),
        ("write", f"{p}/DDEATH/edge-7/press-3"),
        ("write", f"{p}/NBIRTH/edge-7"),
        ("write", f"{p}/NDATA/edge-7"),
        ("write", f"{p}/NDEATH/edge-7"),
        ("read", f"{p}/DCMD/edge-7/press-3"),
        ("read", f"{p}/NCMD/edge-7"),
    ]
    assert ("write", f"{p}/NCMD/edge-7") in grants["plantwatch-gateway"] and ("read", "spBv1.0/#") in grants["plantwatch-gateway"]
    assert auth.identities[1].nodes == ("edge", "press-3")


def test_the_password_file_is_mosquittos_format_and_verifies_mosquitto_passwds_own_hashes():
    user, hashed = MOSQUITTO_PASSWD_LINE.split(":", 1)
    assert acl.password_matches(hashed, "secret") and not acl.password_matches(hashed, "Secret")
    salt = base64.b64decode(hashed.split("$")[3])
    assert acl.hash_password("secret", salt, 101) == hashed
    auth = render([node("press-1", "sensors/press-1/data")])
    users = acl.parse_password_file(auth.password_file)
    assert sorted(users) == ["plantwatch-gateway", "press-1"]
    assert acl.password_matches(users["press-1"], PASSWORD) and users["press-1"].startswith(f"$7${acl.ITERATIONS}$")
    assert acl.password_matches(users["plantwatch-gateway"], GATEWAY[1])


def test_an_unchanged_plant_renders_the_same_bytes_and_a_rotation_changes_only_its_line():
    nodes = [node("a", "sensors/a/data"), node("b", "sensors/b/data")]
    first = acl.render_broker_auth(nodes, {"a": ("a", PASSWORD), "b": ("b", PASSWORD)}, GATEWAY)
    again = acl.render_broker_auth(nodes, {"a": ("a", PASSWORD), "b": ("b", PASSWORD)}, GATEWAY, previous_password_file=first.password_file)
    assert again == first
    rotated = acl.render_broker_auth(
        nodes, {"a": ("a", PASSWORD + "!"), "b": ("b", PASSWORD)}, GATEWAY, previous_password_file=first.password_file
    )
    before, after = acl.parse_password_file(first.password_file), acl.parse_password_file(rotated.password_file)
    assert after["b"] == before["b"] and after["plantwatch-gateway"] == before["plantwatch-gateway"]
    assert acl.password_matches(after["a"], PASSWORD + "!") and not acl.password_matches(after["a"], PASSWORD)


@pytest.mark.parametrize(
    "topic, fmt, reason",
    [
        ("sensors/+/data", "esp32-json", "wildcard"),
        ("sensors/#", "esp32-json", "wildcard"),
        ("sensors/a/data\nuser plantwatch-gateway", "esp32-json", "line-break"),
        ("sensors/a\0/data", "esp32-json", "control"),
        ("sensors/a/data\u2028topic write #", "esp32-json", "line-break"),
        ("$SYS/broker/data", "esp32-json", "'$'"),
        (" sensors/a/data", "esp32-json", "blanks"),
        ("sensors/a/data ", "esp32-json", "blanks"),
        ("plantwatch/dead-letter/a", "esp32-json", "dead letters"),
        ("sensors/a/status", "esp32-json", "status/cmd"),
        ("sensors/a/cmd", "esp32-json", "status/cmd"),
        ("spBv1.0/g/NBIRTH/e", "esp32-json", "Sparkplug namespace"),
        ("spBv1.0/g/NCMD/e", "sparkplug-b", "NDATA/<edge node>"),
        ("spBv1.0/g/DDATA/e", "sparkplug-b", "NDATA/<edge node>"),
        ("spBv1.0//NDATA/e", "sparkplug-b", "empty"),
        ("sensors/a/data", "sparkplug-b", "NDATA/<edge node>"),
        ("", "esp32-json", "empty"),
    ],
)
def test_a_topic_that_cannot_be_one_nodes_own_is_refused_with_the_reason_and_the_node_left_out(topic, fmt, reason):
    auth = render([node("odd", topic, fmt), node("fine", "sensors/fine/data")])
    assert set(auth.refused) == {"odd"} and reason in auth.refused["odd"], auth.refused
    assert "odd" not in acl.parse_password_file(auth.password_file) and "odd" not in mosquitto_acl(auth.acl_file)
    assert mosquitto_acl(auth.acl_file) == expected_acl(auth)


@pytest.mark.parametrize(
    "username, password, reason",
    [
        ("a:b", PASSWORD, "':'"),
        ("#a", PASSWORD, "'+' or '#'"),
        ("a+", PASSWORD, "'+' or '#'"),
        ("a\nuser plantwatch-gateway", PASSWORD, "line-break"),
        ("a\r", PASSWORD, "control"),
        (" a", PASSWORD, "blanks"),
        ("$admin", PASSWORD, "'$'"),
        ("", PASSWORD, "empty"),
        ("plantwatch-gateway", PASSWORD, "the gateway's"),
        ("a", "short", "at least 16"),
        ("a", PASSWORD + "\0tail", "NUL"),
    ],
)
def test_a_secret_that_cannot_be_rendered_safely_is_refused_naming_the_username_or_password(username, password, reason):
    auth = render(
        [node("odd", "sensors/odd/data"), node("fine", "sensors/fine/data")], {"odd": (username, password), "fine": ("fine", PASSWORD)}
    )
    assert set(auth.refused) == {"odd"} and reason in auth.refused["odd"], auth.refused
    assert set(mosquitto_acl(auth.acl_file)) == {"fine", "plantwatch-gateway"}


def test_a_node_without_credentials_gets_no_identity_and_says_which_secret_was_missing():
    auth = render([node("a", "sensors/a/data", secret="a-mqtt"), node("b", "sensors/b/data", secret=None)], {})
    assert auth.refused == {
        "a": "no username/password read from Secret 'a-mqtt'",
        "b": "spec.credentials.secretRef is not set: a node without its own identity cannot connect",
    }
    assert [i.username for i in auth.identities] == ["plantwatch-gateway"]


def test_two_nodes_never_share_an_identity_or_a_topic():
    shared = render([node("a", "sensors/a/data"), node("b", "sensors/b/data")], {"a": ("same", PASSWORD), "b": ("same", PASSWORD)})
    assert set(shared.refused) == {"a", "b"} and "also b's" in shared.refused["a"]
    # Siblings under one parent would share the status and command topics.
    siblings = render([node("t", "sensors/x/temperature"), node("h", "sensors/x/humidity")])
    assert set(siblings.refused) == {"t", "h"} and "'sensors/x/cmd'" in siblings.refused["t"]
    # One edge node's devices under two identities: each could speak the other's births.
    edge = render(
        [node("d1", "spBv1.0/g/DDATA/e/d1", "sparkplug-b"), node("d2", "spBv1.0/g/DDATA/e/d2", "sparkplug-b")],
        {"d1": ("u1", PASSWORD), "d2": ("u2", PASSWORD)},
    )
    assert set(edge.refused) == {"d1", "d2"} and "'spBv1.0/g/NBIRTH/e'" in edge.refused["d1"]
    two_passwords = render(
        [node("d1", "spBv1.0/g/DDATA/e/d1", "sparkplug-b"), node("d2", "spBv1.0/g/DDATA/e/d2", "sparkplug-b")],
        {"d1": ("e", PASSWORD), "d2": ("e", PASSWORD + "x")},
    )
    assert set(two_passwords.refused) == {"d1", "d2"} and "another password" in two_passwords.refused["d1"]
    for auth in (shared, siblings, edge, two_passwords):
        assert set(mosquitto_acl(auth.acl_file)) == {"plantwatch-gateway"}


def test_an_unusable_gateway_identity_fails_the_whole_render():
    with pytest.raises(acl.AclError, match="the gateway's MQTT username holds ':'"):
        acl.render_broker_auth([], {}, ("gw:x", PASSWORD))
    with pytest.raises(acl.AclError, match="the gateway's MQTT password has 5 characters; at least 16"):
        acl.render_broker_auth([], {}, ("gw", "short"))


# --- fuzz: odd names, usernames and topics never add a line nobody rendered ---------------------

_ODD = ["/", "+", "#", "$", " ", "\t", "\n", "\r", "\0", ":", "\u2028", "\x85", "\ufeff", "é", "a", "b", "-", ".", "status", "cmd", "data"]
_FORMATS = ["esp32-json", "sparkplug-b"]
pieces = st.lists(st.sampled_from(_ODD), min_size=0, max_size=8).map("".join)
topics = st.one_of(
    pieces,
    st.builds(lambda a, b: f"sensors/{a}/{b}", pieces, pieces),
    st.builds(
        lambda g, k, e, d: f"spBv1.0/{g}/{k}/{e}" + (f"/{d}" if d else ""),
        pieces,
        st.sampled_from(["NDATA", "DDATA", "NCMD"]),
        pieces,
        pieces,
    ),
)
names = st.one_of(st.sampled_from(["a", "b", "c", "press-1", "edge.7"]), pieces)
specs = st.lists(
    st.tuples(names, topics, st.sampled_from(_FORMATS), st.one_of(names, pieces), st.sampled_from([PASSWORD, "p" * 16, "short"])),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs)
def test_fuzzed_nodes_render_only_lines_derived_from_valid_nodes(spec):
    nodes, creds = [], {}
    for name, topic, fmt, username, password in spec:
        if any(n.meta.name == name for n in nodes):
            continue
        nodes.append(node(name, topic, fmt))
        creds[name] = (username, password)
    auth = acl.render_broker_auth(nodes, creds, GATEWAY, salt=lambda n: b"\1" * n, iterations=1)
    granted = mosquitto_acl(auth.acl_file)
    assert None not in granted  # no grant for anonymous clients
    assert granted == expected_acl(auth)
    users = acl.parse_password_file(auth.password_file)
    assert set(users) == set(granted)
    accepted = {n.meta.name: n for n in nodes if n.meta.name not in auth.refused}
    assert set(auth.refused) | set(accepted) == set(creds)
    for identity in auth.identities:
        if identity.username == GATEWAY[0]:
            assert acl.password_matches(users[identity.username], GATEWAY[1])
            continue
        assert identity.nodes and all(creds[n][0] == identity.username for n in identity.nodes)
        assert acl.password_matches(users[identity.username], creds[identity.nodes[0]][1])
        assert set(identity.publish) == {t for n in identity.nodes for t in acl.node_grants(accepted[n])[0]}
        assert set(identity.read) == {t for n in identity.nodes for t in acl.node_grants(accepted[n])[1]}
        for t in identity.publish + identity.read:
            assert acl.topic_problem(t) is None and t.isprintable() and "+" not in t and "#" not in t
    # No topic is any two identities' (the gateway's wildcards and commands aside).
    holders = defaultdict(set)
    assert auth.identities[0].username == GATEWAY[0]
    for identity in auth.identities[1:]:
        for t in identity.publish + identity.read:
            holders[t].add(identity.username)
    assert all(len(h) == 1 for h in holders.values())
