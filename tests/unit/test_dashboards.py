"""The Grafana dashboards: generated as checked in, reading only documented series and labels, shipped by the chart.

tests/integration/test_dashboards.py asks a real Prometheus every query; this checks what needs none.
"""

from __future__ import annotations

import json
import re

import yaml

from plantwatch.monitoring.dashboards import dashboards, panel_queries, render
from tests.integration.test_prometheus_scrape import METRIC, base
from tests.unit.test_chart import CHART, helm, rendered, sample_values
from tests.unit.test_metrics_reference import DOC, ROW

DASHBOARDS = CHART / "dashboards"
#: Labels every scraped series has beside its own: the target's, and a histogram's buckets.
SCRAPE_LABELS = {"namespace", "job", "instance", "le"}


def documented() -> dict[str, set[str]]:
    """Each series docs/monitoring.md lists (histograms by family name), with its labels."""
    return {name: {x.strip() for x in labels.split(",") if x.strip()} for name, _, labels in ROW.findall(DOC.read_text())}


def test_the_checked_in_dashboards_are_what_the_generator_writes():
    models = dashboards()
    assert {f.name for f in DASHBOARDS.glob("*.json")} == set(models)
    for name, model in models.items():
        assert (DASHBOARDS / name).read_text() == render(model), f"{name} is stale: run `make generate`"
    titles = {m["title"].removeprefix("Plantwatch / ") for m in models.values()}
    assert titles == {
        "Plant overview",
        "Node sensors",
        "Temperature",
        "Vibration",
        "Current and energy",
        "Alerts",
        "Dead letters",
        "Broker",
        "Pipeline",
        "Inference",
    }
    assert len({m["uid"] for m in models.values()}) == len(models)


def test_every_query_reads_documented_series_and_labels_of_the_selected_plant():
    docs = documented()
    wrong = []
    for name, model in dashboards().items():
        for panel, target in panel_queries(model):
            expr, where = target["expr"], f"{name} / {panel['title']}: {target['expr']}"
            metrics = {base(m) for m in METRIC.findall(expr)} - {"up"}
            wrong += [f"{where}: {m} is not in docs/monitoring.md" for m in metrics - docs.keys()]
            known = SCRAPE_LABELS.union(*(docs.get(m, set()) for m in metrics))
            grouped = {x.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for x in group.split(",")}
            shown = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            wrong += [f"{where}: label {x} is not one of {sorted(known)}" for x in (grouped | shown) - known]
            if 'namespace="$namespace"' not in expr:
                wrong.append(f"{where}: does not select the plant's namespace")
    assert wrong == []


def test_the_node_dashboard_is_templated_by_node():
    model = dashboards()["node-sensors.json"]
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource", "namespace", "node"]
    assert all('node="$node"' in t["expr"] for _, t in panel_queries(model))


def test_the_chart_ships_each_dashboard_as_a_configmap_for_grafanas_sidecar(tmp_path):
    maps = [d for d in rendered(tmp_path, {}) if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]]
    assert len(maps) == len(dashboards())
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        [(key, text)] = cm["data"].items()
        assert json.loads(text) == json.loads((DASHBOARDS / key.removeprefix("plantwatch-")).read_text())
    custom = {"label": "dashboards.example.com/load", "labelValue": "yes", "annotations": {"grafana_folder": "Plantwatch"}}
    cm = next(d for d in rendered(tmp_path, {"monitoring": {"dashboards": custom}}) if "-dashboard-" in d["metadata"]["name"])
    assert cm["metadata"]["labels"]["dashboards.example.com/load"] == "yes" and "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Plantwatch"}
    for off in ({"dashboards": {"enabled": False}}, {"enabled": False}):
        assert not [d for d in rendered(tmp_path, {"monitoring": off}) if "-dashboard-" in d["metadata"]["name"]]


def test_the_values_schema_refuses_a_label_kubernetes_would_refuse(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"monitoring": {"dashboards": {"label": "grafana dashboard"}}}))
    result = helm("template", "line1", str(CHART), "-f", sample_values(tmp_path), "-f", str(path), check=False)
    assert result.returncode != 0 and "/monitoring/dashboards/label" in result.stderr, result.stderr
