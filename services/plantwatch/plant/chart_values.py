"""A plant folder as the chart's values (`plantwatch chart-values`): its manifests, unchanged.

The chart takes the plant's resources as `plant.<kind>: [{name, labels, spec}]`, checked
against the CRDs by values.schema.json; this turns the same manifests `plantwatch up` and
`kubectl apply` read into that, so a plant folder is installed as it is. Pure: documents in,
values and what was left out (with why) back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: kind -> the chart's values key under `plant`.
VALUES_KEYS = {"SensorNode": "sensorNodes", "AlertRule": "alertRules", "DetectorModel": "detectorModels", "AlertReceiver": "alertReceivers"}


def chart_values(docs: Iterable[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """(values, left out): the plant's resources as chart values; every other document named with
    where it came from, since the chart takes no ConfigMap or Secret (apply those yourself)."""
    plant: dict[str, list] = {key: [] for key in VALUES_KEYS.values()}
    left_out = []
    for where, doc in docs:
        kind = doc.get("kind")
        if kind in VALUES_KEYS and str(doc.get("apiVersion", "")).startswith("plantwatch.io/"):
            meta = doc["metadata"]
            entry = {"name": meta["name"], **({"labels": meta["labels"]} if meta.get("labels") else {}), "spec": doc["spec"]}
            plant[VALUES_KEYS[kind]].append(entry)
        else:
            left_out.append(f"{where}: {kind}/{(doc.get('metadata') or {}).get('name')} (not a chart value: kubectl apply it)")
    return {"plant": plant}, left_out
