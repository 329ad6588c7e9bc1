"""When an inference pod reports (pure): only for the spec it was started for, and not over the operator's SourceNotFound."""

from __future__ import annotations

from plantwatch.inference.models import sha256_of
from plantwatch.inference.slot import ModelSlot
from plantwatch.inference.status import spec_sha256, status_to_report
from plantwatch.inference.zscore import zscore_model


def detector(source: dict, generation: int = 2) -> dict:
    return {
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "spec": {"source": source},
        "status": {"conditions": []},
    }


def test_an_old_pod_does_not_report_on_the_new_spec(tmp_path):
    old, new = zscore_model([0.0, 0.0], [1.0, 1.0]), zscore_model([1.0, 1.0], [1.0, 1.0])
    (tmp_path / "model.onnx").write_bytes(new)  # the ConfigMap was swapped under the old pod
    old_pod = ModelSlot("m", tmp_path / "model.onnx", expected_sha256=sha256_of(old))
    old_pod.check()
    assert old_pod.verdict.reason == "ChecksumMismatch"
    swapped = detector({"configMap": {"name": "m-model"}, "sha256": sha256_of(new)})
    assert status_to_report(old_pod, swapped, "t") is None  # not its DetectorModel spec any more: no False, no generation 2
    new_pod = ModelSlot("m", tmp_path / "model.onnx", expected_sha256=sha256_of(new))
    new_pod.check()
    status = status_to_report(new_pod, swapped, "t")
    assert status["conditions"][0]["reason"] == "ModelLoaded" and status["conditions"][0]["observedGeneration"] == 2
    old_pod.close()
    new_pod.close()


def test_the_spec_sha256_is_the_one_the_operator_passes_as_sha256(tmp_path):
    assert spec_sha256(detector({"url": {"url": "https://x/m.onnx", "sha256": "a" * 64}})) == "a" * 64
    assert spec_sha256(detector({"configMap": {"name": "m-model"}, "sha256": "b" * 64})) == "b" * 64
    assert spec_sha256(detector({"configMap": {"name": "m-model"}})) is None
    (tmp_path / "model.onnx").write_bytes(zscore_model([0.0], [1.0]))
    slot = ModelSlot("m", tmp_path / "model.onnx")  # no --sha256: the spec names none either, so it reports
    slot.check()
    assert status_to_report(slot, detector({"configMap": {"name": "m-model"}}), "t")["conditions"][0]["reason"] == "ModelLoaded"
    # A pod without --sha256 once the spec names one was started for the earlier spec.
    assert status_to_report(slot, detector({"configMap": {"name": "m-model"}, "sha256": "b" * 64}), "t") is None
    slot.close()


def test_the_operators_source_not_found_stands_until_its_check_passes(tmp_path):
    (tmp_path / "model.onnx").write_bytes(zscore_model([0.0], [1.0]))
    slot = ModelSlot("m", tmp_path / "model.onnx")
    slot.check()
    current = detector({"configMap": {"name": "m-model"}})
    current["status"]["conditions"] = [{"type": "ModelValid", "status": "False", "reason": "SourceNotFound"}]
    assert status_to_report(slot, current, "t") is None
    current["status"]["conditions"] = [{"type": "ModelValid", "status": "True", "reason": "SourceVerified"}]
    assert status_to_report(slot, current, "t")["conditions"][0]["reason"] == "ModelLoaded"
    slot.close()
