"""The broker's identities and ACLs, rendered from the plant's SensorNodes (pure: no I/O).

Each SensorNode's Secret (`spec.credentials.secretRef`: `username`, `password`) becomes
one line of a mosquitto `password_file` (PBKDF2-SHA512, mosquitto's `$7$` format) and
one `user` block of its `acl_file`, with the node's topics written out literally:

- a node publishes its data topic (`spec.payload.topic`) and its status topic, and
  reads its command topic; both hang off the data topic's parent, as the firmware's do
  (`sensors/hall-1/esp32-press-01/data` → `.../status`, `.../cmd`);
- a sparkplug-b node is its edge node's MQTT client: it publishes NBIRTH/NDATA/NDEATH of
  its edge node (and DBIRTH/DDATA/DDEATH of its device) and reads NCMD (and DCMD);
- the gateway reads everything under the first levels the nodes use (its subscriptions,
  `Pipeline.subscriptions`), publishes dead letters and every node's commands;
- the broker exporter (monitoring.broker_exporter), when given, reads what the gateway reads
  and the broker's `$SYS/broker/#`, and publishes nothing.

Mosquitto's files rather than its dynamic-security plugin: they are declarative (the
operator renders them from the cluster's objects and the broker re-reads them on SIGHUP,
so the broker never holds state that could drift from the CRDs), reviewable as text, and
need no admin identity on the broker whose theft would hand out the whole plant. What
the plugin has that files lack (binding a client id to a user) mosquitto offers per
listener as `use_username_as_clientid`.

Nothing here pattern-substitutes (`%u`/`%c`): node topics are arbitrary, so each grant is a
literal topic, and whatever could change a file's meaning (a wildcard, a line break, a
`:` or a leading `#` in a username, blanks mosquitto would trim) is refused per node with
the reason. A refused node gets no line in either file, so the broker refuses it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from plantwatch.contracts.topics import COMMAND_LEVEL, STATUS_LEVEL, command_topic, status_topic
from plantwatch.ingest import sparkplug
from plantwatch.ingest.dead_letters import DEAD_LETTER_PREFIX
from plantwatch.plant.model import SensorNode

#: mosquitto 2.0 reads only 12-byte salts and 64-byte (SHA-512) hashes; anything else drops the user.
SALT_BYTES, HASH_BYTES = 12, 64
#: PBKDF2 rounds. mosquitto_passwd's 101 is cheap to brute-force from a leaked file; every
#: CONNECT costs the (single-threaded) broker one hash, ~7 ms at 10,000, so a reconnect storm
#: of 500 nodes is seconds, not minutes.
ITERATIONS = 10_000
#: A node's password is all that stands between the plant network and its topics.
MIN_PASSWORD = 16
#: MQTT's longest string, in UTF-8 bytes.
MAX_MQTT_STRING = 65535
#: Topic levels under a data topic's parent: the node's Last Will/birth, and what it is told to do.
#: First topic levels no node may publish under: the platform's own (dead letters).
RESERVED_FIRST_LEVELS = frozenset({DEAD_LETTER_PREFIX.split("/", 1)[0]})
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: The broker's own figures, which the broker exporter reads.
SYS_TOPICS = "$SYS/broker"
_HEADER = "# Rendered by plantwatch from the SensorNodes and their Secrets; edits are overwritten.\n"


class AclError(ValueError):
    """The gateway's identity cannot be rendered (a node's problem is a refusal instead)."""


@dataclass(frozen=True)
class Identity:
    """One broker user: the SensorNodes it speaks for (none: the gateway) and its literal grants."""

    username: str
    nodes: tuple[str, ...]
    publish: tuple[str, ...]
    read: tuple[str, ...]


@dataclass(frozen=True)
class BrokerAuth:
    """mosquitto's `password_file` and `acl_file` texts, who is in them, and the nodes left out and why."""

    password_file: str
    acl_file: str
    identities: tuple[Identity, ...]
    refused: Mapping[str, str]


def node_grants(node: SensorNode) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(topics the node may publish, topics it may read), literal; ValueError says why a topic cannot be granted."""
    topic = node.spec.payload.topic
    problem = topic_problem(topic)
    if problem:
        raise ValueError(f"spec.payload.topic {topic!r}: {problem}")
    if node.spec.payload.format == "sparkplug-b":
        try:
            t = sparkplug.parse_topic(topic)
        except sparkplug.SparkplugError:
            t = None
        if t is None or t.message_type not in ("NDATA", "DDATA") or (t.message_type == "DDATA") != (t.device is not None):
            raise ValueError(
                f"spec.payload.topic {topic!r}: a sparkplug-b node's topic is "
                f"{sparkplug.NAMESPACE}/<group>/NDATA/<edge node> or .../DDATA/<edge node>/<device>"
            )
        if not all((t.group, t.edge_node, t.device if t.device is not None else "x")):
            raise ValueError(f"spec.payload.topic {topic!r}: a Sparkplug group, edge node or device id is empty")
        # The edge node is the MQTT client: it births and dies for its devices too.
        publish = [sparkplug.topic(sparkplug.Topic(t.group, kind, t.edge_node)) for kind in ("NBIRTH", "NDATA", "NDEATH")]
        read = [sparkplug.topic(sparkplug.Topic(t.group, "NCMD", t.edge_node))]
        if t.device is not None:
            publish += [sparkplug.topic(sparkplug.Topic(t.group, kind, t.edge_node, t.device)) for kind in ("DBIRTH", "DDATA", "DDEATH")]
            read.append(sparkplug.topic(sparkplug.Topic(t.group, "DCMD", t.edge_node, t.device)))
        return tuple(publish), tuple(read)
    if topic.split("/", 1)[0] == sparkplug.NAMESPACE:
        raise ValueError(f"spec.payload.topic {topic!r}: {sparkplug.NAMESPACE}/ is the Sparkplug namespace, for sparkplug-b nodes only")
    if topic.rsplit("/", 1)[-1] in (STATUS_LEVEL, COMMAND_LEVEL):
        raise ValueError(
            f"spec.payload.topic {topic!r}: its last level names the node's own {STATUS_LEVEL}/{COMMAND_LEVEL} topic; "
            "publish readings on another, e.g. .../data"
        )
    return (topic, status_topic(topic)), (command_topic(topic),)


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be written literally into an ACL as one node's own; None when it can."""
    if not topic:
        return "empty"
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_MQTT_STRING:
        return f"longer than MQTT's {MAX_MQTT_STRING} bytes"
    if not topic.isprintable():
        return "holds a control, format or line-break character (accepted: printable characters)"
    if "+" in topic or "#" in topic:
        return "holds an MQTT wildcard ('+' or '#'); a node's topic is one concrete topic"
    if topic.startswith("$"):
        return "starts with '$', the broker's own topics ($SYS)"
    if topic != topic.strip():
        return "starts or ends with blanks, which mosquitto trims from ACL lines"
    if topic.split("/", 1)[0] in RESERVED_FIRST_LEVELS:
        return f"is under {', '.join(sorted(RESERVED_FIRST_LEVELS))}/, the platform's own topics (dead letters)"
    return None


def username_problem(username: str) -> str | None:
    """Why `username` cannot be a line of mosquitto's files; None when it can."""
    if not username:
        return "empty"
    if len(username.encode("utf-8", "surrogatepass")) > MAX_MQTT_STRING:
        return f"longer than MQTT's {MAX_MQTT_STRING} bytes"
    if not username.isprintable():
        return "holds a control, format or line-break character (accepted: printable characters)"
    if ":" in username:
        return "holds ':', the password file's separator"
    if "+" in username or "#" in username:
        return "holds '+' or '#' (a comment in mosquitto's files, a wildcard in its patterns)"
    if username.startswith("$"):
        return "starts with '$', reserved for the broker"
    if username != username.strip():
        return "starts or ends with blanks, which mosquitto trims"
    return None


def password_problem(password: str) -> str | None:
    """Why `password` cannot be an identity's password; None when it can."""
    if "\0" in password:
        return "holds a NUL character (mosquitto hashes only what comes before it)"
    if len(password) < MIN_PASSWORD:
        return f"has {len(password)} characters; at least {MIN_PASSWORD} are required"
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if size > MAX_MQTT_STRING:
        return f"longer than MQTT's {MAX_MQTT_STRING} bytes"
    return None


def hash_password(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    """mosquitto's `$7$<iterations>$<salt b64>$<hash b64>`: PBKDF2-HMAC-SHA512 over the UTF-8 password."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt has {len(salt)} bytes; mosquitto reads only {SALT_BYTES}")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@functools.lru_cache(maxsize=8192)
def password_matches(hashed: str, password: str) -> bool:
    """True when a `$7$` hash (as mosquitto_passwd writes it) is of `password`.

    Cached: the operator re-renders the whole file whenever any node changes, and checking
    every unchanged line again would cost a PBKDF2 per node each time (500 nodes: ~10 s).
    """
    parts = hashed.split("$")
    if len(parts) != 5 or parts[:2] != ["", "7"] or not parts[2].isdigit():
        return False
    try:
        salt, digest = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    if len(salt) != SALT_BYTES or len(digest) != HASH_BYTES or int(parts[2]) < 1:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]), HASH_BYTES), digest)


def parse_password_file(text: str) -> dict[str, str]:
    """{username: hash} as mosquitto 2.0 reads the file: `#` lines and lines without ':' skipped, blanks trimmed."""
    users: dict[str, str] = {}
    for line in text.split("\n"):
        if line.startswith("#") or ":" not in line:
            continue
        fields = [f for f in line.split(":") if f]  # strtok: empty fields vanish
        if len(fields) >= 2 and fields[0].strip():
            users[fields[0].strip()] = fields[1].strip()
    return users


def render_broker_auth(
    nodes: Sequence[SensorNode],
    credentials: Mapping[str, tuple[str, str]],
    gateway: tuple[str, str],
    *,
    exporter: tuple[str, str] | None = None,
    salt: Callable[[int], bytes] = os.urandom,
    iterations: int = ITERATIONS,
    previous_password_file: str | None = None,
) -> BrokerAuth:
    """The broker's password and ACL files for `nodes`.

    `credentials` maps a node's name to (username, password) from its Secret; a node
    missing there is refused. `gateway` is the gateway's (username, password), `exporter`
    the broker exporter's (read-only; None: no such user). With
    `previous_password_file`, a user whose password there still matches keeps its line
    (same salt), so an unchanged plant renders byte for byte the same files.
    Raises AclError when the gateway's or the exporter's identity is unusable.
    """
    gw_user, gw_password = gateway
    platform = {gw_user: "the gateway's"}
    for who, (user, password) in (("the gateway", gateway), ("the broker exporter", exporter or gateway)):
        for what, problem in (("username", username_problem(user)), ("password", password_problem(password))):
            if problem:
                raise AclError(f"{who}'s MQTT {what} {problem}")
    if exporter is not None:
        if exporter[0] == gw_user:
            raise AclError(f"the broker exporter's MQTT username {gw_user!r} is the gateway's: it needs its own, read-only")
        platform[exporter[0]] = "the broker exporter's"
    refused: dict[str, str] = {}
    grants: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {}  # node → (username, password, publish, read)
    for node in nodes:
        name = node.meta.name
        if not _K8S_NAME.match(name) or len(name) > 253:
            refused[name] = "the node's name is not a Kubernetes object name (lowercase RFC 1123 subdomain)"
            continue
        if name in credentials:
            username, password = credentials[name]
        elif node.spec.credentials is None:
            refused[name] = "spec.credentials.secretRef is not set: a node without its own identity cannot connect"
            continue
        else:
            refused[name] = f"no username/password read from Secret {node.spec.credentials.secret_ref.name!r}"
            continue
        problem = username_problem(username)
        if problem:
            refused[name] = f"the username in its Secret {problem}"
            continue
        problem = password_problem(password)
        if problem:
            refused[name] = f"the password in its Secret {problem}"
            continue
        if username in platform:
            refused[name] = f"its username is {platform[username]}"
            continue
        try:
            publish, read = node_grants(node)
        except ValueError as exc:
            refused[name] = str(exc)
            continue
        grants[name] = (username, password, publish, read)
    _refuse_shared(grants, refused)
    identities: list[tuple[Identity, str]] = []
    by_user: dict[str, list[str]] = defaultdict(list)
    for name, (username, *_) in grants.items():
        by_user[username].append(name)
    for username, names in sorted(by_user.items()):
        names.sort()
        publish = sorted({t for n in names for t in grants[n][2]})
        read = sorted({t for n in names for t in grants[n][3]})
        identities.append((Identity(username, tuple(names), tuple(publish), tuple(read)), grants[names[0]][1]))
    data_topics = [n.spec.payload.topic for n in nodes if n.meta.name in grants]
    gateway_identity = Identity(
        gw_user,
        (),
        tuple(sorted({f"{DEAD_LETTER_PREFIX}/#"} | {t for i, _ in identities for t in i.read})),
        tuple(sorted({t.split("/", 1)[0] + "/#" for t in data_topics})),
    )
    everyone = [(gateway_identity, gw_password), *identities]
    if exporter is not None:
        everyone.append((Identity(exporter[0], (), (), (f"{SYS_TOPICS}/#", *gateway_identity.read)), exporter[1]))
    previous = parse_password_file(previous_password_file) if previous_password_file else {}
    lines = []
    for identity, password in sorted(everyone, key=lambda e: e[0].username):
        old = previous.get(identity.username)
        keep = old is not None and old.startswith(f"$7${iterations}$") and password_matches(old, password)
        lines.append(f"{identity.username}:{old if keep else hash_password(password, salt(SALT_BYTES), iterations)}\n")
    return BrokerAuth(
        password_file=_HEADER + "".join(lines),
        acl_file=_HEADER + "".join(_acl_block(i) for i, _ in everyone),
        identities=tuple(i for i, _ in everyone),
        refused=dict(sorted(refused.items())),
    )


def _refuse_shared(grants: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]], refused: dict[str, str]) -> None:
    """Refuse nodes whose identity would be shared, or whose topics another identity holds too (both sides)."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for name, (username, *_) in grants.items():
        by_user[username].append(name)
    for username, names in by_user.items():
        if len(names) < 2:
            continue
        edges = {_edge_node(grants[n][2][0]) for n in names}
        if None in edges or len(edges) > 1:
            for n in names:
                others = ", ".join(o for o in sorted(names) if o != n)
                refused[n] = (
                    f"its username {username!r} is also {others}'s: each node needs its own Secret "
                    "(only sparkplug-b nodes of one edge node, one MQTT client, share one)"
                )
        elif len({grants[n][1] for n in names}) > 1:
            for n in names:
                refused[n] = f"it shares username {username!r} with {', '.join(o for o in sorted(names) if o != n)} under another password"
    holders: dict[str, set[str]] = defaultdict(set)
    for name, (_, _, publish, read) in grants.items():
        if name not in refused:
            for t in publish + read:
                holders[t].add(name)
    for topic, names in sorted(holders.items()):
        if len({grants[n][0] for n in names}) > 1:
            for n in sorted(names):
                refused.setdefault(
                    n, f"topic {topic!r} would be granted to {', '.join(o for o in sorted(names) if o != n)} too (another identity)"
                )
    for name in refused:
        grants.pop(name, None)


def _edge_node(first_publish: str) -> tuple[str, str] | None:
    """(group, edge node) of a sparkplug-b node, from the first topic it may publish (its NBIRTH)."""
    if not first_publish.startswith(sparkplug.NAMESPACE + "/"):
        return None
    t = sparkplug.parse_topic(first_publish)
    return t.group, t.edge_node


def _acl_block(identity: Identity) -> str:
    who = f"SensorNode {', '.join(identity.nodes)}" if identity.nodes else "the gateway" if identity.publish else "the broker exporter"
    lines = [f"\n# {who}\nuser {identity.username}\n"]
    lines += [f"topic write {t}\n" for t in identity.publish]
    lines += [f"topic read {t}\n" for t in identity.read]
    return "".join(lines)
