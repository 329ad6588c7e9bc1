"""The alerts API's pure parts: routes, authorization, matchers and silence bodies; the client's paths; the tables."""

from __future__ import annotations

import pytest

from plantwatch.alerts.api import ApiError, Route, authorize, matcher_from, parse_matcher, route, silence_request
from plantwatch.alerts.client import GATEWAY_PORT_NAME, GATEWAY_SERVICE, alert_path, proxy_path
from plantwatch.alerts.lifecycle import Matcher
from plantwatch.alerts.tables import age, table
from plantwatch.contracts.times import parse_timestamp
from plantwatch_operator.config import Config
from plantwatch_operator.render import render_ingestion

FP = "machine-overtemperature/esp32-press-01/temperature"
NOW = parse_timestamp("2025-03-01T12:00:00Z")


@pytest.mark.parametrize("encoded", [True, False])
def test_a_fingerprint_routes_encoded_or_plain(encoded):
    fp = FP.replace("/", "%2F") if encoded else FP
    assert route("GET", f"/api/v1/alerts/{fp}") == Route("alert", FP)
    assert route("GET", f"/api/v1/alerts/{fp}/history") == Route("history", FP)
    assert route("POST", f"/api/v1/alerts/{fp}/ack") == Route("ack", FP)
    assert route("POST", f"/api/v1/alerts/{fp}/unack").changes


def test_routes_refuse_unknown_paths_and_methods():
    assert route("GET", "/api/v1/alerts") == Route("list_alerts")
    assert route("POST", "/api/v1/silences") == Route("add_silence")
    assert route("DELETE", "/api/v1/silences/abc") == Route("expire_silence", "abc")
    with pytest.raises(ApiError) as e:
        route("GET", "/api/v1/alerts/rule/node")  # two parts: not a fingerprint
    assert e.value.status == 404 and "rule/node/sensor" in str(e.value)
    with pytest.raises(ApiError) as e:
        route("DELETE", f"/api/v1/alerts/{FP}")
    assert e.value.status == 405 and e.value.headers == {"Allow": "GET"}
    with pytest.raises(ApiError) as e:
        route("GET", f"/api/v1/alerts/{FP}/ack")
    assert e.value.status == 405


def test_authorization():
    authorize("Bearer tok", "tok", changes=True, open_reads=False, token_source="s")
    authorize(None, None, changes=False, open_reads=True, token_source="s")
    authorize(None, "tok", changes=False, open_reads=True, token_source="s")
    cases = [
        (None, "tok", True, False, 401, "no Authorization header"),
        ("Basic dXNlcg==", "tok", False, False, 401, "not a Bearer token"),
        ("Bearer nope", "tok", True, True, 403, "not this process's API token"),
        ("Bearer tok", None, True, True, 403, "--api-token-secret"),
        (None, None, False, False, 403, "--api-open-reads"),
    ]
    for given, token, changes, open_reads, status, says in cases:
        with pytest.raises(ApiError) as e:
            authorize(given, token, changes, open_reads, "Secret 'api' key 'token'")
        assert (e.value.status, says in str(e.value)) == (status, True), (given, token, str(e.value))
        assert "tok" not in str(e.value).replace("token", "")


def test_matchers_as_text_and_as_objects():
    assert parse_matcher("node=press-3") == Matcher("node", "press-3")
    assert parse_matcher("node!=press-3") == Matcher("node", "press-3", is_equal=False)
    assert parse_matcher("severity=~warning|info") == Matcher("severity", "warning|info", is_regex=True)
    assert parse_matcher('node!~"press-.*"') == Matcher("node", "press-.*", is_regex=True, is_equal=False)
    assert parse_matcher("plantwatch.io/line=line-1") == Matcher("plantwatch.io/line", "line-1")
    assert matcher_from({"name": "node", "value": "a", "isRegex": False, "isEqual": False}) == Matcher("node", "a", is_equal=False)
    for bad, says in [
        ("node", "expected LABEL=VALUE"),
        ("=x", "expected LABEL=VALUE"),
        ("node=~(", "not a regular expression"),
        ({"name": "node"}, "value (text) are required"),
        ({"name": "node", "value": "a", "regex": True}, "unknown fields ['regex']"),
        ({"name": "node", "value": "a", "isRegex": "yes"}, "true or false"),
        (3, "is text"),
    ]:
        with pytest.raises(ApiError, match=None) as e:
            matcher_from(bad)
        assert e.value.status == 400 and says in str(e.value), (bad, str(e.value))


def test_silence_bodies():
    body = {"matchers": ["node=a"], "duration": "1h30m", "createdBy": " sam ", "comment": "bench"}
    assert silence_request(body, NOW) == ([Matcher("node", "a")], NOW, NOW + 5400, "sam", "bench")
    later = {**body, "startsAt": "2025-03-01T13:00:00Z"}
    del later["duration"]
    later["endsAt"] = "2025-03-01T14:00:00+00:00"
    assert silence_request(later, NOW)[1:3] == (NOW + 3600, NOW + 7200)
    for change, says in [
        ({"matchers": []}, "non-empty list"),
        ({"endsAt": "2025-03-01T14:00:00Z"}, "exactly one of endsAt"),
        ({"duration": "90 minutes"}, "expected integers with units"),
        ({"duration": None, "endsAt": "tomorrow"}, "exactly one"),
        ({"createdBy": ""}, "createdBy"),
        ({"comment": None}, "comment"),
        ({"starts_at": "x"}, "unknown fields ['starts_at']"),
    ]:
        with pytest.raises(ApiError) as e:
            silence_request({**body, **change}, NOW)
        assert e.value.status == 400 and says in str(e.value), (change, str(e.value))
    past = {k: v for k, v in body.items() if k != "duration"} | {"endsAt": "2025-03-01T11:00:00Z"}
    with pytest.raises(ApiError, match="before it does anything"):
        silence_request(past, NOW)
    with pytest.raises(ApiError, match="RFC 3339"):
        silence_request({k: v for k, v in body.items() if k != "duration"} | {"endsAt": "tomorrow"}, NOW)


def test_client_paths_encode_the_fingerprint_and_name_the_operators_gateway_service():
    assert alert_path(FP, "ack") == "/api/v1/alerts/machine-overtemperature%2Fesp32-press-01%2Ftemperature/ack"
    assert proxy_path("plant-a", "/api/v1/alerts") == "/api/v1/namespaces/plant-a/services/plantwatch-gateway:http/proxy/api/v1/alerts"
    rendered = render_ingestion("plant-a", [], Config(image="plantwatch:test", broker_url="mqtt://broker:1883"))
    service = next(o for o in rendered if o["kind"] == "Service")
    assert service["metadata"]["name"] == GATEWAY_SERVICE
    assert GATEWAY_PORT_NAME in [p["name"] for p in service["spec"]["ports"]]


def test_tables():
    assert table(("A", "BB"), [("xyz", None)]) == "A    BB\nxyz  -"
    assert age("2025-03-01T11:56:48Z", NOW) == "3m12s ago"
    assert age("2025-03-01T10:00:00Z", NOW) == "2h ago"
    assert age("2025-03-01T12:00:00Z", NOW) == "0s ago"


def test_a_gateway_whose_token_secret_is_not_mounted_yet_answers_503_until_it_is(tmp_path):
    """The Secret is an optional volume: the gateway keeps ingesting and its API waits, then reads it."""
    import json
    import urllib.error
    import urllib.request

    from plantwatch.alerts.api import PREFIX, TokenRef, from_secret
    from plantwatch.health import HealthServer
    from plantwatch.secrets import Secrets
    from plantwatch.store.alert_state import AlertState

    api = from_secret(AlertState(tmp_path / "p.db"), Secrets(mount_dir=tmp_path / "secrets"), TokenRef("api", "token"), False, wait=True)
    server = HealthServer(0, healthy=lambda: True, ready=lambda: True, routes={PREFIX: api})
    server.start()

    def get() -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}{PREFIX}alerts", headers={"Authorization": "Bearer s3cret"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["error"]

    try:
        code, error = get()
        assert code == 503 and "Secret 'api' has no key 'token'" in error and "not be mounted yet" in error
        (tmp_path / "secrets" / "api").mkdir(parents=True)
        (tmp_path / "secrets" / "api" / "token").write_text("s3cret\n")  # what the kubelet writes, later
        code, body = get()
        assert (code, json.loads(body)) == (200, [])
    finally:
        server.stop()
