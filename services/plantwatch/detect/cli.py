"""`plantwatch detector train|score|evaluate|simulate|publish|retrain`: registered by `add_commands(subparsers)`.

Also runnable on its own: `python -m plantwatch.detect.cli detector ...`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

from plantwatch.cliargs import non_negative_int, positive_int
from plantwatch.detect import bundle, experiment
from plantwatch.detect.data import BAD_CELLS, Table, labels_of, parse_time, read_predictions, read_store, read_table, write_predictions
from plantwatch.detect.evaluate import TARGET, confusion, meets_target, pooled
from plantwatch.detect.publish import add_command as add_publish_command
from plantwatch.detect.recipes import RECIPES, decide, fit_recipe
from plantwatch.detect.retrain import add_command as add_retrain_command
from plantwatch.detect.simulate import write_dataset


def _user_errors(func):
    """Bad input (unreadable CSV, missing channel, wrong checksum) is a message and exit status 2, not a traceback."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ValueError, OSError) as exc:
            print(f"detector {args.detector_command}: {exc}", file=sys.stderr)
            return 2

    return run


def _exclude(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip()) if text else ()


def _read(args: argparse.Namespace, path: str | Path, labels: tuple[str, ...] = ()) -> Table:
    """The recording, with every reading decision that the user did not ask for said on stderr."""
    table = read_table(path, args.time_column, _exclude(args.exclude), labels, args.bad_cells)
    for note in table.notes:
        print(f"detector {args.detector_command}: {Path(path).name}: {note}", file=sys.stderr)
    return table


def _progress(args: argparse.Namespace):
    """Long steps (more than CHUNK_ROWS rows) say how far they are on stderr; stdout keeps the result."""
    return lambda line: print(f"detector {args.detector_command}: {line}", file=sys.stderr, flush=True)


def _csv_files(items: list[str]) -> list[Path]:
    """Files as given, folders as their *.csv (sorted)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        paths.extend(sorted(path.glob("*.csv")) if path.is_dir() else [path])
    return paths


def _train(args: argparse.Namespace) -> int:
    store_only = args.node or args.since or args.until
    if (args.csv is None) == (args.store is None) or (args.store is not None) != (args.node is not None) or (args.csv and store_only):
        print("detector train: give --csv FILE, or --store DB with --node NAME (and optionally --since/--until)", file=sys.stderr)
        return 2
    if args.csv is not None:
        table, source = _read(args, args.csv), str(args.csv)
    else:
        since, until = (parse_time(t) if t else None for t in (args.since, args.until))
        table = read_store(args.store, args.node, since, until, _exclude(args.exclude))
        source = f"{args.store} node={args.node} {table.timestamps[0]}..{table.timestamps[-1]}"
    if len(table.values) < args.train_rows:
        print(f"detector train: {source} has {len(table.values)} rows, fewer than --train-rows {args.train_rows}", file=sys.stderr)
        return 2
    train_values = table.values[: args.train_rows]
    recipe = RECIPES[args.recipe] if args.recipe else decide(train_values, experiment.stamp_seconds(table.timestamps[: args.train_rows]))
    if recipe.decision:
        print(f"detector train: decided from the data: {recipe.decision}", file=sys.stderr)
    fitted = fit_recipe(recipe, train_values, progress=_progress(args))
    card = bundle.save(args.out, fitted, table.channels, args.train_rows, source, train_values)
    print(
        f"trained {recipe.name} on {args.train_rows} rows x {len(table.channels)} channels "
        f"({', '.join(table.channels)}); threshold {card['alarm']['threshold']:.4g}; wrote {args.out}"
    )
    return 0


def _score(args: argparse.Namespace) -> int:
    scorer = bundle.load(args.model)
    table = _read(args, args.csv)
    values = bundle.columns_in_card_order(table.channels, table.values, scorer.channels, str(args.csv))
    scores = scorer.score(values, _progress(args))
    start = args.skip_rows
    write_predictions(args.out, table.timestamps[start:], scores.smoothed[start:], scores.alarm[start:])
    print(score_summary(scores.smoothed[start:], scores.alarm[start:], scorer.card["alarm"]["threshold"]) + f"; wrote {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    paths = _csv_files(args.data)
    if not paths:
        print("detector evaluate: no CSV files in --data", file=sys.stderr)
        return 2
    if args.pred_dir:
        per_file = {}
        for path in paths:
            table = _read(args, path, (args.label_column,))
            labels = labels_of(table, args.label_column, path)[args.skip_rows :]
            stamps, alarms = read_predictions(Path(args.pred_dir) / path.name)
            if len(alarms) != len(labels) or (args.time_column and stamps != table.timestamps[args.skip_rows :]):
                print(
                    f"detector evaluate: {path.name}: predictions do not line up with rows {args.skip_rows}.. of the data", file=sys.stderr
                )
                return 2
            per_file[path.name] = confusion(labels, alarms)
        counts = pooled(list(per_file.values()))
        summary = {"files": len(per_file), **counts.summary()}
    else:
        result = experiment.run(
            paths,
            RECIPES[args.recipe] if args.recipe else None,
            args.skip_rows,
            args.label_column,
            args.time_column,
            _exclude(args.exclude),
        )
        per_file = {Path(f.path).name: f.counts for f in result.files}
        counts, summary = result.counts, result.summary()
    summary["labels"] = f"column {args.label_column!r} of each file, rows {args.skip_rows}.. (the first {args.skip_rows} train, unjudged)"
    summary["target"] = TARGET
    summary["meets_target"] = meets_target(counts)
    if args.per_file:
        summary["per_file"] = {name: c.summary() for name, c in per_file.items()}
    print(json.dumps(summary, indent=2))
    return 0


def score_summary(smoothed: np.ndarray, alarm: np.ndarray, threshold: float) -> str:
    """One line a person can read: how many rows alarmed and where the scores sit against the threshold."""
    if not len(smoothed):
        return "scored 0 rows"
    q50, q99 = np.nanquantile(smoothed, [0.5, 0.99])
    return (
        f"scored {len(smoothed)} rows, {int(alarm.sum())} alarmed ({100 * alarm.mean():.1f} %); "
        f"score median {q50:.3g}, 99th percentile {q99:.3g}, max {np.nanmax(smoothed):.3g} against threshold {threshold:.3g}"
    )


def _simulate(args: argparse.Namespace) -> int:
    paths = write_dataset(Path(args.out), args.recordings, args.seed, args.train_rows, args.variant)
    print(f"wrote {len(paths)} recordings to {args.out}")
    return 0


def add_commands(subparsers) -> None:
    """Register `detector train|score|evaluate|simulate` on the `plantwatch` command's subparsers."""
    detector = subparsers.add_parser("detector", help="train, score and evaluate anomaly detectors on CSV recordings")
    sub = detector.add_subparsers(dest="detector_command", required=True, metavar="ACTION")
    recipe_help = (
        f"detector recipe, one of {', '.join(RECIPES)}; without it the default is decided from the training rows "
        "(several channels or rows seconds apart: relations; one channel minutes apart: slow, or seasonal with a daily cycle)"
    )

    def table_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--time-column", metavar="NAME", help="time stamp column (not a channel; echoed in predictions)")
        p.add_argument("--exclude", metavar="COL,COL", help="columns that are not channels (anomaly/changepoint/label always are)")
        p.add_argument(
            "--bad-cells",
            choices=BAD_CELLS,
            default="fill",
            help="a numeric column's cells that are not numbers (ERR): fill (default) reads them as missing, the previous "
            "reading carried forward; drop-column leaves the column out; fail refuses the file. Each case is reported",
        )

    train = sub.add_parser("train", help="train on a CSV's (or a stored node's) first rows; writes DIR/model.onnx and DIR/model-card.json")
    train.add_argument("--csv", help="recording (delimiter detected: ; , tab |)")
    train.add_argument("--store", metavar="DB", help="or: the embedded SQLite store; one node's sensors become channels at 1 s")
    train.add_argument("--node", metavar="NAME", help="with --store: the node whose readings train the detector")
    train.add_argument("--since", metavar="TIME", help="with --store: first time (epoch seconds or ISO 8601, UTC by default)")
    train.add_argument("--until", metavar="TIME", help="with --store: end time, exclusive")
    train.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    train.add_argument("--train-rows", type=positive_int, default=400, help="leading rows known to be normal (default 400)")
    train.add_argument("--recipe", choices=sorted(RECIPES), help=recipe_help)
    table_args(train)
    train.set_defaults(func=_user_errors(_train))

    score = sub.add_parser("score", help="score a CSV through ONNX Runtime; writes timestamp,score,anomaly per row")
    score.add_argument("--model", required=True, metavar="DIR", help="model directory from `detector train`")
    score.add_argument("--csv", required=True, help="recording with the model's channels")
    score.add_argument("--out", required=True, metavar="PRED.csv", help="predictions to write")
    score.add_argument(
        "--skip-rows",
        type=non_negative_int,
        default=0,
        help="leave out the first N rows from the output (they still serve as window history)",
    )
    table_args(score)
    score.set_defaults(func=_user_errors(_score))

    evaluate = sub.add_parser("evaluate", help="pooled point-wise F1, false- and missed-alarm rates over labelled CSVs")
    evaluate.add_argument("--data", nargs="+", required=True, metavar="CSV|DIR", help="labelled recordings (folders: their *.csv)")
    evaluate.add_argument(
        "--pred-dir",
        metavar="DIR",
        help="predictions named like the data files (from `detector score`); "
        "without it, each file trains on its first --skip-rows rows and scores the rest",
    )
    evaluate.add_argument(
        "--skip-rows", type=non_negative_int, default=400, help="training rows at the start of each file, not judged (default 400)"
    )
    evaluate.add_argument("--label-column", default="anomaly", help="0/1 label column (default anomaly)")
    evaluate.add_argument("--recipe", choices=sorted(RECIPES), help=recipe_help)
    evaluate.add_argument("--per-file", action="store_true", help="also print each file's figures")
    table_args(evaluate)
    evaluate.set_defaults(func=_user_errors(_evaluate))

    simulate = sub.add_parser("simulate", help="write labelled simulated recordings (pump skid with faults)")
    simulate.add_argument("--out", required=True, metavar="DIR")
    simulate.add_argument("--recordings", type=positive_int, default=20)
    simulate.add_argument("--seed", type=non_negative_int, default=0)
    simulate.add_argument("--train-rows", type=positive_int, default=400, help="fault-free rows at the start of each recording")
    simulate.add_argument("--variant", default="skid", help="plant variant: skid (default), rig, harsh (see detect/README.md)")
    simulate.set_defaults(func=_user_errors(_simulate))
    add_publish_command(sub, _user_errors)
    add_retrain_command(sub, _user_errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plantwatch")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
