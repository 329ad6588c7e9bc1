"""A plant of any size as plantwatch.io objects, for the operator's scale test and benchmark.

SensorNode i (`node-00042`) sits on line i % LINES (label plantwatch.io/line); AlertRule i (`rule-003`) is a
temperature threshold on line i % LINES; DetectorModel i (`detector-00`) scores line i % LINES from a model URL
that is never fetched (the operator validates and renders it, nothing downloads it). Shared by
tests/e2e/test_operator_scale.py and bench/operator.py, so the test's plants are the benchmark's, smaller.
"""

from __future__ import annotations

LINES = 10


def node(i: int) -> dict:
    name, line = f"node-{i:05d}", f"line-{i % LINES}"
    return {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "SensorNode",
        "metadata": {"name": name, "labels": {"plantwatch.io/line": line}},
        "spec": {
            "hardware": "esp32",
            "payload": {"format": "esp32-json", "topic": f"sensors/{line}/{name}/data"},
            "sensors": [
                {
                    "name": "temperature",
                    "type": "temperature",
                    "unit": "celsius",
                    "field": "temperature_c",
                    "range": {"min": "-40", "max": "125"},
                },
                {"name": "vibration", "type": "vibration", "unit": "g", "field": "vibration_g", "range": {"min": "0", "max": "16"}},
                {"name": "current", "type": "current", "unit": "ampere", "field": "current_a", "range": {"min": "0", "max": "50"}},
            ],
        },
    }


def rule(i: int) -> dict:
    return {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": f"rule-{i:03d}"},
        "spec": {
            "selector": {"sensorType": "temperature", "nodeSelector": {"matchLabels": {"plantwatch.io/line": f"line-{i % LINES}"}}},
            "condition": {"type": "Threshold", "threshold": {"direction": "Above", "warning": "70", "critical": "90"}},
            "receivers": ["console"],
        },
    }


def detector(i: int) -> dict:
    return {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "DetectorModel",
        "metadata": {"name": f"detector-{i:02d}"},
        "spec": {
            "source": {"url": {"url": f"https://models.invalid/d{i}.onnx", "sha256": "0" * 64}},
            "features": {
                "nodeSelector": {"matchLabels": {"plantwatch.io/line": f"line-{i % LINES}"}},
                "sensors": ["temperature", "vibration", "current"],
                "window": 30,
                "step": 5,
                "aggregations": ["last", "mean", "std"],
            },
            "threshold": "0.6",
            "executionProvider": "cpu",
        },
    }


def plant(nodes: int, rules: int = LINES, detectors: int = 1) -> list[dict]:
    """`nodes` SensorNodes, then `rules` AlertRules and `detectors` DetectorModels (one rule a line by default)."""
    return [*(node(i) for i in range(nodes)), *(rule(i) for i in range(rules)), *(detector(i) for i in range(detectors))]
