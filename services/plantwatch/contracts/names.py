"""Names that several packages (and the cluster) must spell the same way."""

from __future__ import annotations

#: The custom resources' API group and served version (crds/*.yaml).
GROUP = "plantwatch.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
SENSOR_NODE = "SensorNode"
ALERT_RULE = "AlertRule"
DETECTOR_MODEL = "DetectorModel"
ALERT_RECEIVER = "AlertReceiver"

#: Server-side apply field managers: each writer owns what it observes (docs/kubernetes.md).
OPERATOR_MANAGER = "plantwatch-operator"
GATEWAY_MANAGER = "plantwatch-gateway"
#: Once the inference service has written ModelValid it owns that condition, activeProvider and modelSha256.
INFERENCE_MANAGER = "plantwatch-inference"

#: Label keys.
PART_OF_LABEL = "app.kubernetes.io/part-of"
DETECTOR_LABEL = f"{GROUP}/detector"

#: DetectorModel spec.executionProvider values (the CRD's enum), each with its ONNX Runtime provider.
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
EXECUTION_PROVIDERS = tuple(ORT_PROVIDERS)

#: Receivers every plant has without an AlertReceiver: `console` writes each notification to the log.
BUILTIN_RECEIVERS = ("console",)

#: A trained detector's files: in its directory, and as keys of the ConfigMap that `detector publish` writes.
MODEL_FILE = "model.onnx"
CARD_FILE = "model-card.json"

#: How the gateway lays readings out in InfluxDB (`serve ingest --influx-layout`, the chart's store.influxdb.layout):
#: narrow, a point per reading; wide, a point per node and timestamp (store/influx.py). The first is the default.
INFLUX_LAYOUTS = ("narrow", "wide")
