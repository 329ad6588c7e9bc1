"""The `plantwatch` command.

Each command imports what it runs inside its own function: `plantwatch validate` need not
load numpy, ONNX Runtime, aiohttp, paho or the Kubernetes client that `up`, `serve` and
`operator` use (these lazy imports keep commands fast; none hides a cycle).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources

from plantwatch.alerts.cli import add_commands as add_alerts_commands
from plantwatch.cliargs import non_negative_float, non_negative_int, port, positive_float, positive_int, secret_key, timestamp
from plantwatch.contracts.names import INFLUX_LAYOUTS
from plantwatch.logs import configure as configure_logging
from plantwatch.plant.load import PlantError, load_plant
from plantwatch.query.cli import add_commands as add_query_commands
from plantwatch.secrets import MOUNT_DIR
from plantwatch.store.retention import Retention


def _policy(args: argparse.Namespace):
    from plantwatch.ingest.validate import Policy

    return Policy(max_future_s=args.max_future_seconds, unknown_node=args.unknown_nodes, unknown_sensor=args.unknown_sensors)


def _add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unknown-nodes",
        choices=("reject", "ignore"),
        default="reject",
        help="messages from no SensorNode on the plant's topics: dead-letter them (default) or ignore them",
    )
    p.add_argument(
        "--unknown-sensors",
        choices=("ignore", "reject"),
        default="ignore",
        help="payload fields that are no sensor of the node: ignore (default) or dead-letter them",
    )
    p.add_argument(
        "--max-future-seconds",
        type=non_negative_float,
        default=300.0,
        help="refuse readings stamped further ahead of this machine's clock (default 300)",
    )


def _add_retention(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dead-letter-retention-days",
        type=positive_float,
        default=7.0,
        metavar="DAYS",
        help="delete stored dead letters older than this (default 7; checked every minute)",
    )
    p.add_argument(
        "--retention-days",
        type=positive_float,
        metavar="DAYS",
        help="delete stored readings older than this (default: keep them; checked every minute)",
    )
    p.add_argument(
        "--summary-retention-days",
        type=positive_float,
        metavar="DAYS",
        help="delete window summaries older than this (default: keep them)",
    )


def _retention(args: argparse.Namespace) -> Retention:
    def seconds(days: float | None) -> float | None:
        return None if days is None else days * 86400

    return Retention(args.dead_letter_retention_days * 86400, seconds(args.retention_days), seconds(args.summary_retention_days))


def _add_broker_access(p: argparse.ArgumentParser, only_with: str = "") -> None:
    """TLS and credentials for the broker, all from files (in a cluster, Secrets mounted as files)."""
    p.add_argument(
        "--broker-ca",
        metavar="FILE",
        help=f"PEM CA(s) the mqtts:// broker's certificate must be signed by (default: the system trust store){only_with}",
    )
    p.add_argument("--broker-cert", metavar="FILE", help=f"PEM client certificate for brokers that require one (mutual TLS){only_with}")
    p.add_argument("--broker-key", metavar="FILE", help=f"the client certificate's PEM key (default: in --broker-cert){only_with}")
    p.add_argument("--broker-username", metavar="NAME", help=f"the user name to log in to the broker with{only_with}")
    p.add_argument(
        "--broker-password-file",
        metavar="FILE",
        help=f"a file whose first line is the broker password, read at every connection (rather than a password in the URL){only_with}",
    )


def _broker(args: argparse.Namespace, command: str):
    """The --broker URL with the --broker-* files as an Endpoint (None without --broker); ValueError in words."""
    from plantwatch.mqtt.endpoint import Endpoint, TlsSettings

    files = {"--broker-ca": args.broker_ca, "--broker-cert": args.broker_cert, "--broker-key": args.broker_key}
    given = [flag for flag, value in {**files, "--broker-username": args.broker_username}.items() if value]
    given += ["--broker-password-file"] if args.broker_password_file else []
    if args.broker is None:
        if given:
            raise ValueError(f"{', '.join(given)} need --broker: the broker {command} starts itself listens on loopback, without TLS")
        return None
    try:
        tls = TlsSettings(args.broker_ca, args.broker_cert, args.broker_key) if any(files.values()) else None
        return Endpoint.parse(args.broker, tls, args.broker_username, args.broker_password_file)
    except ValueError as exc:
        raise ValueError(f"--broker: {exc}") from None


def _add_api(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument(
        "--api-token-secret",
        type=secret_key,
        metavar="NAME/KEY",
        help=f"the alerts API's bearer token: this key of this Secret ({where}); without it the API refuses changes",
    )
    p.add_argument("--api-open-reads", action="store_true", help="serve the alerts API's reads (list, get, history) without the token")


def _api_token(args: argparse.Namespace):
    from plantwatch.alerts.api import TokenRef

    return TokenRef(*args.api_token_secret) if args.api_token_secret else None


def _sim_interval(text: str):
    from plantwatch.sim.scenario import parse_interval

    try:
        return parse_interval(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _up(args: argparse.Namespace) -> int:
    from plantwatch.local.runtime import UpOptions, up

    try:
        broker = _broker(args, "up")
    except ValueError as exc:
        print(f"plantwatch up: {exc}", file=sys.stderr)
        return 2
    if broker is not None and args.broker_port is not None:
        print("plantwatch up: --broker-port is the port of the broker up starts; with --broker, the URL names the port", file=sys.stderr)
        return 2
    return up(
        UpOptions(
            paths=args.file,
            simulate=args.simulate,
            scenario=tuple(args.scenario or ()),
            sim_interval=args.sim_interval,
            duration=args.duration,
            summary_json=args.summary_json,
            broker_url=broker,
            broker_kind=args.broker_kind,
            broker_port=args.broker_port,
            db=args.db,
            client_id=args.client_id,
            http_port=args.http_port,
            status_every=args.status_every,
            window_s=args.window_seconds,
            policy=_policy(args),
            retention=_retention(args),
            api_token=_api_token(args),
            api_open_reads=args.api_open_reads,
        )
    )


def _validate(args: argparse.Namespace) -> int:
    try:
        plant = load_plant(*args.file, runnable=False)
    except PlantError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"valid: {len(plant.nodes)} SensorNodes, {len(plant.rules)} AlertRules, {len(plant.detectors)} DetectorModels"
        + ("" if plant.nodes else " (not a plant to run: up and serve ingest need at least one SensorNode)")
    )
    return 0


def _chart_values(args: argparse.Namespace) -> int:
    import yaml

    from plantwatch.plant.chart_values import chart_values
    from plantwatch.plant.load import manifest_files

    try:
        load_plant(*args.file, runnable=False)  # refused here, as the API server would, rather than by helm
        files = manifest_files(args.file)
    except PlantError as exc:
        print(exc, file=sys.stderr)
        return 1
    docs = [(str(f), d) for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    values, left_out = chart_values(docs)
    for line in left_out:
        print(f"left out {line}", file=sys.stderr)
    sys.stdout.write(yaml.safe_dump(values, sort_keys=False))
    return 0


def _crds(args: argparse.Namespace) -> int:
    files = sorted(f for f in resources.files("plantwatch").joinpath("crds").iterdir() if f.name.endswith(".yaml"))
    sys.stdout.write("---\n".join(f.read_text() for f in files))
    return 0


def _serve_ingest(args: argparse.Namespace) -> int:
    from plantwatch.ingest.quality import Thresholds
    from plantwatch.ingest.service import serve

    namespace = args.status_namespace or (os.environ.get("POD_NAMESPACE") if args.report_status else None)
    if args.report_status and not namespace:
        print("plantwatch serve ingest: --report-status needs --status-namespace or $POD_NAMESPACE", file=sys.stderr)
        return 2
    sinks = []
    if args.influx_url:
        from plantwatch.store.influx import InfluxStore

        token = os.environ.get("INFLUXDB_TOKEN")
        if not token:
            print("plantwatch serve ingest: --influx-url needs the token in $INFLUXDB_TOKEN", file=sys.stderr)
            return 2
        sinks.append(
            InfluxStore(
                args.influx_url,
                token,
                args.influx_org,
                args.influx_bucket,
                args.influx_spool,
                args.influx_spool_max_bytes,
                layout=args.influx_layout,
            )
        )
    scale = None
    if args.shards is not None:
        from plantwatch.ingest.service import Scale
        from plantwatch.ingest.shards import ordinal
        from plantwatch.store.postgres import is_url

        fixed = args.replicas is not None or args.replica_index is not None
        membership = args.membership or ("store" if is_url(args.db) and not fixed else "fixed")
        if membership == "store" and (fixed or not is_url(args.db)):
            print(
                "plantwatch serve ingest: --membership store divides the shards among the gateways sharing a PostgreSQL --db "
                f"(got --db {'a PostgreSQL URL' if is_url(args.db) else 'a SQLite file'}"
                f"{', --replicas/--replica-index' if fixed else ''}); use a postgresql:// --db without --replicas and --replica-index",
                file=sys.stderr,
            )
            return 2
    if args.shards is not None and membership == "store":
        scale = Scale(args.shards, 0, 1, args.shard_lease_seconds, "store")
    elif args.shards is not None:
        replicas = args.replicas or 1
        try:
            index = args.replica_index if args.replica_index is not None else ordinal(os.environ.get("HOSTNAME", ""))
        except ValueError as exc:
            print(f"plantwatch serve ingest: --shards without --replica-index: {exc}", file=sys.stderr)
            return 2
        if not 0 <= index < replicas:
            print(
                f"plantwatch serve ingest: --replica-index must be within 0..--replicas-1 "
                f"(got --shards {args.shards}, index {index}, --replicas {replicas})",
                file=sys.stderr,
            )
            return 2
        scale = Scale(args.shards, index, replicas, args.shard_lease_seconds)
    try:
        broker = _broker(args, "serve ingest")
    except ValueError as exc:
        print(f"plantwatch serve ingest: {exc}", file=sys.stderr)
        return 2
    return serve(
        args.file,
        broker,
        args.db,
        args.http_port,
        args.client_id,
        _policy(args),
        namespace if args.report_status else None,
        sinks,
        scale,
        args.score_url,
        _retention(args),
        args.secrets_dir,
        _api_token(args),
        args.api_open_reads,
        Thresholds(args.quality_max_out_of_range_percent, args.quality_max_gap_percent, args.quality_max_clock_skew),
        args.status_writes_per_second,
    )


def _serve_inference(args: argparse.Namespace) -> int:
    from plantwatch.inference.app import InferenceOptions, serve
    from plantwatch.inference.oip import Limits

    limits = Limits(args.max_body_bytes, args.read_timeout, args.idle_timeout, args.workers, args.max_connections)
    return serve(
        InferenceOptions(
            args.model_name,
            args.model,
            args.model_url,
            args.provider,
            args.sha256,
            args.threads,
            args.host,
            args.http_port,
            args.max_batch,
            args.max_wait_ms,
            args.reload_interval,
            args.status_namespace,
            limits,
            args.shadow_model,
        )
    )


def _serve_broker_exporter(args: argparse.Namespace) -> int:
    from plantwatch.ingest.formats import DECODABLE
    from plantwatch.monitoring.broker_exporter import serve
    from plantwatch.monitoring.sys_topics import parse_pattern

    try:
        broker = _broker(args, "serve broker-exporter")
        patterns = [parse_pattern(text, args.payload_format, DECODABLE) for text in args.topic_pattern or ()]
    except ValueError as exc:
        print(f"plantwatch serve broker-exporter: {exc}", file=sys.stderr)
        return 2
    return serve(broker, patterns, args.port, args.host)


def _rules_backtest(args: argparse.Namespace) -> int:
    import json

    from plantwatch.rules.backtest import BacktestError, backtest, choose, load_plant, render

    try:
        plant, replaced = load_plant(args.file)
        report = backtest(choose(plant, args.rule or ()), args.store, args.start, args.end, replaced)
    except (PlantError, BacktestError) as exc:
        print(f"plantwatch rules backtest: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n" if args.json else render(report))
    return 0


def _probe(args: argparse.Namespace) -> int:
    from plantwatch.health import probe

    ok, said = probe(args.url, args.timeout)
    print(said, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _backup(args: argparse.Namespace) -> int:
    from plantwatch.store import backup, postgres

    try:
        counts = backup.backup(args.db, args.out)
    except (OSError, ValueError) as exc:
        print(f"plantwatch backup: {postgres.describe(args.db)}: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {postgres.describe(args.db)} to {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


def _restore(args: argparse.Namespace) -> int:
    from plantwatch.store import backup, postgres

    try:
        counts = backup.restore(args.db, args.src)
    except (OSError, ValueError) as exc:
        print(f"plantwatch restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.src} into {postgres.describe(args.db)}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from plantwatch.mqtt import doctor

    try:
        options = doctor.options(
            args.url,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            username=args.username,
            password_file=args.password_file,
            client_id=args.client_id,
            topic=args.topic,
            forbidden_topic=args.forbidden_topic,
            observer_username=args.observer_username,
            observer_password_file=args.observer_password_file,
            timeout=args.timeout,
            mqtt_version=args.mqtt_version,
        )
    except ValueError as exc:
        print(f"plantwatch doctor: {exc}", file=sys.stderr)
        return 2
    text, status = doctor.report(args.url, doctor.diagnose(options), args.json)
    sys.stdout.write(text)
    return status


def _operator(args: argparse.Namespace) -> int:
    from plantwatch_operator.main import run

    run(
        namespaces=args.namespace or None,
        liveness_port=args.liveness_port,
        peering=args.peering,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
    )
    return 0


def parser(with_detector: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch", description="Monitor a factory's sensor nodes: one machine or Kubernetes.")
    p.add_argument("--log-level", default=None, help="Python log level (default WARNING; `operator` says what it does at INFO)")
    p.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="text for people, json (one object per line) for log shippers"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run a plant on this machine (broker, pipeline, store, rules, alerts)")
    up.add_argument("-f", "--file", action="append", required=True, help="plant YAML file or folder (repeatable)")
    up.add_argument("--simulate", action="store_true", help="publish simulated readings from every SensorNode (docs/simulator.md)")
    up.add_argument(
        "--scenario",
        action="append",
        metavar="KIND[:NODE[/SENSOR]][=VALUE][@START[+DURATION]]",
        help="with --simulate, a fault to inject (repeatable): excursion (or overheat), silence, bad, drift, dropouts, skew, "
        "duplicates; `none` for clean readings (default: the plant's own Threshold rules fire and resolve, a node an "
        "Absence rule watches falls silent, a few bad payloads)",
    )
    up.add_argument(
        "--sim-interval",
        type=_sim_interval,
        default="heartbeat",
        metavar="heartbeat|SECONDS|random:MIN-MAX",
        help="with --simulate, seconds between a node's readings (default: each node's heartbeat interval)",
    )
    up.add_argument("--duration", type=positive_float, help="stop after this many seconds (default: until Ctrl-C)")
    up.add_argument("--summary-json", metavar="FILE", help="write a JSON summary of the run here")
    up.add_argument(
        "--broker", metavar="URL", help="use this MQTT broker (mqtt://host:1883, or mqtts://host:8883 for TLS) instead of starting one"
    )
    _add_broker_access(up, " (with --broker)")
    up.add_argument(
        "--broker-kind",
        choices=("auto", "mosquitto", "embedded"),
        default="auto",
        help="which broker to start when --broker is not given (auto: mosquitto when installed)",
    )
    up.add_argument(
        "--broker-port",
        type=port,
        metavar="PORT",
        help="the port of the broker up starts, on 127.0.0.1 (e.g. 1883, for nodes configured with it; default: any free port)",
    )
    up.add_argument(
        "--db",
        metavar="FILE|URL",
        help="SQLite file for the embedded store, or postgresql://user@host/db (password from the file "
        "$PLANTWATCH_DB_PASSWORD_FILE names) (default: $XDG_STATE_HOME/plantwatch/<plant>.db, "
        "~/.local/state/... without it; kept for plantwatch query); the run is durable: "
        "a persistent MQTT session, and the rule state checkpointed, so a restart on the same store continues",
    )
    up.add_argument(
        "--client-id",
        help="MQTT client id of the persistent session (default: plantwatch-up-<hash of the "
        "--db path>); the dead-letter publisher and simulator use <client-id>-dlq and -sim",
    )
    up.add_argument("--http-port", type=port, default=9464, help="port of /metrics /healthz /readyz (0: any free port)")
    up.add_argument("--status-every", type=positive_float, default=5.0, help="seconds between console status lines")
    up.add_argument("--window-seconds", type=positive_float, default=60.0, help="width of the tumbling-window summaries")
    _add_policy(up)
    _add_retention(up)
    _add_api(up, "a Secret manifest in the plant folder")
    up.set_defaults(func=_up)

    val = sub.add_parser("validate", help="check plant YAML against the CRD schemas (as the API server would)")
    val.add_argument("-f", "--file", action="append", required=True, help="plant YAML file or folder (repeatable)")
    val.set_defaults(func=_validate)

    cv = sub.add_parser(
        "chart-values",
        help="print a plant folder's manifests as the chart's values (helm install ... -f values.yaml)",
    )
    cv.add_argument("-f", "--file", action="append", required=True, help="plant YAML file or folder (repeatable)")
    cv.set_defaults(func=_chart_values)

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions (pipe to kubectl apply -f -)")
    crds.set_defaults(func=_crds)

    serve = sub.add_parser("serve", help="run one data-plane service (what the operator's Deployments run)")
    serve_sub = serve.add_subparsers(dest="service", required=True, metavar="SERVICE")
    ingest = serve_sub.add_parser("ingest", help="the gateway: subscribe, validate, store, evaluate rules")
    ingest.add_argument("-f", "--file", action="append", required=True, help="plant YAML file or folder")
    ingest.add_argument("--broker", required=True, metavar="URL", help="MQTT broker: mqtt://host:1883, or mqtts://host:8883 for TLS")
    _add_broker_access(ingest)
    ingest.add_argument(
        "--db",
        default="/var/lib/plantwatch/plant.db",
        help="the store: a SQLite file, or postgresql://user@host/db, the cluster's shared store of record "
        "(password from the file $PLANTWATCH_DB_PASSWORD_FILE names)",
    )
    ingest.add_argument("--http-port", type=port, default=8080, help="port of /metrics /healthz /readyz")
    ingest.add_argument(
        "--client-id",
        default="plantwatch-gateway",
        help="MQTT client id of the persistent session (the broker keeps unacknowledged messages for it)",
    )
    ingest.add_argument("--influx-url", help="also write to this InfluxDB 2.x (http://host:8086); token from $INFLUXDB_TOKEN")
    ingest.add_argument("--influx-org", default="plantwatch", help="InfluxDB organization")
    ingest.add_argument("--influx-bucket", default="plant", help="InfluxDB bucket")
    ingest.add_argument(
        "--influx-layout",
        choices=INFLUX_LAYOUTS,
        default=INFLUX_LAYOUTS[0],
        help="narrow: a point per reading (measurement reading, tags node, sensor, type, unit; field value); "
        "wide: a point per node and timestamp (measurement node_readings, tag node, a field per sensor), "
        "as Telegraf writes a JSON message, with about half the InfluxDB CPU",
    )
    ingest.add_argument(
        "--influx-spool",
        default="/var/lib/plantwatch/influx-spool",
        help="where batches wait (on disk, in order) while InfluxDB is unreachable",
    )
    ingest.add_argument(
        "--influx-spool-max-bytes",
        type=positive_int,
        default=1 << 30,
        help="spool bound; when full, batches are not acknowledged (the broker keeps them)",
    )
    ingest.add_argument(
        "--report-status",
        action="store_true",
        help="write each SensorNode's status to Kubernetes: the Online, InRange, Sequential and ClockInSync conditions, "
        "lastSeen, the rate and status.quality",
    )
    ingest.add_argument("--status-namespace", help="namespace of the SensorNodes (default: $POD_NAMESPACE)")
    ingest.add_argument(
        "--status-writes-per-second",
        type=positive_float,
        default=20.0,
        help="with --report-status: at most this many SensorNode status writes per second (default 20; the most urgent first)",
    )
    ingest.add_argument(
        "--quality-max-out-of-range-percent",
        type=non_negative_float,
        default=1.0,
        help="a SensorNode's InRange is False above this share of its values outside their sensor's range over 5 min (default 1)",
    )
    ingest.add_argument(
        "--quality-max-gap-percent",
        type=non_negative_float,
        default=0.0,
        help="a Sparkplug SensorNode's Sequential is False above this share of messages out of sequence over 5 min (default 0: any)",
    )
    ingest.add_argument(
        "--quality-max-clock-skew",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a SensorNode's ClockInSync is False when its median payload-minus-receive time exceeds this (default 10)",
    )
    ingest.add_argument(
        "--secrets-dir",
        default=MOUNT_DIR if os.path.isdir(MOUNT_DIR) else None,
        help=f"the AlertReceivers' Secrets, a folder per Secret and a file per key (default: {MOUNT_DIR} when it exists, "
        "where the operator mounts them)",
    )
    ingest.add_argument(
        "--score-url",
        metavar="URL",
        help="score every DetectorModel through its inference service, {name} = the DetectorModel "
        "(e.g. http://plantwatch-detector-{name}:8080); scores become anomaly_score readings",
    )
    ingest.add_argument(
        "--shards",
        type=positive_int,
        help="scale out: split the nodes into this many shards (fixed for the plant's life, e.g. 16), "
        "each its own MQTT session <client-id>-shard-<k>; see docs/scale-out.md",
    )
    ingest.add_argument(
        "--membership",
        choices=("fixed", "store"),
        help="with --shards: 'store' divides the shards among the gateways registered as alive in the shared "
        "PostgreSQL --db, however many run (an HPA's Deployment); 'fixed' by --replicas and --replica-index "
        "(default: store with a PostgreSQL --db and neither of those, else fixed)",
    )
    ingest.add_argument("--replicas", type=positive_int, help="with --shards: how many replicas share the shards (default 1)")
    ingest.add_argument(
        "--replica-index",
        type=non_negative_int,
        help="with --shards: this replica's index, 0..replicas-1 (default: the ordinal that ends $HOSTNAME, as in a StatefulSet pod)",
    )
    ingest.add_argument(
        "--shard-lease-seconds",
        type=positive_float,
        default=10.0,
        help="with --shards: take an assigned shard back when its current owner has not renewed its lease for this long (default 10)",
    )
    _add_policy(ingest)
    _add_retention(ingest)
    _add_api(ingest, "read from --secrets-dir, where the operator mounts Secrets")
    ingest.set_defaults(func=_serve_ingest)

    inf = serve_sub.add_parser("inference", help="serve a DetectorModel over the Open Inference Protocol (HTTP)")
    inf.add_argument("--model-name", required=True, help="the DetectorModel's name (the URL's {name})")
    inf.add_argument("--model", metavar="PATH", help="the ONNX file")
    inf.add_argument("--model-url", metavar="URL", help="download the ONNX file (needs --sha256)")
    inf.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu", help="execution provider (falls back to cpu)")
    inf.add_argument("--sha256", help="refuse to serve a model with another checksum")
    inf.add_argument(
        "--shadow-model",
        metavar="PATH",
        help="a candidate ONNX file (with its model card) scored on the same rows, never answered with; "
        "its alarm rate and disagreement are reported in status.shadow",
    )
    inf.add_argument("--threads", type=non_negative_int, default=1, help="ONNX Runtime intra-op threads (0: its default)")
    inf.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback only; 0.0.0.0: every interface, as in a pod)"
    )
    inf.add_argument("--http-port", type=port, default=8080, help="port of the OIP endpoints and /metrics")
    inf.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=4 << 20,
        help="largest request body; a larger one is refused (413) unread (default 4 MiB)",
    )
    inf.add_argument(
        "--read-timeout",
        type=positive_float,
        default=10.0,
        help="seconds a request's body may take to arrive after its head (408 after; default 10)",
    )
    inf.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=15.0,
        help="seconds a connection may go without a complete request head before it is closed (default 15)",
    )
    inf.add_argument(
        "--workers",
        type=positive_int,
        default=8,
        help="requests served at once; more wait unread (memory: about 15 x --max-body-bytes each), and at "
        "most this many share a micro-batch (default 8)",
    )
    inf.add_argument(
        "--max-connections",
        type=positive_int,
        default=512,
        help="open connections; a request on one more is answered 503 and closed (default 512)",
    )
    inf.add_argument(
        "--max-batch",
        type=positive_int,
        help="most rows of concurrent requests coalesced into one model call; 1: none "
        "(default: 256 on cuda/tensorrt, 1 on cpu, where it measured no gain)",
    )
    inf.add_argument(
        "--max-wait-ms",
        type=non_negative_float,
        default=1.0,
        help="longest a request waits for others to share its model call (default 1 ms)",
    )
    inf.add_argument(
        "--reload-interval",
        type=non_negative_float,
        default=2.0,
        help="seconds between checks of the model file for a new version (0: never reload)",
    )
    inf.add_argument(
        "--status-namespace", help="report the DetectorModel's ModelValid, activeProvider, modelSha256 and signature in this namespace"
    )
    inf.set_defaults(func=_serve_inference)

    bx = serve_sub.add_parser(
        "broker-exporter",
        help="export the broker's $SYS figures and the plant's traffic per topic pattern as Prometheus metrics",
        description="Subscribe to Mosquitto's $SYS/broker/# and to the plant's topic patterns and serve /metrics and /healthz. "
        "See docs/monitoring.md, The broker exporter.",
    )
    bx.add_argument("--broker", required=True, metavar="URL", help="MQTT broker: mqtt://host:1883, or mqtts://host:8883 for TLS")
    _add_broker_access(bx)
    bx.add_argument(
        "--topic-pattern",
        action="append",
        metavar="FILTER[=FORMAT]",
        help="count messages, payload bytes, latency and unreadable payloads under this MQTT topic filter "
        "(e.g. 'sensors/+/+/data'; repeatable; the first that matches a topic counts it); FORMAT is the payload "
        "format its timestamps are read with (default: --payload-format)",
    )
    bx.add_argument("--payload-format", default="esp32-json", help="payload format of patterns that name none (default esp32-json)")
    bx.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default: every interface, as in a pod; 127.0.0.1: loopback only)"
    )
    bx.add_argument("--port", type=port, default=9234, help="port of /metrics and /healthz (default 9234)")
    bx.set_defaults(func=_serve_broker_exporter)

    if with_detector:
        from plantwatch.detect.cli import add_commands as add_detector_commands

        add_detector_commands(sub)
    else:  # listed in --help without importing numpy, onnx and scikit-learn into every command
        sub.add_parser("detector", help="train, score and evaluate anomaly detectors (plantwatch detector --help)")

    add_alerts_commands(sub)
    add_query_commands(sub)

    rules = sub.add_parser("rules", help="try alert rules on stored history (plantwatch rules backtest --help)")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    bt = rules_sub.add_parser(
        "backtest",
        help="replay a store's readings through AlertRules: what would have fired, when, for how long, who would have been told",
        description="Replay the stored readings of the series the rules select through the live rule engine and notifier, "
        "in event time, and print each alert episode and the notifications each receiver would have been sent "
        "(grouping, repeats, escalation and maintenance windows applied; silences are live state and are not). "
        "Nothing is written to the store and nothing is sent. See docs/alerting.md, Backtesting a rule.",
    )
    bt.add_argument(
        "-f",
        "--file",
        action="append",
        required=True,
        help="plant YAML file or folder (repeatable): the SensorNodes the rules select, the receivers and the rules; "
        "an AlertRule in a later -f replaces the one of the same name before it (-f plant/ -f tuned-rule.yaml)",
    )
    bt.add_argument("--store", required=True, metavar="DB", help="SQLite store of `plantwatch up --db` or `serve ingest --db` (read only)")
    bt.add_argument(
        "--from", dest="start", type=timestamp, metavar="T", help="start, RFC 3339 or epoch seconds (default: the first stored reading)"
    )
    bt.add_argument(
        "--to", dest="end", type=timestamp, metavar="T", help="end, RFC 3339 or epoch seconds (default: the last stored reading)"
    )
    bt.add_argument("--rule", action="append", metavar="NAME", help="try only this AlertRule of the files (repeatable; default: all)")
    bt.add_argument("--json", action="store_true", help="print the report as JSON")
    bt.set_defaults(func=_rules_backtest)

    doc = sub.add_parser(
        "doctor",
        help="diagnose a connection to a broker: DNS, TCP, TLS, authentication, round trip, ACL",
        description="Check step by step what a node or the gateway needs from its broker and say, for each failure, "
        "what to fix. Exit status 0 when nothing failed (warnings allowed), 1 otherwise. See docs/security.md, plantwatch doctor.",
    )
    doc.add_argument("url", help="mqtts://host[:8883] (TLS) or mqtt://host[:1883]; no credentials in it")
    doc.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify the broker with (PEM; default: the system's)")
    doc.add_argument("--cert", metavar="FILE", help="client certificate (PEM) for brokers that require one")
    doc.add_argument("--key", metavar="FILE", help="its private key (PEM; default: in --cert)")
    doc.add_argument("--username", help="user name to connect as (a node's, or the gateway's)")
    doc.add_argument("--password-file", metavar="FILE", help="file whose first line is the password (never the password itself)")
    doc.add_argument("--client-id", help="client id to connect with (default: plantwatch-doctor-<random>)")
    doc.add_argument("--topic", metavar="T", help="this identity's own topic: published to and read back (default: plantwatch/doctor/<id>)")
    doc.add_argument("--forbidden-topic", metavar="T", help="another node's topic this identity must not be able to publish to")
    doc.add_argument("--observer-username", help="a second identity that may read --topic and --forbidden-topic (the gateway's)")
    doc.add_argument("--observer-password-file", metavar="FILE", help="the observer's password file")
    doc.add_argument("--mqtt-version", choices=("5", "3.1.1"), default="5", help="protocol to speak (default 5)")
    doc.add_argument("--timeout", type=positive_float, default=5.0, help="seconds to wait for each answer (default 5)")
    doc.add_argument("--json", action="store_true", help="print the checks and the verdict as JSON")
    doc.set_defaults(func=_doctor)

    pr = sub.add_parser(
        "probe",
        help="GET a health URL (e.g. a gateway's /readyz); exit 0 on 200, 1 otherwise (the chart's helm test runs it)",
    )
    pr.add_argument("url", help="http://host:port/readyz")
    pr.add_argument("--timeout", type=positive_float, default=10.0, help="seconds to wait for the answer (default 10)")
    pr.set_defaults(func=_probe)

    db_help = "the store: a SQLite file, or postgresql://user@host/db (password from $PLANTWATCH_DB_PASSWORD_FILE)"
    bk = sub.add_parser("backup", help="write a store (readings, summaries, alert state, dead letters, checkpoints) to one file")
    bk.add_argument("--db", required=True, help=db_help)
    bk.add_argument("--out", required=True, metavar="FILE", help="the backup file to write (gzip'd JSON lines)")
    bk.set_defaults(func=_backup)
    rs = sub.add_parser("restore", help="load a `plantwatch backup` file into a new, empty store (either engine)")
    rs.add_argument("--db", required=True, help=db_help)
    rs.add_argument("--from", dest="src", required=True, metavar="FILE", help="the backup file")
    rs.set_defaults(func=_restore)

    op = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    op.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable; default: all)")
    op.add_argument("--liveness-port", type=port, default=None, help="serve kopf's liveness probe on this port")
    op.add_argument("--peering", default=None, help="kopf peering name (default: standalone, one replica)")
    op.add_argument("--metrics-port", type=port, default=None, help="serve Prometheus /metrics on this port")
    op.set_defaults(func=_operator)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(with_detector="detector" in argv).parse_args(argv)
    configure_logging(args.log_level or "WARNING", args.log_format)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
