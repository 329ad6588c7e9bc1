"""The simplest detector: mean squared z-score of the channels, as a real ONNX graph.

Used as the sample plant's starter model and by tests of the serving path; the
trained detectors (the detector issue) export through the same interface:
input `features` [batch, n] float32 → output `score` [batch] float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def zscore_model(mean: Sequence[float], std: Sequence[float]) -> bytes:
    n = len(mean)
    if n == 0 or len(std) != n or any(s <= 0 for s in std):
        raise ValueError("mean and std need the same non-zero length, and every std must be positive")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["features", "mean"], ["centered"]),
            helper.make_node("Div", ["centered", "std"], ["z"]),
            helper.make_node("Mul", ["z", "z"], ["z2"]),
            helper.make_node("ReduceMean", ["z2", "axes"], ["score"], keepdims=0),
        ],
        "zscore",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [
            numpy_helper.from_array(np.asarray(mean, np.float32), "mean"),
            numpy_helper.from_array(np.asarray(std, np.float32), "std"),
            numpy_helper.from_array(np.asarray([1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="plantwatch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
