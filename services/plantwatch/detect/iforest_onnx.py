"""A fitted scikit-learn IsolationForest as one ONNX TreeEnsembleRegressor node.

skl2onnx exports each of the forest's trees as its own subgraph (a tree node, a
path-length lookup and an add per tree: hundreds of nodes), which ONNX Runtime
runs at about a quarter of scikit-learn's speed. The forest's score needs far
less: every leaf already knows its contribution to the mean path length,

    h(leaf) = depth(leaf) + c(samples that reached the leaf in training),

so one TreeEnsembleRegressor whose leaf values are h / n_trees, summed over the
trees, gives E[h(x)]; then score_samples(x) = -2^(-E[h(x)] / c(max_samples)).
`c(n)` is the average path length of an unsuccessful binary-search-tree search
(Liu, Ting and Zhou, "Isolation Forest", 2008).

Thresholds: scikit-learn compares float32 inputs with float64 thresholds, ONNX
with float32 ones. Rounding each threshold *down* to the nearest float32 keeps
`x <= t` exactly the same decision for every float32 x.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

#: ai.onnx.ml opset whose TreeEnsembleRegressor this module emits (ONNX Runtime supports 1..3).
ML_OPSET = 3


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the mean path length of an unsuccessful search in a binary search tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _float32_at_most(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= t, elementwise (see the module doc)."""
    t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(left), dtype=np.int64)
    for node in range(len(left)):  # scikit-learn numbers a child after its parent
        if left[node] != -1:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
    return depth


def expected_path_length_node(forest, input_name: str, output_name: str) -> helper.NodeProto:
    """One TreeEnsembleRegressor: `input_name` [batch, n_features] float32 -> E[h(x)] as [batch, 1]."""
    n_trees = len(forest.estimators_)
    n_features = forest.n_features_in_
    attrs: dict[str, list] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "target_treeids",
            "target_nodeids",
            "target_weights",
        )
    }
    for tree_id, (estimator, features) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        tree = estimator.tree_
        left, right = tree.children_left, tree.children_right
        leaf = left == -1
        # A tree fitted on a feature subset numbers its features within that subset.
        feature_map = np.asarray(features) if forest._max_features != n_features else np.arange(n_features)
        contribution = (_node_depths(left, right) + average_path_length(tree.n_node_samples)) / n_trees
        count = len(left)
        attrs["nodes_treeids"] += [tree_id] * count
        attrs["nodes_nodeids"] += list(range(count))
        attrs["nodes_featureids"] += np.where(leaf, 0, feature_map[np.maximum(tree.feature, 0)]).tolist()
        attrs["nodes_values"] += np.where(leaf, 0.0, _float32_at_most(tree.threshold)).tolist()
        attrs["nodes_modes"] += ["LEAF" if is_leaf else "BRANCH_LEQ" for is_leaf in leaf]
        attrs["nodes_truenodeids"] += np.where(leaf, 0, left).tolist()
        attrs["nodes_falsenodeids"] += np.where(leaf, 0, right).tolist()
        leaves = np.flatnonzero(leaf)
        attrs["target_treeids"] += [tree_id] * len(leaves)
        attrs["target_nodeids"] += leaves.tolist()
        attrs["target_weights"] += contribution[leaves].tolist()
    return helper.make_node(
        "TreeEnsembleRegressor",
        [input_name],
        [output_name],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        target_ids=[0] * len(attrs["target_nodeids"]),
        **attrs,
    )


def anomaly_score_graph(forest, input_name: str = "z", output_name: str = "score", prefix: str = "if_") -> tuple[list, list, list]:
    """Nodes, initializers and opsets computing -score_samples(x) = 2^(-E[h(x)] / c(max_samples)), shape [batch].

    Written as exp(E[h] * -ln 2 / c) so the whole tail is three elementwise nodes.
    """
    from onnx import numpy_helper

    c = float(average_path_length(np.array([forest._max_samples]))[0])
    # One training sample: no path is shorter than another and scikit-learn scores every x as 1.
    factor = -np.log(2.0) / c if c > 0 else 0.0
    nodes = [
        expected_path_length_node(forest, input_name, f"{prefix}depth"),
        helper.make_node("Mul", [f"{prefix}depth", f"{prefix}factor"], [f"{prefix}exponent"]),
        helper.make_node("Exp", [f"{prefix}exponent"], [f"{prefix}score2d"]),
        helper.make_node("Reshape", [f"{prefix}score2d", f"{prefix}shape"], [output_name]),
    ]
    inits = [
        numpy_helper.from_array(np.asarray(factor, np.float32), f"{prefix}factor"),
        numpy_helper.from_array(np.asarray([-1], np.int64), f"{prefix}shape"),
    ]
    return nodes, inits, [helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
