"""The payload-format registry: every format round-trips its vectors, and the CRD offers exactly the registered ones."""

from __future__ import annotations

import base64
import importlib.util
import json

import pytest
import yaml

from plantwatch.contracts.times import parse_timestamp
from plantwatch.ingest.codecs import DecodeError
from plantwatch.ingest.formats import DECODABLE, FORMATS, decoder
from plantwatch.ingest.validate import CompiledNode
from plantwatch.plant.load import load_plant
from plantwatch.plant.model import device_id
from tests.conftest import ROOT

VECTORS = ROOT / "tests" / "vectors"
SENSORNODE_CRD = ROOT / "crds" / "sensornodes.plantwatch.io.yaml"


def _generator():
    spec = importlib.util.spec_from_file_location("plantwatch_generate", ROOT / "tools" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_crd_enum_is_the_registry_in_order():
    crd = yaml.safe_load(SENSORNODE_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    payload = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["payload"]
    assert payload["properties"]["format"]["enum"] == list(FORMATS)


def test_the_generator_writes_the_registry_into_the_crd(tmp_path):
    stale = tmp_path / SENSORNODE_CRD.name
    stale.write_text(SENSORNODE_CRD.read_text().replace("influx-line, sparkplug-b,", "sparkplug-b, influx-line,"))
    assert stale.read_text() != SENSORNODE_CRD.read_text()
    assert _generator().generate_sensornode_crd(stale) == SENSORNODE_CRD.read_text()


def test_the_generator_refuses_a_format_the_crd_does_not_describe(tmp_path):
    undescribed = tmp_path / SENSORNODE_CRD.name
    undescribed.write_text(SENSORNODE_CRD.read_text().replace("`influx-line`: InfluxDB", "InfluxDB"))
    with pytest.raises(SystemExit, match="says nothing of influx-line"):
        _generator().generate_sensornode_crd(undescribed)


def test_every_decodable_format_has_vectors_and_only_session_formats_have_no_codec():
    assert {p.name for p in VECTORS.iterdir() if p.is_dir()} == set(DECODABLE)
    sessions = [name for name, fmt in FORMATS.items() if fmt.decode is None]
    assert sessions == ["sparkplug-b"]  # read by plantwatch.ingest.sparkplug, whose tests round-trip it
    assert all(FORMATS[name].encode is None for name in sessions)


@pytest.mark.parametrize("name", DECODABLE)
def test_encode_then_decode_gives_back_what_each_vector_decodes_to(name, plant):
    fmt = FORMATS[name]
    round_trips = 0
    for path in sorted((VECTORS / name).glob("*.json")):
        vector = json.loads(path.read_text())
        try:
            samples = fmt.decode(base64.b64decode(vector["payload_base64"]) if "payload_base64" in vector else vector["payload"].encode())
        except DecodeError:
            continue  # a vector of what is refused before any value is read: nothing to re-encode
        node = next(n for n in (*plant.nodes, *load_plant(ROOT / "examples" / "camera").nodes) if n.name == vector["node"])
        for sample in samples:
            if sample.ts is None:
                continue  # stamped on receipt (jpeg-frame): what it re-encodes to carries a stamp
            ts = parse_timestamp(sample.ts)
            parts = [{k: v} for k, v in sample.fields.items()] if fmt.one_value else [sample.fields]
            for fields in parts:
                (again,) = fmt.decode(fmt.encode(device_id(node), ts, fields))
                assert again.fields == fields, path.name
                assert parse_timestamp(again.ts) == pytest.approx(ts, abs=1e-6), path.name
                assert again.device_id == (device_id(node) if fmt.names_device else None), path.name
                round_trips += 1
    assert round_trips > 0, f"no vector of {name} decodes"


def test_an_unknown_or_session_format_is_refused_per_message_not_at_compile_time():
    for name in ("sparkplug-b", "protobuf-x"):
        with pytest.raises(DecodeError) as err:
            decoder(name)(b"{}")
        assert err.value.reason == "unsupported_format" and "decodable: esp32-json" in err.value.detail


def test_payloads_read_through_one_decoder_resolved_per_node(plant):
    for node in plant.nodes:
        assert CompiledNode.of(node).decode is FORMATS[node.spec.payload.format].decode
