"""What reading a recording and training on it tell the person doing it: columns left out and why, bad
cells, decimal commas, the time column, long recordings in bounded memory, knn's refusal in words."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plantwatch.detect.cli import main
from plantwatch.detect.data import read_table
from plantwatch.detect.recipes import RECIPES, features_in_chunks, fit_recipe
from plantwatch.features import FeatureSpec, window_features


def recording(path, rows: int, bad: dict[int, str] = (), sep: str = ",", decimal: str = ".") -> None:
    """A smooth three-channel recording with a text column; `bad` puts cells into motor_current."""
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    current = 10 + np.sin(t / 50) + 0.05 * rng.standard_normal(rows)
    lines = [sep.join(["datetime", "motor_current", "state", "temp"])]
    for i in range(rows):
        cell = dict(bad).get(i, f"{current[i]:.4f}".replace(".", decimal))
        stamp = f"2024-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        lines.append(sep.join([stamp, cell, "run", f"{20 + i % 7 / 10}".replace(".", decimal)]))
    path.write_text("\n".join(lines) + "\n")


def test_a_column_with_a_few_bad_cells_is_kept_and_the_bad_cells_are_named(tmp_path):
    path = tmp_path / "r.csv"
    recording(path, 2000, {15: "ERR", 901: "ERR"})
    table = read_table(path)
    assert table.channels == ("motor_current", "temp") and table.timestamps[0] == "2024-01-01T00:00:00"
    assert np.isnan(table.values[15, 0]) and np.isnan(table.values[901, 0]) and np.isfinite(table.values[16, 0])
    notes = "\n".join(table.notes)
    assert "column 'motor_current': 2 of 2000 cells are not numbers ('ERR' on lines 17, 903), read as missing" in notes
    assert "column 'state' left out: text" in notes and "time column 'datetime' found by its name" in notes
    dropped = read_table(path, bad_cells="drop-column")
    assert dropped.channels == ("temp",) and any("'motor_current' left out (--bad-cells drop-column)" in n for n in dropped.notes)
    with pytest.raises(ValueError, match=r"'motor_current': 2 of 2000 cells are not numbers \('ERR' on lines 17, 903\)"):
        read_table(path, bad_cells="fail")


def test_train_says_on_stderr_what_it_left_out(tmp_path, capsys):
    path = tmp_path / "r.csv"
    recording(path, 600, {100: "ERR"})
    assert main(["detector", "train", "--csv", str(path), "--out", str(tmp_path / "m")]) == 0
    out, err = capsys.readouterr()
    assert "2 channels (motor_current, temp)" in out
    assert "detector train: r.csv: column 'motor_current': 1 of 600 cells are not numbers ('ERR' on line 102), read as missing" in err
    assert "column 'state' left out: text, not numbers" in err
    assert main(["detector", "train", "--csv", str(path), "--out", str(tmp_path / "m2"), "--bad-cells", "fail"]) == 2
    assert "--bad-cells fill reads them as missing" in capsys.readouterr().err


def test_semicolons_with_decimal_commas_are_read_and_a_mix_is_refused(tmp_path):
    comma, point = tmp_path / "comma.csv", tmp_path / "point.csv"
    recording(comma, 50, sep=";", decimal=",")
    recording(point, 50)
    a, b = read_table(comma), read_table(point)
    assert a.channels == b.channels and np.array_equal(a.values, b.values)
    assert "numbers read with a decimal comma (fields separated by ';')" in a.notes
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("time;a;b\n1;1,5;2.5\n")
    with pytest.raises(ValueError, match=r"decimal comma \('1,5', column 'a', line 2\) and with a decimal point \('2.5', column 'b'"):
        read_table(mixed)
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('time,a\n1,"1,5"\n')
    with pytest.raises(ValueError, match="decimal comma inside a comma-separated file"):
        read_table(quoted)


def test_features_in_chunks_equal_one_pass():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((1300, 3)).cumsum(axis=0)
    values[480:530, 1] = np.nan  # a gap across a chunk boundary: forward-filled as in one pass
    values[:5, 2] = np.nan
    spec = FeatureSpec()
    np.testing.assert_allclose(features_in_chunks(values, spec, chunk=500), window_features(values, spec))


def test_knn_refuses_a_100k_row_recording_in_words_and_the_default_trains_with_progress(tmp_path, capsys):
    path = tmp_path / "long.csv"
    recording(path, 100_000)
    args = ["detector", "train", "--csv", str(path), "--train-rows", "100000"]
    assert main([*args, "--out", str(tmp_path / "knn"), "--recipe", "knn"]) == 2
    err = capsys.readouterr().err
    assert "recipe knn keeps every training row" in err and "74.5 GiB of distances" in err and "at most 10000 rows" in err
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    err = capsys.readouterr().err
    assert "detector train: features: 100000 of 100000 rows" in err and "fitting envelope on" in err
    assert main(["detector", "score", "--model", str(tmp_path / "default"), "--csv", str(path), "--out", str(tmp_path / "p.csv")]) == 0
    out, err = capsys.readouterr()
    assert "scoring: " in err and out.startswith("scored 100000 rows, ") and "against threshold 2" in out
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "timestamp,score,anomaly" and lines[1].startswith("2024-01-01T00:00:00,")  # the time column found


def test_knn_scores_in_blocks_equal_one_block(monkeypatch):
    values = np.random.default_rng(2).standard_normal((700, 2))
    fitted = fit_recipe(RECIPES["knn"], values[:400])
    features = window_features(values, fitted.recipe.features)
    whole = fitted.reference_scores(features)
    monkeypatch.setattr("plantwatch.detect.recipes.DISTANCE_BYTES", 8 * len(fitted.detector.reference) * 7)  # 7 rows a block
    np.testing.assert_allclose(fitted.reference_scores(features), whole)


def test_evaluate_says_what_it_compares_against(tmp_path, capsys):
    path = tmp_path / "r.csv"
    recording(path, 700)
    text = path.read_text().splitlines()
    labelled = [line + (",1" if 600 <= i < 650 else ",0") for i, line in enumerate(text[1:])]
    path.write_text("\n".join([text[0] + ",anomaly", *labelled]) + "\n")
    assert main(["detector", "evaluate", "--data", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["target"] == {"f1": ">= 0.80", "far": "<= 0.135", "mar": "<= 0.28"}
    assert summary["labels"] == "column 'anomaly' of each file, rows 400.. (the first 400 train, unjudged)"
