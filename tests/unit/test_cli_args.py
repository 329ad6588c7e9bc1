"""Numeric flags are range-checked when the command line is parsed: exit status 2 and a message
that names the flag, the accepted range and the value, before anything starts."""

from __future__ import annotations

import argparse

import pytest

from plantwatch import cliargs
from plantwatch.cli import main, parser


def flags(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, action) of every option of every (sub)command."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from flags(sub, (*path, name))
        elif action.option_strings:
            yield path, action


def test_no_numeric_flag_is_unchecked():
    unchecked = [f"{' '.join(path)} {a.option_strings[-1]}" for path, a in flags(parser(with_detector=True)) if a.type in (int, float)]
    assert unchecked == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["up", "-f", "x", "--window-seconds", "0"], "argument --window-seconds: must be > 0, got 0"),
        (["up", "-f", "x", "--window-seconds", "-60"], "argument --window-seconds: must be > 0, got -60"),
        (["up", "-f", "x", "--status-every", "nan"], "argument --status-every: must be a finite number > 0, got 'nan'"),
        (["up", "-f", "x", "--duration", "soon"], "argument --duration: must be a finite number > 0, got 'soon'"),
        (["up", "-f", "x", "--http-port", "70000"], "argument --http-port: must be between 0 and 65535, got 70000"),
        (["up", "-f", "x", "--max-future-seconds", "-1"], "argument --max-future-seconds: must be >= 0, got -1"),
        (["serve", "ingest", "-f", "x", "--broker", "mqtt://h", "--shards", "0"], "argument --shards: must be >= 1, got 0"),
        (["serve", "ingest", "-f", "x", "--broker", "mqtt://h", "--replica-index", "-1"], "argument --replica-index: must be >= 0, got -1"),
        (
            ["serve", "ingest", "-f", "x", "--broker", "mqtt://h", "--shard-lease-seconds", "inf"],
            "argument --shard-lease-seconds: must be a finite number > 0, got 'inf'",
        ),
        (["serve", "inference", "--model-name", "m", "--max-batch", "1.5"], "argument --max-batch: must be an integer >= 1, got '1.5'"),
        (["serve", "inference", "--model-name", "m", "--reload-interval", "-2"], "argument --reload-interval: must be >= 0, got -2"),
        (["detector", "train", "--out", "d", "--train-rows", "0"], "argument --train-rows: must be >= 1, got 0"),
        (
            ["detector", "publish", "--model", "d", "--name", "n", "--threshold", "nan"],
            "argument --threshold: must be a finite number, got 'nan'",
        ),
    ],
)
def test_out_of_range_values_stop_at_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_values_in_range_are_converted():
    args = parser().parse_args(["up", "-f", "x", "--window-seconds", "0.5", "--http-port", "0", "--max-future-seconds", "0"])
    assert (args.window_seconds, args.http_port, args.max_future_seconds) == (0.5, 0, 0.0)
    assert cliargs.port("65535") == 65535 and cliargs.positive_int("1") == 1 and cliargs.finite_float("-3.5") == -3.5
