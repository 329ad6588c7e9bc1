"""Structured logs: one JSON object per line, extra fields kept, secrets never written."""

from __future__ import annotations

import json
import logging

from plantwatch.logs import JsonFormatter, LogLimiter, mask


def record(msg: str, **extra) -> logging.LogRecord:
    r = logging.makeLogRecord({"name": "plantwatch.ingest", "levelno": logging.WARNING, "levelname": "WARNING", "msg": msg})
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_json_lines_carry_extra_fields_and_mask_secrets():
    line = JsonFormatter().format(
        record("connecting to mqtt://gw:s3cret@broker:1883", correlation_id="c-42", node="esp32-press-01", mqtt_password="hunter2")
    )
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "plantwatch.ingest"
    assert entry["message"] == "connecting to mqtt://gw:***@broker:1883"
    assert entry["correlation_id"] == "c-42" and entry["node"] == "esp32-press-01"
    assert entry["mqtt_password"] == "***"
    assert "s3cret" not in line and "hunter2" not in line


def test_mask_key_value_pairs():
    assert mask("password=abc token: xyz user=bob") == "password=*** token: *** user=bob"


def test_log_limiter_logs_once_per_key_per_interval_and_stays_bounded():
    limiter = LogLimiter(interval_s=60.0, max_keys=3)
    assert limiter.allow(("a", "t"), 0.0)
    assert not limiter.allow(("a", "t"), 30.0)
    assert limiter.allow(("b", "t"), 30.0)
    assert limiter.allow(("a", "t"), 61.0)
    for i in range(10):
        assert limiter.allow((f"n{i}", "t"), 70.0)
    # ("a", "t") was forgotten to make room, so it may be logged again within its interval.
    assert limiter.allow(("a", "t"), 71.0)


def test_url_credentials_are_masked_whatever_the_user_or_password_holds():
    from plantwatch.logs import mask

    for url, shown in [
        ("mqtt://:s3cret@broker:1883", "mqtt://:***@broker:1883"),  # a password without a user name
        ("mqtt://gw:p@ss:w0rd@broker", "mqtt://gw:***@broker"),  # `@` and `:` in the password
        ("mqtts://gw:s3cret@broker and more", "mqtts://gw:***@broker and more"),
        ("mqtt://broker:1883", "mqtt://broker:1883"),  # no credentials: unchanged
    ]:
        assert mask(url) == shown
