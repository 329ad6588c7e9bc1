"""`plantwatch detector publish` writes a ConfigMap and a DetectorModel that `plantwatch validate` accepts."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import yaml

from plantwatch.detect import bundle
from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe
from plantwatch.inference.models import sha256_of


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.cli", *args], capture_output=True, text=True, timeout=120)


def trained(tmp_path):
    rng = np.random.default_rng(0)
    values = np.column_stack([45 + rng.normal(0, 0.3, 450), 1.5 + rng.normal(0, 0.05, 450)])
    bundle.save(tmp_path / "model", fit_recipe(RECIPES[DEFAULT_RECIPE], values), ("temperature", "vibration"), 450)
    return tmp_path / "model"


def test_published_objects_validate_and_pin_the_model(tmp_path):
    model = trained(tmp_path)
    out = tmp_path / "press-wear.yaml"
    done = cli(
        "detector",
        "publish",
        "--model",
        str(model),
        "--name",
        "press-wear",
        "--namespace",
        "plant-a",
        "--provider",
        "cuda",
        "--node-selector",
        "plantwatch.io/line=line-1",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    validated = cli("validate", "-f", str(out))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    config_map, detector = yaml.safe_load_all(out.read_text())
    data = base64.b64decode(config_map["binaryData"]["model.onnx"])
    card = json.loads(config_map["data"]["model-card.json"])
    assert data == (model / "model.onnx").read_bytes()
    assert detector["spec"]["source"] == {"configMap": {"name": "press-wear-model", "key": "model.onnx"}, "sha256": sha256_of(data)}
    assert detector["spec"]["features"]["sensors"] == ["temperature", "vibration"] == card["channels"]
    assert float(detector["spec"]["threshold"]) == round(card["alarm"]["threshold"], 6)
    assert detector["spec"]["executionProvider"] == "cuda" and detector["metadata"]["namespace"] == "plant-a"
    assert detector["spec"]["features"]["nodeSelector"] == {"matchLabels": {"plantwatch.io/line": "line-1"}}


def test_a_model_that_is_not_the_one_its_card_names_is_not_published(tmp_path):
    model = trained(tmp_path)
    (model / "model.onnx").write_bytes(b"tampered")
    done = cli("detector", "publish", "--model", str(model), "--name", "press-wear")
    assert done.returncode == 2 and "its model card says" in done.stderr and not done.stdout
    done = cli("detector", "publish", "--model", str(tmp_path), "--name", "press-wear")
    assert done.returncode == 2 and "model-card.json" in done.stderr
