"""A detector end to end: train from CSV, export ONNX, score through ONNX Runtime (the service's loader)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from plantwatch.alarms import alarm_rule
from plantwatch.detect.cli import main
from plantwatch.detect.recipes import RECIPES, fit_recipe
from plantwatch.detect.simulate import simulate
from plantwatch.features import window_features
from plantwatch.inference.models import load_model, sha256_of

FAULT = slice(600, 750)


def plant_values(rows: int = 900, seed: int = 7) -> np.ndarray:
    """Five correlated channels around one operating point, with coloured noise."""
    rng = np.random.default_rng(seed)
    load = 1 + np.convolve(rng.normal(0, 0.02, rows + 49), np.ones(50) / 50, mode="valid")
    noise = rng.normal(0, 1, (rows, 5))
    return np.column_stack(
        [
            60 + 5 * load + 0.2 * noise[:, 0],
            2 + 0.5 * load + 0.02 * noise[:, 1],
            100 * load + noise[:, 2],
            0.8 * load + 0.03 * noise[:, 3],
            230 + 0.5 * noise[:, 4],
        ]
    )


def write(path, values: np.ndarray, labels: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(["datetime", "temperature", "pressure", "flow", "vibration", "voltage", "anomaly"])
        for i, (row, label) in enumerate(zip(values, labels)):
            writer.writerow([f"t{i}", *(f"{v:.6g}" for v in row), int(label)])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_onnx_scores_equal_the_numpy_reference(name, tmp_path):
    recording = simulate(0)  # two operating points: the default's relations part is in the graph
    fitted = fit_recipe(RECIPES[name], recording.values[:400])
    if RECIPES[name].relations:
        assert fitted.detector.relations is not None
    features = window_features(recording.values, fitted.recipe.features).astype(np.float32)
    (tmp_path / "model.onnx").write_bytes(fitted.to_onnx())
    session = load_model(name, tmp_path / "model.onnx").session
    onnx_scores = session.run(["score"], {"features": features})[0]
    reference = fitted.reference_scores(features)
    assert onnx_scores.shape == (len(features),)
    np.testing.assert_allclose(onnx_scores, reference, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(reference).max())))


def test_default_detector_finds_a_gross_fault_and_stays_quiet_otherwise(tmp_path):
    values = plant_values()
    values[FAULT, 1] += 1.0  # pressure jumps by ~50 noise sigmas
    values[FAULT, 4] = values[FAULT.start, 4]  # and the voltage sensor sticks
    labels = np.zeros(len(values), dtype=int)
    labels[FAULT] = 1
    data = tmp_path / "rec.csv"
    write(data, values, labels)
    model, pred = tmp_path / "model", tmp_path / "pred"
    pred.mkdir()

    assert main(["detector", "train", "--csv", str(data), "--out", str(model), "--time-column", "datetime"]) == 0
    card = json.loads((model / "model-card.json").read_text())
    assert card["channels"] == ["temperature", "pressure", "flow", "vibration", "voltage"]  # anomaly set aside
    assert card["training"]["rows"] == 400 and card["model"]["sha256"] == sha256_of((model / "model.onnx").read_bytes())

    assert (
        main(
            [
                "detector",
                "score",
                "--model",
                str(model),
                "--csv",
                str(data),
                "--out",
                str(pred / "rec.csv"),
                "--time-column",
                "datetime",
                "--skip-rows",
                "400",
            ]
        )
        == 0
    )
    with open(pred / "rec.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(values) - 400 and rows[0]["timestamp"] == "t400"
    alarm = np.array([int(r["anomaly"]) for r in rows])
    fault = alarm[FAULT.start - 400 : FAULT.stop - 400]
    normal = np.r_[alarm[: FAULT.start - 400], alarm[FAULT.stop - 400 + 60 :]]  # 60 s for the smoothing to let go
    assert fault.mean() > 0.85
    assert normal.mean() < 0.05
    # The card carries the whole alarm rule (release included): the CLI's alarms are the in-memory experiment's.
    recipe = RECIPES[card["recipe"]["name"]]
    fitted = fit_recipe(recipe, values[:400])
    _, expected = alarm_rule(
        fitted.reference_scores(window_features(values, recipe.features)),
        fitted.threshold,
        recipe.span,
        recipe.cap,
        recipe.on_count,
        recipe.off_count,
        recipe.off_ratio,
        recipe.release,
        recipe.rearm,
        recipe.release_span,
    )
    assert card["alarm"]["release"] == recipe.release > 0
    assert (alarm != expected[400:]).sum() <= 2  # float32 ONNX vs float64 numpy may flip a row at the threshold

    assert main(["detector", "evaluate", "--data", str(data), "--pred-dir", str(pred), "--time-column", "datetime"]) == 0


def test_train_from_a_time_range_of_the_embedded_store(tmp_path):
    """`--store --node --since --until`: one node's sensors pivoted to 1 s channels, from a real SQLite store."""
    from plantwatch.detect import bundle
    from plantwatch.detect.data import read_store
    from plantwatch.readings import Reading
    from plantwatch.store.sqlite import SqliteStore

    values = plant_values(rows=900)
    values[FAULT, 1] += 1.0
    names = ["temperature", "pressure", "flow", "vibration", "voltage"]
    start = 1_700_000_000.0
    db = tmp_path / "plant.db"
    store = SqliteStore(db)
    readings = [
        Reading("press-1", name, "gauge", float(values[i, j]), start + i + 0.2 * j)
        for i in range(len(values))
        for j, name in enumerate(names)
        if not (j == 2 and i % 97 == 5)
    ]
    readings += [Reading("press-2", "temperature", "temperature", 99.0, start + i) for i in range(50)]
    readings += [Reading("press-1", "press-detector", "anomaly_score", 0.0, start + i) for i in range(50)]
    store.write(readings)
    store.close()

    model = tmp_path / "model"
    # 60 s of warm-up left out by --since, then 400 s of training.
    assert (
        main(
            [
                "detector",
                "train",
                "--store",
                str(db),
                "--node",
                "press-1",
                "--since",
                "2023-11-14T22:14:20Z",
                "--until",
                str(start + 460),
                "--out",
                str(model),
            ]
        )
        == 0
    )
    card = json.loads((model / "model-card.json").read_text())
    assert card["channels"] == sorted(names)  # the other node and the stored anomaly scores are not channels
    assert card["training"]["rows"] == 400 and "press-1" in card["training"]["source"]

    table = read_store(db, "press-1")
    assert table.values.shape == (900, 5) and table.timestamps[0] == "2023-11-14T22:13:20Z"
    assert np.isnan(table.values[5, table.channels.index("flow")])  # a step without a reading stays missing
    alarm = bundle.load(model).score(table.values).alarm
    assert alarm[FAULT.start + 10 : FAULT.stop].mean() > 0.85 and alarm[460 : FAULT.start].mean() < 0.05

    assert main(["detector", "train", "--store", str(db), "--node", "press-9", "--out", str(model)]) == 2
    assert main(["detector", "train", "--store", str(db), "--out", str(model)]) == 2


def test_evaluate_with_a_custom_label_column_trains_on_the_channels_only(tmp_path, capsys):
    """`--label-column fault`: the label is set aside, never a channel that would give the answer away."""
    values = plant_values()
    values[FAULT, 1] += 1.0
    labels = np.zeros(len(values), dtype=int)
    labels[FAULT] = 1
    data = tmp_path / "data"
    data.mkdir()
    write(data / "rec.csv", values, labels)
    text = (data / "rec.csv").read_text().replace(";anomaly\n", ";fault\n", 1)
    (data / "rec.csv").write_text(text)
    assert main(["detector", "evaluate", "--data", str(data), "--time-column", "datetime", "--label-column", "fault"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 1 and summary["tp"] + summary["fn"] == FAULT.stop - FAULT.start and summary["f1"] > 0.9
    assert main(["detector", "evaluate", "--data", str(data), "--time-column", "datetime", "--label-column", "missing"]) == 2
