"""The chart's Fluent Bit configuration (logging.fluentBit): rendered only when asked, for the release's namespace."""

from __future__ import annotations

import re

import yaml

from tests.unit.test_chart import CHART, helm


def fluent_bit(*sets: str, check: bool = True):
    args = [a for s in sets for a in ("--set", s)]
    return helm(
        "template", "line1", str(CHART), "-n", "plant-a", "--show-only", "templates/logging-fluentbit-configmap.yaml", *args, check=check
    )


def test_off_by_default():
    assert "logging-fluentbit" not in helm("template", "line1", str(CHART), "-n", "plant-a").stdout


def test_it_tails_the_namespaces_containers_and_parses_the_json_lines_its_parsers_define():
    data = yaml.safe_load(fluent_bit("logging.fluentBit.enabled=true").stdout)["data"]
    conf, parsers = data["fluent-bit.conf"], data["parsers.conf"]
    assert re.search(r"Path\s+/var/log/containers/\*_plant-a_\*\.log", conf)
    used = re.search(r"Merge_Parser\s+(\S+)", conf)[1]
    assert re.search(rf"Name\s+{used}\n\s+Format\s+json\n\s+Time_Key\s+time", parsers)
    assert re.search(r"\[OUTPUT\]\s+Name\s+stdout\s+Match\s+plantwatch\.\*", conf)


def test_outputs_are_the_users_and_must_hold_an_output_section():
    es = "[OUTPUT]\n    Name es\n    Match plantwatch.*\n    Host es.logging\n"
    conf = yaml.safe_load(fluent_bit("logging.fluentBit.enabled=true", f"logging.fluentBit.outputs={es}").stdout)["data"]["fluent-bit.conf"]
    assert "Host es.logging" in conf and "Name stdout" not in conf
    refused = fluent_bit("logging.fluentBit.enabled=true", "logging.fluentBit.outputs=stdout", check=False)
    assert refused.returncode != 0 and "/logging/fluentBit/outputs" in refused.stderr and "OUTPUT" in refused.stderr
