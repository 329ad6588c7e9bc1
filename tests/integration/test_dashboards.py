"""Every panel of the chart's Grafana dashboards asked of a real Prometheus scraping a running plant.

Prometheus (Debian's) scrapes `plantwatch up --simulate` (readings, bad messages, an overheating press, a
silent node), `serve inference` (asked to score, as a gateway in Kubernetes would) and `serve
broker-exporter` every second. Each dashboard's template variables take the first value their own query
finds, as Grafana's do, and every query of every panel must return data. What each panel would plot is
drawn into one PNG per dashboard, in $PLANTWATCH_ARTIFACTS (or the test's temporary folder).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import matplotlib
import numpy as np
import yaml
from PIL import Image

from plantwatch.inference.client import RemoteModel
from plantwatch.monitoring.dashboards import panel_queries
from plantwatch.mqtt.broker import free_port, start_mosquitto
from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.support.prometheus import Prometheus, wait_until

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DASHBOARDS = ROOT / "charts" / "plantwatch" / "dashboards"
NAMESPACE = "plant-a"
#: Grafana's $__rate_interval for a 1 s scrape is 4 s; a little more rides over a late scrape.
RATE_INTERVAL = "10s"
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def variables(model: dict, prometheus: Prometheus) -> dict[str, str]:
    """Each query variable's first value, its query run the way Grafana runs `label_values(selector, label)`."""
    values = {"namespace": NAMESPACE}
    for v in model["templating"]["list"]:
        if v["type"] != "query":
            continue
        selector, label = LABEL_VALUES.match(v["query"]).groups()
        found = prometheus.get(f"label/{label}/values?" + urllib.parse.urlencode({"match[]": substitute(selector, values, 0)}))
        assert found, f"dashboard {model['uid']}: variable {v['name']} ({v['query']}) has no values"
        values[v["name"]] = sorted(found)[0]
    return values


def substitute(expr: str, values: dict[str, str], range_s: int) -> str:
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range_s", str(range_s)).replace("$__range", f"{range_s}s")


def legend(fmt: str, labels: dict[str, str], title: str) -> str:
    """Grafana's legend: the format's {{label}}s filled in, else the labels that tell series apart, else the panel's title."""
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or title
    return ", ".join(f"{k}={v}" for k, v in labels.items() if k not in ("__name__", "instance", "job", "namespace")) or title


def draw(model: dict, results: dict[tuple[int, str], list[dict]], start: float, path: Path) -> None:
    """One subplot per panel: lines for graphs and stats, a value histogram over time for the heatmap, bars for the rest."""
    panels = [p for p in model["panels"] if p.get("targets")]
    cols = 2
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(14, 3.2 * math.ceil(len(panels) / cols)), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=10)
        series = [
            (legend(t.get("legendFormat", ""), s["metric"], panel["title"]), s)
            for t in panel["targets"]
            for s in results[(panel["id"], t["refId"])]
        ]
        if panel["type"] == "heatmap":
            points = np.array([(float(t), float(v)) for _, s in series for t, v in s["values"]])
            ax.hist2d(points[:, 0] - start, points[:, 1], bins=(30, 12), cmap="inferno")
            ax.set_xlabel("seconds")
        elif panel["type"] in ("bargauge", "table"):
            ax.barh([name for name, _ in series], [float(s["value"][1]) for _, s in series])
            ax.tick_params(labelsize=7)
        else:
            for name, s in series:
                ts = np.array([(float(t), float(v)) for t, v in s["values"]])
                ax.plot(ts[:, 0] - start, ts[:, 1], label=name)
            if len(series) <= 8:
                ax.legend(fontsize=6, loc="upper left")
        ax.text(1.0, 1.02, panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""), transform=ax.transAxes, ha="right", fontsize=7)
    fig.suptitle(model["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def test_every_dashboard_panel_returns_data_from_a_real_prometheus_and_is_drawn(tmp_path):
    artifacts = Path(os.environ.get("PLANTWATCH_ARTIFACTS", tmp_path)) / "dashboards"
    artifacts.mkdir(parents=True, exist_ok=True)
    broker = start_mosquitto(sys_interval=1)
    # the sample plant with its detector's window shortened from 30 readings to 10, so that scores come within the test
    plant = tmp_path / "plant"
    plant.mkdir()
    for f in EXAMPLE_PLANT.glob("*.yaml"):
        (plant / f.name).write_text(f.read_text().replace("window: 30", "window: 10"))
    assert "window: 10" in (plant / "detectors.yaml").read_text()
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(
        base64.b64decode(yaml.safe_load((EXAMPLE_PLANT / "bearing-wear-model.yaml").read_text())["binaryData"]["model.onnx"])
    )
    ports = {job: free_port() for job in ("gateway", "inference", "broker-exporter")}
    cli = (sys.executable, "-m", "plantwatch.cli")
    commands = {
        "gateway": [*cli, "up", "-f", str(plant), "--broker", broker.url, "--simulate", "--duration", "120"]
        + ["--http-port", str(ports["gateway"]), "--db", str(tmp_path / "plant.db")],
        "inference": [*cli, "serve", "inference", "--model-name", "bearing-wear", "--model", str(model_file)]
        + ["--http-port", str(ports["inference"])],
        "broker-exporter": [*cli, "serve", "broker-exporter", "--broker", broker.url, "--host", "127.0.0.1"]
        + ["--port", str(ports["broker-exporter"]), "--topic-pattern", "sensors/+/+/data"],
    }
    prometheus = Prometheus(tmp_path, {job: f"127.0.0.1:{ports[job]}" for job in commands}, {"namespace": NAMESPACE})
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands.values()]
    models = {f.name: json.loads(f.read_text()) for f in sorted(DASHBOARDS.glob("*.json"))}
    try:
        start = time.time()
        prometheus.wait_targets_up()
        scorer = RemoteModel(f"http://127.0.0.1:{ports['inference']}", "bearing-wear")
        width = scorer.metadata()["inputs"][0]["shape"][-1]
        query = "query?query=" + urllib.parse.quote(f'plantwatch_alerts_firing{{namespace="{NAMESPACE}"}} > 0')

        def scored_until_an_alert_fires():
            scorer(np.zeros((4, width)))  # the gateway's requests, one batch per poll
            return prometheus.get(query)["result"]

        wait_until("the simulated plant's overheating press firing", scored_until_an_alert_fires)

        def results(name: str, model: dict) -> dict[tuple[int, str], list[dict]]:
            now = time.time()
            values, out = variables(model, prometheus), {}
            for panel, target in panel_queries(model):
                expr = substitute(target["expr"], values, int(now - start))
                if target.get("instant"):
                    out[(panel["id"], target["refId"])] = prometheus.get("query?" + urllib.parse.urlencode({"query": expr, "time": now}))[
                        "result"
                    ]
                else:
                    span = {"query": expr, "start": start, "end": now, "step": 1}
                    out[(panel["id"], target["refId"])] = prometheus.get("query_range?" + urllib.parse.urlencode(span))["result"]
            return out

        def empty(answers: dict[str, dict]) -> list[str]:
            return [
                f"{name} / {panel['title']} / {target['refId']}: {target['expr']}"
                for name, model in models.items()
                for panel, target in panel_queries(model)
                if not answers[name][(panel["id"], target["refId"])]
            ]

        # a rate needs two scrapes in its window and the exporter's $SYS figures a broker report: a few seconds
        deadline = time.monotonic() + 30
        while True:
            answers = {name: results(name, model) for name, model in models.items()}
            if not empty(answers) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert empty(answers) == [], "panels whose query returns no data"
        for name, model in models.items():
            draw(model, answers[name], start, artifacts / name.replace(".json", ".png"))
    finally:
        prometheus.stop()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        broker.stop()
    print(f"dashboards drawn in {artifacts}")
    for name in models:
        png = Image.open(artifacts / name.replace(".json", ".png")).convert("RGB")
        assert png.width > 400 and png.height > 150, f"{name}: {png.size}"
        assert len(png.getcolors(maxcolors=1 << 20) or range(2)) > 16, f"{name}: the drawing has almost no colours: nothing was plotted"
