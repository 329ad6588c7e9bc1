"""docs/monitoring.md's metrics reference names every metric the code registers, with its labels and type.

Every module of plantwatch and plantwatch_operator is imported, so each metric defined at import time is in
prometheus_client's default registry; the doc's table rows are compared with it both ways. The broker
exporter's series live in the exporter's own registry and its own section of the doc.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import plantwatch
import plantwatch_operator
from tests.conftest import ROOT

DOC = ROOT / "docs" / "monitoring.md"
ROW = re.compile(r"^\| `(plantwatch_\w+)` \| (counter|gauge|histogram) \|([\w, ]*)\|", re.M)


def registered() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each plantwatch metric as stored (counters with _total): (type, label names)."""
    for package in (plantwatch, plantwatch_operator):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):  # __main__ runs the program
                importlib.import_module(module.name)
    found = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 (the label names are kept nowhere public)
        if isinstance(collector, MetricWrapperBase) and collector._name.startswith("plantwatch_"):
            name = collector._name + ("_total" if collector._type == "counter" else "")
            found[name] = (collector._type, tuple(collector._labelnames))
    return found


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = ROW.findall(DOC.read_text())
    return {
        name: (kind, tuple(label.strip() for label in labels.split(",") if label.strip()))
        for name, kind, labels in rows
        if not name.startswith("plantwatch_broker_")
    }


def test_every_registered_metric_is_documented_with_its_type_and_labels():
    code, doc = registered(), documented()
    assert len(code) >= 20  # the import walk found the metric modules
    assert {n: code[n] for n in code.keys() - doc.keys()} == {}, "metrics missing from docs/monitoring.md"
    assert {n: doc[n] for n in doc.keys() - code.keys()} == {}, "docs/monitoring.md names metrics the code does not have"
    assert {n: (doc[n], code[n]) for n in code if doc[n] != code[n]} == {}, "type or labels differ (doc, code)"
