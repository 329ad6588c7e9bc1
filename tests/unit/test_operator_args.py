"""The container args the operator renders are parsed by the real CLI parser, and say what the
rendering means: the port the Service targets, the files the volumes mount, the host the pod
is reached on. A flag renamed in the CLI, or a path changed in one place only, fails here."""

from __future__ import annotations

import argparse
import copy
import posixpath

import pytest

from plantwatch import cli
from plantwatch.plant.model import parse_resource
from plantwatch.secrets import MOUNT_DIR
from plantwatch_operator.render import plant_manifest, render_detector, render_ingestion
from tests.unit.test_render import API, CONFIG, sample_docs

SOURCES = {
    "configMap": {"configMap": {"name": "bearing-wear-model", "key": "model.onnx"}, "sha256": "a" * 64},
    "configMap-no-sha": {"configMap": {"name": "bearing-wear-model", "key": "bearing-v2.onnx"}},
    "pvc": {"pvc": {"claimName": "models", "path": "/bearing/model.onnx"}, "sha256": "b" * 64},
    "url": {"url": {"url": "https://models.example/bearing.onnx", "sha256": "c" * 64}},
}


def parsed(deployment: dict) -> argparse.Namespace:
    """The container's args as `plantwatch` (the image's entrypoint) parses them."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    argv = container["args"]
    try:
        return cli.parser(with_detector="detector" in argv).parse_args(argv)  # as cli.main builds it
    except SystemExit:
        pytest.fail(f"the CLI refuses the args rendered for Deployment {deployment['metadata']['name']}: {argv}")


def port_of(objects: list[dict], deployment: dict) -> int:
    """The container port the Deployment's Service sends traffic to."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == deployment["metadata"]["name"])
    [port] = service["spec"]["ports"]
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"])


def mount_of(deployment: dict, path: str) -> tuple[dict, dict]:
    """The volume mount holding `path`, and its volume."""
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if posixpath.commonpath([m["mountPath"], path]) == m["mountPath"])
    return mount, next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_the_gateway_args_parse_to_what_was_rendered():
    objects = render_ingestion("plant-a", [plant_manifest(d) for d in sample_docs()], CONFIG)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = parsed(deployment)
    assert (args.command, args.service) == ("serve", "ingest")
    assert args.log_format == "json"  # what the log shippers parse (docs/monitoring.md, "Logs")
    assert args.http_port == port_of(objects, deployment)
    assert args.broker == CONFIG.broker_url
    assert args.report_status
    [folder] = args.file
    mount, volume = mount_of(deployment, folder)
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    assert mount["mountPath"] == folder and volume["configMap"]["name"] == configmap["metadata"]["name"]
    mount, volume = mount_of(deployment, args.db)
    assert not mount.get("readOnly") and volume["persistentVolumeClaim"]["claimName"] == "plantwatch-gateway-data"  # kept across rollouts
    detector = next(parse_resource(d) for d in sample_docs() if d["kind"] == "DetectorModel")
    detector_objects = render_detector(detector, CONFIG)
    detector_deployment = next(o for o in detector_objects if o["kind"] == "Deployment")
    assert (
        args.score_url.format(name=detector.name)
        == f"http://{detector_deployment['metadata']['name']}:{port_of(detector_objects, detector_deployment)}"
    )


@pytest.mark.parametrize("provider", ["cpu", "cuda", "tensorrt"])
@pytest.mark.parametrize("source", SOURCES)
def test_the_inference_args_parse_to_what_was_rendered(source, provider):
    doc = copy.deepcopy(next(d for d in sample_docs() if d["kind"] == "DetectorModel"))
    doc["spec"]["source"], doc["spec"]["executionProvider"] = SOURCES[source], provider
    detector = parse_resource(doc)
    objects = render_detector(detector, CONFIG)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = parsed(deployment)
    assert (args.command, args.service) == ("serve", "inference")
    assert args.log_format == "json"
    assert (args.model_name, args.provider) == (detector.name, provider)
    assert args.host == "0.0.0.0"  # the Service and the kubelet's probes come in over the pod's address
    assert args.http_port == port_of(objects, deployment)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert args.status_namespace == "$(POD_NAMESPACE)"
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]
    spec = SOURCES[source]
    if "url" in spec:
        assert (args.model, args.model_url, args.sha256) == (None, spec["url"]["url"], spec["url"]["sha256"])
        assert deployment["spec"]["template"]["spec"]["volumes"] == []
        return
    assert (args.model_url, args.sha256) == (None, spec.get("sha256"))
    mount, volume = mount_of(deployment, args.model)
    assert mount["readOnly"]
    relative = posixpath.relpath(args.model, mount["mountPath"])
    if "configMap" in spec:
        assert volume["configMap"]["name"] == spec["configMap"]["name"] and relative == spec["configMap"]["key"]
    else:
        assert volume["persistentVolumeClaim"] == {"claimName": spec["pvc"]["claimName"], "readOnly": True}
        assert relative == spec["pvc"]["path"].lstrip("/")


def test_the_gateway_api_token_args_name_a_key_the_pod_mounts_where_the_gateway_reads_secrets():
    objects = render_ingestion("plant-a", [plant_manifest(d) for d in sample_docs()], API)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = parsed(deployment)
    assert args.api_token_secret == ("plantwatch-api", "token") and args.api_open_reads
    name, key = args.api_token_secret
    mount, volume = mount_of(deployment, f"{MOUNT_DIR}/{name}/{key}")  # MOUNT_DIR: --secrets-dir's default in the pod
    assert mount["readOnly"] and volume["secret"]["secretName"] == name
    assert {"key": key, "path": posixpath.relpath(f"{MOUNT_DIR}/{name}/{key}", mount["mountPath"])} in volume["secret"]["items"]
