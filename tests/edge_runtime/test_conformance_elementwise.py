"""ONNX backend node conformance for the elementwise ops (edge_runtime/ops/elementwise.py)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from tests.edge_runtime import conformance

OP_TYPES = (
    "Add", "Sub", "Mul", "Div", "Pow", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil",
    "Round", "Sign", "Erf", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Clip",
    "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "Gelu", "ThresholdedRelu", "Sin", "Cos",
    "Min", "Max", "Sum", "Mean", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And",
    "Or", "Xor", "Where", "IsNaN", "IsInf", "Mod", "Identity", "Dropout", "Cast", "CastLike",
)

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
_TRAINING = "Dropout with training_mode=True draws a random mask; edge_runtime is inference-only"
EXCLUSIONS: dict[str, str] = {
    "test_training_dropout": _TRAINING,
    "test_training_dropout_default": _TRAINING,
    "test_training_dropout_mask": _TRAINING,
    "test_training_dropout_default_mask": _TRAINING,
}


def _cast_cases() -> list:
    """Every onnx Cast/CastLike case involves fp16/fp64/float8/string: cover the supported pairs here."""
    x = np.array([[-2.7, -0.5, 0.0], [0.4, 1.5, 3.9]], np.float32)
    pairs = [(x, TensorProto.INT64, x.astype(np.int64)), (x, TensorProto.INT32, x.astype(np.int32)),
             (x, TensorProto.BOOL, x != 0), (np.array([-3, 0, 7], np.int64), TensorProto.FLOAT,
                                                np.array([-3.0, 0.0, 7.0], np.float32)),
             (np.array([True, False]), TensorProto.FLOAT, np.array([1.0, 0.0], np.float32))]
    cases = []
    for i, (src, to, want) in enumerate(pairs):
        cases.append(conformance.make_case(f"test_cast_edge_{i}", [helper.make_node("Cast", ["x"], ["y"], to=to)],
                                           {"x": src}, {"y": want}, opset=13))
        like = np.zeros(1, want.dtype)
        cases.append(conformance.make_case(f"test_castlike_edge_{i}",
                                           [helper.make_node("CastLike", ["x", "t"], ["y"])],
                                           {"x": src, "t": like}, {"y": want}, opset=15))
    return cases


PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS, extra=_cast_cases())


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)
