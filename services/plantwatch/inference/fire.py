"""The shipped fire detector: flame colour as an ONNX graph, needing no download.

Input `frames` float32 [N, 3, H, W] (RGB in [0, 1], see `image.py`); output
`fire` float32 [N, 1], the probability that the frame shows flames. A pixel is
flame-coloured to the degree that it is bright and red-dominant (R > 0.6), has
little blue for its red (B < 0.28 R: not a warm-lit grey wall) and enough green
for its red (G > 0.36 R: orange to yellow, not a red paint or a red light); each
test is a steep sigmoid, so the graph is smooth. The frame's flame-coloured share
goes through one more sigmoid centred on `min_share` (0.6 % of the frame by default).

It looks at one frame: no flicker (flames change from frame to frame, a lit
orange object does not), so an orange-yellow object in bright light is a false
alarm it cannot tell apart. Its precision and recall on the project's labelled
frames (`plantwatch.sim.frames`) are in tests/unit/test_fire.py and `make bench`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Steepness of each per-pixel test: 0.05 of the colour scale moves it from 0.27 to 0.73.
STEEPNESS = 40.0
#: The per-pixel tests' thresholds, chosen on frames of seed 1 (`plantwatch.sim.frames`); measured on other seeds.
BRIGHT, BLUE_RATIO, GREEN_RATIO = 0.6, 0.28, 0.36


def fire_model(size: tuple[int, int] = (64, 64), min_share: float = 0.006) -> bytes:
    """The flame-colour detector for frames of `size` = (H, W), as ONNX bytes."""
    h, w = size
    if h < 1 or w < 1 or not 0 < min_share < 1:
        raise ValueError(f"size must be positive and min_share in (0, 1), got {size}, {min_share}")
    k = STEEPNESS
    consts = {
        "k": k,
        "bright": BRIGHT,
        "blue_ratio": BLUE_RATIO,
        "green_ratio": GREEN_RATIO,
        "share": min_share,
        "share_k": 4.0 / min_share,  # 0.5 at min_share, 0.98 at twice it
    }

    def soft(name: str, expr: str) -> list:  # sigmoid(k * expr)
        return [helper.make_node("Mul", [expr, "k"], [f"{name}_k"]), helper.make_node("Sigmoid", [f"{name}_k"], [name])]

    nodes = [
        helper.make_node("Split", ["frames", "split"], ["r", "g", "b"], axis=1),
        helper.make_node("Sub", ["r", "bright"], ["r_over"]),
        *soft("is_bright", "r_over"),
        helper.make_node("Mul", ["r", "blue_ratio"], ["r_b"]),
        helper.make_node("Sub", ["r_b", "b"], ["b_under"]),
        *soft("low_blue", "b_under"),
        helper.make_node("Mul", ["r", "green_ratio"], ["r_g"]),
        helper.make_node("Sub", ["g", "r_g"], ["g_over"]),
        *soft("some_green", "g_over"),
        helper.make_node("Mul", ["is_bright", "low_blue"], ["m1"]),
        helper.make_node("Mul", ["m1", "some_green"], ["flame"]),
        helper.make_node("ReduceMean", ["flame", "axes"], ["flame_share"], keepdims=0),  # [N, 1]
        helper.make_node("Sub", ["flame_share", "share"], ["share_over"]),
        helper.make_node("Mul", ["share_over", "share_k"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["fire"]),
    ]
    graph = helper.make_graph(
        nodes,
        "flame_colour",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info("fire", TensorProto.FLOAT, ["batch", 1])],
        [
            *(numpy_helper.from_array(np.float32(v), n) for n, v in consts.items()),
            numpy_helper.from_array(np.asarray([1, 1, 1], np.int64), "split"),
            numpy_helper.from_array(np.asarray([2, 3], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="plantwatch")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def flame_share_reference(frames: np.ndarray) -> np.ndarray:
    """The graph's flame-coloured share per frame in numpy ([N, 3, H, W] → [N]), to check the graph against."""
    r, g, b = frames[:, 0], frames[:, 1], frames[:, 2]

    def sig(x):
        return 1.0 / (1.0 + np.exp(-STEEPNESS * x))

    return (sig(r - BRIGHT) * sig(BLUE_RATIO * r - b) * sig(g - GREEN_RATIO * r)).mean(axis=(1, 2))
