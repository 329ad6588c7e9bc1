"""The one-node IsolationForest export scores exactly what scikit-learn's score_samples scores."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from sklearn.ensemble import IsolationForest

from plantwatch.detect.iforest_onnx import anomaly_score_graph, average_path_length


def session_of(forest) -> ort.InferenceSession:
    nodes, inits, opsets = anomaly_score_graph(forest)
    n = forest.n_features_in_
    graph = helper.make_graph(
        nodes,
        "iforest",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), *opsets])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("max_features, rows, seed", [(1.0, 400, 0), (0.5, 400, 1), (1.0, 40, 2), (1.0, 3000, 3)])
def test_scores_equal_sklearn_score_samples(max_features, rows, seed):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(rows, 9)).astype(np.float32)
    forest = IsolationForest(n_estimators=100, max_features=max_features, random_state=seed).fit(train)
    # Training rows sit exactly on split thresholds' neighbours; far-out rows take the shortest paths.
    scored = np.concatenate([train, rng.normal(scale=3.0, size=(2000, 9)).astype(np.float32)])
    got = session_of(forest).run(None, {"z": scored})[0]
    np.testing.assert_allclose(got, -forest.score_samples(scored), rtol=1e-5, atol=1e-6)


def test_one_node_per_forest_not_per_tree():
    forest = IsolationForest(n_estimators=100, random_state=0).fit(np.random.default_rng(0).normal(size=(300, 4)))
    nodes, _, _ = anomaly_score_graph(forest)
    assert [n.op_type for n in nodes].count("TreeEnsembleRegressor") == 1 and len(nodes) == 4


def test_average_path_length_of_small_and_large_sets():
    np.testing.assert_allclose(average_path_length([0, 1, 2, 3]), [0.0, 0.0, 1.0, 2 * (np.log(2) + np.euler_gamma) - 4 / 3])
    assert 10.0 < average_path_length([256])[0] < 11.0  # 2 ln(255) + 2*0.5772 - 2*255/256
