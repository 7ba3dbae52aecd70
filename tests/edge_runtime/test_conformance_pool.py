"""ONNX backend node conformance for pooling ops (edge_runtime/ops/pool.py)."""
from __future__ import annotations

from tests.edge_runtime import conformance

OP_TYPES = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "MaxUnpool")

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {
    "test_maxunpool_export_with_output_shape": (
        "indices read as flat positions in the output_shape tensor, as onnxruntime and torch read them "
        "(MaxPool's Indices for an input of that shape); the case's data scatters into the smaller inferred "
        "shape and pads it, which onnxruntime also fails"),
}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)
