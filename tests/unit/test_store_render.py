"""The gateway's store as the operator renders it and the chart wires it: the shared PostgreSQL (URL in the args,
password a mounted file, rolled without a gap) or SQLite on a claim that no rollout or garbage collection takes."""

from __future__ import annotations

import base64
import dataclasses

import pytest
import yaml

from plantwatch.cli import parser
from plantwatch.secrets import MOUNT_DIR
from plantwatch.store import postgres
from plantwatch_operator import render
from plantwatch_operator.config import Config
from plantwatch_operator.render import GATEWAY_DATA, plant_manifest, render_ingestion
from tests.unit.test_chart import CHART, helm, sample_values
from tests.unit.test_render import sample_docs

SQLITE = Config(image="ghcr.io/plantwatch/plantwatch:test", broker_url="mqtts://broker:8883")
SHARED = dataclasses.replace(
    SQLITE,
    gateway_db_url="postgresql://plantwatch@line1-postgres.plant-a.svc:5432/plantwatch",
    gateway_db_password_secret=("line1-postgres", "password"),
)


def gateway(config: Config) -> tuple[list[dict], dict, dict]:
    """Everything rendered, the gateway Deployment and its container."""
    objects = render_ingestion("plant-a", [plant_manifest(d) for d in sample_docs()], config)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return objects, deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def volume_at(deployment: dict, container: dict, path: str) -> dict:
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == path)
    return next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])


def test_without_a_shared_store_sqlite_lives_on_an_unowned_claim_and_the_gateway_is_recreated():
    objects, deployment, container = gateway(SQLITE)
    args = parser().parse_args(container["args"])
    assert args.db == f"{render.DATA_DIR}/plant.db" and args.shards is None
    assert deployment["spec"]["replicas"] == 1 and not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert volume_at(deployment, container, render.DATA_DIR) == {"name": "data", "persistentVolumeClaim": {"claimName": GATEWAY_DATA}}
    [claim] = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == GATEWAY_DATA and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in claim["spec"]
    # one pod at a time on a ReadWriteOnce volume
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [e for e in container["env"] if e["name"] == postgres.PASSWORD_FILE_ENV]
    sized = dataclasses.replace(SQLITE, gateway_data_size="50Gi", gateway_data_storage_class="fast")
    [claim] = [o for o in gateway(sized)[0] if o["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi" and claim["spec"]["storageClassName"] == "fast"


def test_on_the_shared_store_the_gateway_connects_by_url_reads_the_password_file_and_rolls_by_shards():
    objects, deployment, container = gateway(SHARED)
    args = parser().parse_args(container["args"])
    assert args.db == SHARED.gateway_db_url
    # sharded, the shards divided among however many pods run: the HPA's, or a rolling update's new pod
    # claiming its share and fencing the old one off
    assert (args.shards, args.membership, args.replicas, args.replica_index) == (render.GATEWAY_SHARDS, "store", None, None)
    assert "replicas" not in deployment["spec"]  # the HorizontalPodAutoscaler's field
    [hpa] = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    env = {e["name"]: e for e in container["env"]}
    password_file = env[postgres.PASSWORD_FILE_ENV]["value"]
    assert password_file == f"{MOUNT_DIR}/line1-postgres/password"
    secret = volume_at(deployment, container, f"{MOUNT_DIR}/line1-postgres")["secret"]
    assert secret["secretName"] == "line1-postgres" and secret["items"] == [{"key": "password", "path": "password"}]
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert "emptyDir" in volume_at(deployment, container, render.DATA_DIR)  # InfluxDB's spool only
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy")
    assert {"ports": [{"protocol": "TCP", "port": 5432}]} in policy["spec"]["egress"]
    assert render.PASSWORD_FILE_ENV == postgres.PASSWORD_FILE_ENV


def test_influxdb_beside_the_store_gets_its_url_and_the_token_from_its_secret():
    config = dataclasses.replace(
        SHARED,
        gateway_influx_url="http://influxdb.monitoring.svc:8086",
        gateway_influx_bucket="line1",
        gateway_influx_token_secret=("plantwatch-influxdb", "token"),
    )
    objects, _, container = gateway(config)
    args = parser().parse_args(container["args"])
    assert (args.influx_url, args.influx_org, args.influx_bucket) == ("http://influxdb.monitoring.svc:8086", "plantwatch", "line1")
    assert args.influx_layout == "narrow"
    wide = parser().parse_args(gateway(dataclasses.replace(config, gateway_influx_layout="wide"))[2]["args"])
    assert wide.influx_layout == "wide"
    [token] = [e for e in container["env"] if e["name"] == "INFLUXDB_TOKEN"]
    assert token == {"name": "INFLUXDB_TOKEN", "valueFrom": {"secretKeyRef": {"name": "plantwatch-influxdb", "key": "token"}}}
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy")
    assert {"ports": [{"protocol": "TCP", "port": 8086}]} in policy["spec"]["egress"]
    _, _, plain = gateway(SHARED)
    assert "--influx-url" not in plain["args"] and "INFLUXDB_TOKEN" not in {e["name"] for e in plain["env"]}


def test_the_store_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("PLANTWATCH_GATEWAY_DB_URL", SHARED.gateway_db_url)
    monkeypatch.setenv("PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET", "line1-postgres/password")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_INFLUX_URL", "https://influx.example:8086")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_INFLUX_TOKEN_SECRET", "influx/token")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_INFLUX_BUCKET", "line1")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_INFLUX_LAYOUT", "wide")
    monkeypatch.setenv("PLANTWATCH_GATEWAY_DATA_SIZE", "20Gi")
    config = Config.from_env()
    assert config.gateway_influx_layout == "wide"
    assert (config.gateway_db_url, config.gateway_db_password_secret) == (SHARED.gateway_db_url, ("line1-postgres", "password"))
    assert (config.gateway_influx_url, config.gateway_influx_token_secret) == ("https://influx.example:8086", ("influx", "token"))
    assert (config.gateway_influx_org, config.gateway_influx_bucket, config.gateway_data_size) == ("plantwatch", "line1", "20Gi")


@pytest.mark.parametrize(
    "env, error",
    [
        ({"PLANTWATCH_GATEWAY_DB_URL": "postgresql://u:hunter2@db/plant"}, "the URL carries a password"),
        ({"PLANTWATCH_GATEWAY_DB_URL": "mysql://u@db/plant"}, "expected postgresql://user@host"),
        ({"PLANTWATCH_GATEWAY_DB_URL": "postgresql://u@db/plant"}, "PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET is not"),
        ({"PLANTWATCH_GATEWAY_INFLUX_URL": "http://influx:8086"}, "PLANTWATCH_GATEWAY_INFLUX_TOKEN_SECRET is not"),
        ({"PLANTWATCH_GATEWAY_DATA_SIZE": "10GB"}, "expected a size such as"),
        (
            {
                "PLANTWATCH_GATEWAY_INFLUX_URL": "http://influx:8086",
                "PLANTWATCH_GATEWAY_INFLUX_TOKEN_SECRET": "i/t",
                "PLANTWATCH_GATEWAY_INFLUX_LAYOUT": "tall",
            },
            "INFLUX_LAYOUT='tall': expected one of narrow, wide",
        ),
    ],
)
def test_a_bad_store_setting_stops_the_operator_saying_what_is_expected(monkeypatch, env, error):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=error) as raised:
        Config.from_env()
    assert "hunter2" not in str(raised.value)


def test_the_chart_retention_reaches_the_gateway_as_flags_and_zero_keeps_rows(tmp_path):
    from plantwatch_operator.config import store

    config = dataclasses.replace(SHARED, **store(operator_env(chart(tmp_path))))
    args = parser().parse_args(gateway(config)[2]["args"])
    assert (args.retention_days, args.summary_retention_days, args.dead_letter_retention_days) == (7.0, 90.0, 7.0)
    kept = store(
        operator_env(chart(tmp_path, "--set", "store.retention.readingsDays=0", "--set-json", "store.retention.summariesDays=0.5"))
    )
    config = dataclasses.replace(SHARED, **kept)
    args = parser().parse_args(gateway(config)[2]["args"])
    assert (args.retention_days, args.summary_retention_days) == (None, 0.5)
    with pytest.raises(ValueError, match="expected a number of days"):
        store({"PLANTWATCH_GATEWAY_RETENTION_DAYS": "a week"})
    with pytest.raises(ValueError, match="dead letters are always deleted in the end; give days > 0"):
        store({"PLANTWATCH_GATEWAY_DEAD_LETTER_RETENTION_DAYS": "0"})
    refused = helm("template", "line1", str(CHART), "-n", "plant-a", "--set", "store.retention.deadLettersDays=0", check=False)
    assert refused.returncode != 0 and "deadLettersDays" in refused.stderr, refused.stderr


# --- the chart ----------------------------------------------------------------------------------


def chart(tmp_path, *args: str) -> list[dict]:
    out = helm("template", "line1", str(CHART), "-n", "plant-a", "-f", sample_values(tmp_path), *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def operator_env(docs: list[dict]) -> dict[str, str]:
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "line1-operator")
    return {e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_chart_runs_postgresql_and_tells_the_operator_where_it_is_and_its_password_secret(tmp_path):
    docs = chart(tmp_path)
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    env = operator_env(docs)
    assert env["PLANTWATCH_GATEWAY_DB_URL"] == "postgresql://plantwatch@line1-postgres.plant-a.svc:5432/plantwatch"
    assert env["PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET"] == "line1-postgres/password"
    secret = by[("Secret", "line1-postgres")]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(base64.b64decode(secret["data"]["password"])) == 32
    assert chart(tmp_path) != docs  # a fresh install draws a fresh password (an upgrade reads the one in the cluster)
    sts = by[("StatefulSet", "line1-postgres")]
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == "line1-postgres"
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 999 and pod["securityContext"]["fsGroup"] == 999
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    container_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert container_env["POSTGRES_PASSWORD_FILE"] == "/etc/postgres-secret/password" and "POSTGRES_PASSWORD" not in container_env
    assert by[("Service", "line1-postgres")]["spec"]["clusterIP"] == "None"
    # the same labels the pods carry: the Service and the policy select the database
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert by[("Service", "line1-postgres")]["spec"]["selector"].items() <= labels.items()
    policy = by[("NetworkPolicy", "line1-postgres")]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    froms = [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in rule["from"]]
    assert froms == ["gateway", "store-backup"]
    operator_rendered = render_ingestion("plant-a", [plant_manifest(d) for d in sample_docs()], SHARED)
    gateway_labels = next(o for o in operator_rendered if o["kind"] == "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    cron = by[("CronJob", "line1-backup")]
    job = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert job["metadata"]["labels"].items() >= rule["from"][1]["podSelector"]["matchLabels"].items()
    backup_env = {e["name"]: e["value"] for e in job["spec"]["containers"][0]["env"]}
    assert backup_env["DB_URL"] == env["PLANTWATCH_GATEWAY_DB_URL"] and backup_env["KEEP"] == "7"
    assert 'plantwatch backup --db "$DB_URL"' in job["spec"]["containers"][0]["args"][0]
    assert by[("PersistentVolumeClaim", "line1-backups")]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_an_external_database_or_none(tmp_path):
    external = chart(
        tmp_path,
        "--set", "store.postgres.enabled=false",
        "--set", "store.postgres.external.url=postgresql://plant@db.example.com/plant",
        "--set", "store.postgres.external.passwordSecret.name=plant-db",
        "--set", "store.postgres.external.passwordSecret.key=password",
    )  # fmt: skip
    kinds = {(d["kind"], d["metadata"]["name"]) for d in external}
    assert ("StatefulSet", "line1-postgres") not in kinds and ("Secret", "line1-postgres") not in kinds
    env = operator_env(external)
    assert env["PLANTWATCH_GATEWAY_DB_URL"] == "postgresql://plant@db.example.com/plant"
    assert env["PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET"] == "plant-db/password"
    assert ("CronJob", "line1-backup") in kinds
    from plantwatch_operator.autoscale import GatewayAutoscaling
    from plantwatch_operator.config import store

    scaled = operator_env(chart(tmp_path, "--set", "gateway.autoscaling.maxReplicas=8"))
    assert store(scaled)["gateway_autoscaling"] == GatewayAutoscaling(min_replicas=1, max_replicas=8, target_messages_per_second=2000)
    none = chart(tmp_path, "--set", "store.postgres.enabled=false", "--set", "store.gateway.persistence.size=5Gi")
    env = operator_env(none)
    assert "PLANTWATCH_GATEWAY_DB_URL" not in env and env["PLANTWATCH_GATEWAY_DATA_SIZE"] == "5Gi"
    assert not [d for d in none if d["kind"] in ("StatefulSet", "CronJob")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "store.postgres.enabled=false", "--set", "store.postgres.external.url=postgresql://u@db/plant"], "passwordSecret"),
        (["--set", "store.influxdb.url=http://influx:8086"], "store.influxdb.tokenSecret.name is required"),
        (["--set", "operator.watchNamespaces={plant-b}"], "serves the plant in the release namespace plant-a only"),
    ],
)
def test_the_chart_refuses_a_store_it_cannot_wire(tmp_path, args, message):
    refused = helm("template", "line1", str(CHART), "-n", "plant-a", *args, check=False)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
