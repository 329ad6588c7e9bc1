"""The README's timestamp paragraph (Payload formats) pinned to the gateway: every form it shows is read as the
instant it means, the refused one is refused, and the seconds/milliseconds boundary is the one the code uses.

A form added to the paragraph without a line here fails the test, and so does one removed."""

from __future__ import annotations

import json
import re

import pytest

from plantwatch.contracts.times import parse_timestamp
from plantwatch.ingest.validate import CompiledNode, check_message
from tests.conftest import ROOT

T = 1767600000.0  # 2026-01-05T08:00:00Z
#: Each form the paragraph shows (as written there, in backticks) and the instant it means; None: refused.
FORMS = {
    '"2026-01-05T08:00:00Z"': T,
    '"2026-01-05T09:00:00+01:00"': T,
    '"2026-01-05T08:00:00.250Z"': T + 0.25,
    '"2026-01-05T08:00:00"': T,
    "1767600000": T,
    "1767600000.25": T + 0.25,
    "1767600000250": T + 0.25,
    '"1767600000"': None,
}
BOUNDARY = "100000000000"


def _paragraph() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"\nTimestamps in the JSON formats.*?(?=\n\n)", readme, re.S)
    assert found, "README.md: the paragraph 'Timestamps in the JSON formats ...' under Payload formats is gone"
    return found[0]


def test_the_paragraph_shows_exactly_the_forms_pinned_here():
    shown = [s for s in re.findall(r"`([^`]+)`", _paragraph()) if s[0] in '"0123456789']
    assert sorted(set(shown) - {BOUNDARY}) == sorted(FORMS)


@pytest.mark.parametrize(("form", "instant"), FORMS.items())
def test_each_documented_form_is_read_by_the_gateway_as_documented(plant, form, instant):
    node = CompiledNode.of(next(n for n in plant.nodes if n.spec.payload.format == "esp32-json"))
    payload = json.dumps({"device_id": node.device_id, "timestamp": json.loads(form), "temperature_c": 21.5}).encode()
    readings, rejections = check_message(node, payload, now=T + 60)
    if instant is None:
        assert [r.reason for r in rejections] == ["bad_timestamp"]
    else:
        assert rejections == [] and {r.ts for r in readings} == {instant}


def test_numbers_above_the_documented_boundary_are_milliseconds():
    assert f"`{BOUNDARY}`" in _paragraph()
    assert parse_timestamp(int(BOUNDARY)) == float(BOUNDARY)  # the boundary itself: seconds
    assert parse_timestamp(int(BOUNDARY) + 1) == (int(BOUNDARY) + 1) / 1000
