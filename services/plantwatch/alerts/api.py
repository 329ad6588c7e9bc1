"""The alerts API: list, get, acknowledge and silence alerts over HTTP, on the process's own port.

Served by the HealthServer of `plantwatch up` and `plantwatch serve ingest` (health.py's
`routes`), over the durable alert state (store/alert_state.py), JSON in and out:

    GET    /api/v1/alerts[?status=firing|resolved]
    GET    /api/v1/alerts/{fingerprint}
    GET    /api/v1/alerts/{fingerprint}/history
    POST   /api/v1/alerts/{fingerprint}/ack      {"by": ..., "comment": ...}
    POST   /api/v1/alerts/{fingerprint}/unack    {"by": ..., "comment": ...}
    GET    /api/v1/silences
    POST   /api/v1/silences                      {"matchers": [...], "endsAt" | "duration", ...}
    DELETE /api/v1/silences/{id}
    GET    /api/v1/readings?node=N[&since=EPOCH][&until=EPOCH][&sensor=S]   (CSV; alerts/readings_api.py)
    GET    /api/v1/readings/newest?node=N[&sensor=S]

A fingerprint is rule/node/sensor; its slashes may be sent URL-encoded (`%2F`) or plain:
a fingerprint always has three parts, so the path stays unambiguous either way (and the
Kubernetes API server's service proxy decodes `%2F` before it forwards).

Changes need `Authorization: Bearer <token>`, the token read from a Secret at start; with
no token configured they are refused. Reads need it too unless reads are opened. The API
server's service proxy consumes the Authorization header for its own authentication, so the
token may also come as `X-Plantwatch-Authorization: Bearer <token>` (`plantwatch alerts --kube`).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from plantwatch.alerts import readings_api
from plantwatch.alerts.lifecycle import Matcher, Silence
from plantwatch.contracts.times import iso, parse_timestamp
from plantwatch.health import Handler
from plantwatch.plant.model import duration_seconds
from plantwatch.secrets import SecretMissing, Secrets
from plantwatch.store.alert_state import AlertState, NotFound

PREFIX = "/api/v1/"
#: The header the token may come in when Authorization is taken (the Kubernetes API server's proxy).
PROXY_AUTH_HEADER = "X-Plantwatch-Authorization"
#: Largest request body read; acks and silences are a few hundred bytes.
MAX_BODY = 64 * 1024
ALERT_ACTIONS = ("history", "ack", "unack")
SILENCE_FIELDS = ("matchers", "startsAt", "endsAt", "duration", "createdBy", "comment")
MATCHER_FIELDS = ("name", "value", "isRegex", "isEqual")
ROUTES = (
    "GET /api/v1/alerts[?status=firing|resolved]",
    "GET /api/v1/alerts/{fingerprint}",
    "GET /api/v1/alerts/{fingerprint}/history",
    "POST /api/v1/alerts/{fingerprint}/ack",
    "POST /api/v1/alerts/{fingerprint}/unack",
    "GET /api/v1/silences",
    "POST /api/v1/silences",
    "DELETE /api/v1/silences/{id}",
    *readings_api.ROUTES,
)


class ApiError(Exception):
    """A request refused: the HTTP status and a message saying what was wrong and what is accepted."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class TokenRef:
    """The Secret key that holds the API token (`--api-token-secret NAME/KEY`); Secrets.get reads it."""

    name: str
    key: str

    def __str__(self) -> str:
        return f"Secret {self.name!r} key {self.key!r}"


# --- pure parts: routing, authorization, request bodies, JSON views ---


@dataclass(frozen=True)
class Route:
    #: list_alerts, alert, history, ack, unack, list_silences, add_silence, expire_silence, readings, newest_reading
    action: str
    #: The fingerprint or the silence id; "" for the lists.
    subject: str = ""

    @property
    def changes(self) -> bool:
        return self.action in ("ack", "unack", "add_silence", "expire_silence")


def route(method: str, path: str) -> Route:
    """The action a request asks for; ApiError 404 (no such path) or 405 (no such method there)."""
    parts = [unquote(p) for p in path.split("/")[3:]]  # "", "api", "v1", ...; each part decoded
    parts = [s for p in parts for s in p.split("/")]  # %2F decoded: a fingerprint's own slashes
    allowed: tuple[str, ...] = ()
    if parts == ["alerts"]:
        allowed, found = ("GET",), Route("list_alerts")
    elif len(parts) == 4 and parts[0] == "alerts" and all(parts[1:]):
        allowed, found = ("GET",), Route("alert", "/".join(parts[1:]))
    elif len(parts) == 5 and parts[0] == "alerts" and parts[4] in ALERT_ACTIONS and all(parts[1:4]):
        allowed = ("GET",) if parts[4] == "history" else ("POST",)
        found = Route(parts[4], "/".join(parts[1:4]))
    elif parts == ["silences"]:
        allowed = ("GET", "POST")
        found = Route("list_silences" if method == "GET" else "add_silence")
    elif len(parts) == 2 and parts[0] == "silences" and parts[1]:
        allowed, found = ("DELETE",), Route("expire_silence", parts[1])
    elif parts == ["readings"]:
        allowed, found = ("GET",), Route("readings")
    elif parts == ["readings", "newest"]:
        allowed, found = ("GET",), Route("newest_reading")
    else:
        raise ApiError(404, f"no such path {path!r}; the alerts API serves: " + "; ".join(ROUTES) + " (a fingerprint is rule/node/sensor)")
    if method not in allowed:
        raise ApiError(405, f"{method} is not served at {path!r}; it takes {' or '.join(allowed)}", {"Allow": ", ".join(allowed)})
    return found


def authorize(given: str | None, token: str | None, changes: bool, open_reads: bool, token_source: str) -> None:
    """Let the request through, or ApiError 401 (no credentials) / 403 (wrong ones, or none configured).

    `given` is the Authorization (or X-Plantwatch-Authorization) header; `token_source` names
    where the token comes from, for the messages (never the token itself).
    """
    if not changes and open_reads:
        return
    if token is None:
        if changes:
            raise ApiError(
                403,
                "changes are refused: this process has no API token. Start it with --api-token-secret NAME/KEY "
                "(a Secret whose key holds the token) and send Authorization: Bearer <token>",
            )
        raise ApiError(
            403,
            "reads need the API token, and this process has none: start it with --api-token-secret NAME/KEY, "
            "or open reads with --api-open-reads",
        )
    scheme, _, credentials = (given or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise ApiError(
            401,
            f"this needs Authorization: Bearer <token> (the token in {token_source}); "
            + ("no Authorization header was sent" if not given else "the header is not a Bearer token"),
            {"WWW-Authenticate": 'Bearer realm="plantwatch"'},
        )
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise ApiError(403, f"the bearer token is not this process's API token (the one in {token_source})")


_MATCHER_TEXT = re.compile(r"\s*([^=!~\s]+)\s*(=~|!~|!=|=)\s*(.*?)\s*")


def parse_matcher(text: str) -> Matcher:
    """`node=press-3`, `node!=press-3`, `severity=~warning|info`, `node!~press-.*` (a value may be "quoted")."""
    m = _MATCHER_TEXT.fullmatch(text)
    if m is None:
        raise ApiError(400, f"matcher {text!r}: expected LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX (e.g. node=press-3)")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return _checked(Matcher(name, value, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~")), text)


def matcher_from(raw: Any) -> Matcher:
    """A matcher as text (parse_matcher) or as Alertmanager's object {name, value, isRegex, isEqual}."""
    if isinstance(raw, str):
        return parse_matcher(raw)
    if not isinstance(raw, dict):
        raise ApiError(400, f"a matcher is text (node=press-3) or an object {{name, value, isRegex, isEqual}}, got {raw!r}")
    unknown = sorted(set(raw) - set(MATCHER_FIELDS))
    if unknown:
        raise ApiError(400, f"matcher {raw!r}: unknown fields {unknown}; accepted: {', '.join(MATCHER_FIELDS)}")
    name, value = raw.get("name"), raw.get("value")
    if not isinstance(name, str) or not name or not isinstance(value, str):
        raise ApiError(400, f"matcher {raw!r}: name (non-empty text) and value (text) are required")
    flags = {k: raw.get(k, d) for k, d in (("isRegex", False), ("isEqual", True))}
    for k, v in flags.items():
        if not isinstance(v, bool):
            raise ApiError(400, f"matcher {raw!r}: {k} must be true or false, got {v!r}")
    return _checked(Matcher(name, value, is_regex=flags["isRegex"], is_equal=flags["isEqual"]), raw)


def _checked(m: Matcher, given: Any) -> Matcher:
    if m.is_regex:
        try:
            re.compile(m.value)
        except re.error as exc:
            raise ApiError(400, f"matcher {given!r}: {m.value!r} is not a regular expression ({exc})") from None
    return m


def _time(body: dict[str, Any], key: str) -> float:
    raw = body[key]
    try:
        if not isinstance(raw, str):
            raise ValueError("not text")
        return parse_timestamp(raw)
    except ValueError:
        raise ApiError(400, f"{key} {raw!r}: expected an RFC 3339 time, e.g. 2025-03-01T14:00:00Z") from None


def silence_request(body: Any, now: float) -> tuple[list[Matcher], float, float, str, str]:
    """(matchers, starts_at, ends_at, created_by, comment) of a POST /api/v1/silences body."""
    if not isinstance(body, dict):
        raise ApiError(400, "a silence is a JSON object with matchers, endsAt or duration, createdBy and comment")
    unknown = sorted(set(body) - set(SILENCE_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown fields {unknown} in the silence; accepted: {', '.join(SILENCE_FIELDS)}")
    raw = body.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise ApiError(
            400, 'matchers: a non-empty list, of text ("node=press-3", "severity=~warning|info") or {name, value, isRegex, isEqual}'
        )
    matchers = [matcher_from(m) for m in raw]
    starts = _time(body, "startsAt") if body.get("startsAt") is not None else now
    if ("endsAt" in body) == ("duration" in body):
        raise ApiError(400, "give exactly one of endsAt (RFC 3339) and duration (e.g. 2h, 30m, 1h30m)")
    if "duration" in body:
        try:
            ends = starts + duration_seconds(str(body["duration"]))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    else:
        ends = _time(body, "endsAt")
    if ends <= max(starts, now):
        raise ApiError(
            400, f"the silence would end ({iso(ends)}) before it does anything: endsAt must be after startsAt and now ({iso(now)})"
        )
    who, comment = body.get("createdBy"), body.get("comment")
    if not isinstance(who, str) or not who.strip():
        raise ApiError(400, "createdBy: who creates the silence (non-empty text) is required")
    if not isinstance(comment, str) or not comment.strip():
        raise ApiError(400, "comment: why the silence (non-empty text) is required, so the next person on call knows")
    return matchers, starts, ends, who.strip(), comment.strip()


def ack_request(body: Any) -> tuple[str, str]:
    """(by, comment) of an ack or unack body."""
    if not isinstance(body, dict) or set(body) - {"by", "comment"}:
        raise ApiError(400, 'an ack or unack body is a JSON object {"by": "who", "comment": "why"} (comment optional)')
    by, comment = body.get("by"), body.get("comment", "")
    if not isinstance(by, str) or not by.strip():
        raise ApiError(400, 'by: who acknowledges (non-empty text) is required, e.g. {"by": "maria", "comment": "on my way"}')
    if not isinstance(comment, str):
        raise ApiError(400, f"comment must be text, got {comment!r}")
    return by.strip(), comment.strip()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def alert_json(a: Mapping[str, Any]) -> dict[str, Any]:
    """An alert as the API shows it (store/alert_state.py's row, times as RFC 3339)."""
    return {
        "fingerprint": a["fingerprint"],
        "rule": a["rule"],
        "node": a["node"],
        "sensor": a["sensor"],
        "severity": a["severity"],
        "status": a["status"],
        "value": a["value"],
        "summary": a["summary"],
        "startsAt": _iso(a["starts_at"]),
        "endsAt": _iso(a["ends_at"]),
        "ackedBy": a["acked_by"],
        "ackedAt": _iso(a["acked_at"]),
        "ackComment": a["ack_comment"],
    }


def history_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """One history line: when, which episode, what (firing, level, notification, delivery, acknowledged, ...), its detail."""
    detail = {k: v for k, v in event.items() if k not in ("at", "starts_at", "what")}
    return {"at": iso(event["at"]), "startsAt": _iso(event["starts_at"]), "what": event["what"], "detail": detail}


def silence_json(s: Silence, now: float) -> dict[str, Any]:
    state = "pending" if now < s.starts_at else "active" if s.active(now) else "expired"
    return {
        "id": s.id,
        "matchers": [{"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal} for m in s.matchers],
        "startsAt": iso(s.starts_at),
        "endsAt": iso(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": state,
    }


# --- the I/O: one request against the alert state ---


class AlertsApi:
    """Answers the alerts API's requests over one AlertState (mounted on a HealthServer at PREFIX)."""

    def __init__(
        self,
        state: AlertState,
        token: str | Callable[[], str] | None,
        open_reads: bool = False,
        token_source: str = "the configured Secret",
        clock: Callable[[], float] = time.time,
    ):
        """`token` is the token, or (a gateway whose Secret may not be mounted yet) a function that reads it
        at each request: while it raises SecretMissing, requests that need it get 503 saying so."""
        self.state = state
        self._token = token
        self.open_reads = open_reads
        self.token_source = token_source
        self.clock = clock

    def __repr__(self) -> str:  # the token stays out of every log line and traceback
        return f"AlertsApi(token={'set' if self._token else 'none'}, open_reads={self.open_reads})"

    def __call__(self, h: Handler) -> None:
        try:
            body = _read_body(h)  # always read, so a kept-alive connection stays in step
            split = urlsplit(h.path)
            r = route(h.command, split.path)
            given = h.headers.get("Authorization") or h.headers.get(PROXY_AUTH_HEADER)
            needed = r.changes or not self.open_reads
            authorize(given, self._current_token() if needed else None, r.changes, self.open_reads, self.token_source)
            if r.action in ("readings", "newest_reading"):
                self._readings(h, r, split.query)
                return
            code, out = self._answer(r, parse_qs(split.query), body)
        except ApiError as exc:
            h.send_response(exc.status)
            for k, v in exc.headers.items():
                h.send_header(k, v)
            payload = json.dumps({"error": str(exc)}).encode()
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        h.send_json(code, out)

    def _readings(self, h: Handler, r: Route, query: str) -> None:
        """Answer a readings route (alerts/readings_api.py) from the store the alert state is kept in."""
        try:
            q = readings_api.readings_query(parse_qs(query, keep_blank_values=True), times=r.action == "readings")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            if r.action == "readings":
                readings_api.send_readings(h, self.state.path, q)
            else:
                h.send_json(200, readings_api.newest_json(self.state.path, q))
        except ValueError as exc:  # the store could not be read: raised before anything was sent
            raise ApiError(500, str(exc)) from None

    def _current_token(self) -> str | None:
        if not callable(self._token):
            return self._token
        try:
            token = self._token()
        except SecretMissing as exc:
            raise ApiError(
                503, f"the API token is not readable yet ({exc}); the Secret may not be mounted yet", {"Retry-After": "10"}
            ) from None
        if not token:
            raise ApiError(503, f"the API token in {self.token_source} is empty")
        return token

    def _answer(self, r: Route, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        now = self.clock()
        try:
            if r.action == "list_alerts":
                status = query.get("status", [None])[-1]
                if status not in (None, "firing", "resolved"):
                    raise ApiError(400, f"status={status!r}: accepted: firing, resolved (or no status for both)")
                return 200, [alert_json(a) for a in self.state.alerts(status)]
            if r.action == "alert":
                return 200, alert_json(self.state.alert(r.subject))
            if r.action == "history":
                return 200, [history_json(e) for e in self.state.alert_history(r.subject)]
            if r.action in ("ack", "unack"):
                by, comment = ack_request(_json(body))
                change = self.state.ack if r.action == "ack" else self.state.unack
                return 200, alert_json(change(r.subject, by, comment, now))
            if r.action == "list_silences":
                return 200, [silence_json(s, now) for s in self.state.silences()]
            if r.action == "add_silence":
                matchers, starts, ends, who, comment = silence_request(_json(body), now)
                return 201, silence_json(self.state.add_silence(matchers, starts, ends, who, comment, now), now)
            silence = self.state.expire_silence(r.subject, now)
            return 200, silence_json(silence, now) | {"status": "expired", "endsAt": iso(min(silence.ends_at, now))}
        except NotFound as exc:
            raise ApiError(404, exc.args[0] if exc.args else str(exc)) from None


def _read_body(h: Handler) -> bytes:
    try:
        length = int(h.headers.get("Content-Length") or 0)
    except ValueError:
        raise ApiError(400, "Content-Length is not a number") from None
    if length > MAX_BODY:
        h.close_connection = True  # the body is left unread
        raise ApiError(413, f"the body is {length} bytes; at most {MAX_BODY} are accepted")
    return h.rfile.read(length) if length > 0 else b""


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON ({exc}); send a JSON object with Content-Type: application/json") from None


def from_secret(state: AlertState, secrets: Secrets, ref: TokenRef | None, open_reads: bool, wait: bool = False) -> AlertsApi:
    """The API with its token read from `ref` (SecretMissing when it is not there or empty); no ref: no token.

    With `wait` (a gateway in a cluster, its Secret an optional volume the kubelet may fill later)
    the token is read at each request instead, and the API answers 503 until it is there.
    """
    if ref is not None and wait:
        return AlertsApi(state, lambda: secrets.text(ref), open_reads, str(ref))
    token = secrets.text(ref) if ref is not None else None
    if ref is not None and not token:
        raise SecretMissing(f"{ref} (the API token) is empty")
    return AlertsApi(state, token, open_reads, str(ref) if ref is not None else "no Secret")
