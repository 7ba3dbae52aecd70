"""ONNX backend node conformance for the normalization ops (edge_runtime/ops/norm.py)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tests.edge_runtime import conformance

OP_TYPES = ("BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
            "LpNormalization")

_TRAINING = "BatchNormalization training_mode=1 computes batch statistics; edge_runtime is inference-only"
#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {
    "test_batchnorm_example_training_mode": _TRAINING,
    "test_batchnorm_epsilon_training_mode": _TRAINING,
}


def _extra_cases() -> list:
    """Opset-9 BatchNormalization and opset-18 (per-group scale) GroupNormalization."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    s, b, m = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    v = rng.random(4).astype(np.float32) + 0.5
    shape = (1, 4, 1, 1)
    bn = (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + 1e-3) * s.reshape(shape) + b.reshape(shape)
    cases = [conformance.make_case(
        "test_batchnorm_opset9", [helper.make_node("BatchNormalization", list("xsbmv"), ["y"], epsilon=1e-3)],
        {"x": x, "s": s, "b": b, "m": m, "v": v}, {"y": bn.astype(np.float32)}, opset=9)]
    gs, gb = rng.standard_normal(2).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    g = x.reshape(2, 2, -1)
    gn = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)
    gn = gn * gs.reshape(1, 2, 1) + gb.reshape(1, 2, 1)
    cases.append(conformance.make_case(
        "test_group_normalization_opset18",
        [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)],
        {"x": x, "s": gs, "b": gb}, {"y": gn.reshape(x.shape).astype(np.float32)}, opset=18))
    return cases


PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS, extra=_extra_cases())


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)
