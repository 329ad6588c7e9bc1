"""The shipped fire detector: flame colour as an ONNX graph, needing no download, and its flicker rule.

Input `frames` float32 [N, 3, H, W] (RGB in [0, 1], see `image.py`); outputs
`fire` float32 [N, 1], the probability that the frame shows flames by colour, and
`flame_mask` [N, 1, H/4, W/4], the flame colour per 4x4 block. A pixel is
flame-coloured to the degree that it is bright and red-dominant (R > 0.6), has
little blue for its red (B < 0.28 R: not a warm-lit grey wall) and enough green
for its red (G > 0.36 R: orange to yellow, not a red paint or a red light); each
test is a steep sigmoid, so the graph is smooth. The frame's flame-coloured share
goes through one more sigmoid centred on `min_share` (0.6 % of the frame by default).

Colour cannot tell an orange object, warm light or a sunset from flames; flicker
can: flames change from frame to frame, those hold still. `flicker_ratio` and
`flicker_gate` (pure) turn a camera's last masks into the factor the FrameScorer
multiplies the colour score by. Precision and recall on the project's labelled
frames and sequences (`plantwatch.sim.frames`) are in tests/unit/test_fire.py and
bench/images.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Steepness of each per-pixel test: 0.05 of the colour scale moves it from 0.27 to 0.73.
STEEPNESS = 40.0
#: The per-pixel tests' thresholds, chosen on frames of seed 1 (`plantwatch.sim.frames`); measured on other seeds.
BRIGHT, BLUE_RATIO, GREEN_RATIO = 0.6, 0.28, 0.36
#: Flicker: masks kept per camera (the frame and FLICKER_PAIRS before it), and the gate's centre and steepness
#: on the flicker ratio; chosen on sequences of seed 1 (`plantwatch.sim.frames.labelled_sequences`), measured on seed 2.
FLICKER_PAIRS, FLICKER_MIN, FLICKER_STEEPNESS = 2, 0.06, 80.0
#: The second output: the per-pixel flame colour averaged over MASK_POOL x MASK_POOL blocks, [N, 1, H/4, W/4].
MASK_OUTPUT, MASK_POOL = "flame_mask", 4


def fire_model(size: tuple[int, int] = (64, 64), min_share: float = 0.006) -> bytes:
    """The flame-colour detector for frames of `size` = (H, W), as ONNX bytes."""
    h, w = size
    if h < MASK_POOL or w < MASK_POOL or not 0 < min_share < 1:
        raise ValueError(f"size must be at least {MASK_POOL}x{MASK_POOL} and min_share in (0, 1), got {size}, {min_share}")
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
        helper.make_node("AveragePool", ["flame"], [MASK_OUTPUT], kernel_shape=[MASK_POOL] * 2, strides=[MASK_POOL] * 2),
        helper.make_node("Sub", ["flame_share", "share"], ["share_over"]),
        helper.make_node("Mul", ["share_over", "share_k"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["fire"]),
    ]
    graph = helper.make_graph(
        nodes,
        "flame_colour",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 3, h, w])],
        [
            helper.make_tensor_value_info("fire", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info(MASK_OUTPUT, TensorProto.FLOAT, ["batch", 1, h // MASK_POOL, w // MASK_POOL]),
        ],
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


def flame_mask_reference(frames: np.ndarray) -> np.ndarray:
    """The graph's `flame_mask` output in numpy ([N, 3, H, W] → [N, 1, H/4, W/4])."""
    r, g, b = frames[:, 0], frames[:, 1], frames[:, 2]

    def sig(x):
        return 1.0 / (1.0 + np.exp(-STEEPNESS * x))

    flame = sig(r - BRIGHT) * sig(BLUE_RATIO * r - b) * sig(g - GREEN_RATIO * r)
    n, h, w = flame.shape
    p = MASK_POOL
    return flame[:, : h // p * p, : w // p * p].reshape(n, 1, h // p, p, w // p, p).mean(axis=(3, 5))


def flicker_ratio(masks: Sequence[np.ndarray]) -> float | None:
    """How much the newest mask's flame region changed over the masks before it, in [0, 1] (pure).

    `masks`: one camera's last flame masks, oldest first, the newest the frame being
    scored. For each pair of consecutive masks, the change inside the newest frame's
    flame region: sum(newest * |later - earlier|) / sum(newest). The ratio is the
    least of those: flames change in every frame, while an orange object that just
    came into view changed once (its arrival) and then holds still. None with fewer
    than two masks (nothing to compare); 0 when the newest shows no flame colour.
    """
    masks = list(masks)
    if len(masks) < 2:
        return None
    newest = np.asarray(masks[-1], np.float64)
    area = newest.sum()
    if area < 1e-6:
        return 0.0
    return float(min((newest * np.abs(np.asarray(b) - np.asarray(a))).sum() / area for a, b in zip(masks, masks[1:])))


def flicker_gate(ratio: float | None) -> float:
    """The factor the colour score is multiplied by: ~0 for a still flame-coloured region, ~1 for a flickering one,
    1 when there is no earlier frame to compare with (a camera's first frame: colour alone decides) (pure)."""
    if ratio is None:
        return 1.0
    return float(1.0 / (1.0 + np.exp(-FLICKER_STEEPNESS * (ratio - FLICKER_MIN))))
