"""Read ONNX models (path, bytes or ModelProto) into the runtime's :class:`~edge_runtime.graph.Graph`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_runtime.errors import InvalidModelError, UnsupportedDTypeError
from edge_runtime.graph import Graph, Node, ValueInfo

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]

#: Element types of graph inputs and outputs (fp32 compute, float64 in numpy-backed ops, integer tensors,
#: masks, images; float16 is cast to and from float32 at the boundaries, passes/float16.py).
SUPPORTED_DTYPES = (np.float32, np.float16, np.float64, np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32,
                    np.uint16, np.uint8, np.bool_)

#: onnxruntime's type strings, which get_inputs()/get_outputs() report.
_ORT_TYPE = {
    np.dtype(np.float32): "tensor(float)", np.dtype(np.float64): "tensor(double)",
    np.dtype(np.float16): "tensor(float16)", np.dtype(np.int64): "tensor(int64)",
    np.dtype(np.int32): "tensor(int32)", np.dtype(np.int16): "tensor(int16)",
    np.dtype(np.int8): "tensor(int8)", np.dtype(np.uint8): "tensor(uint8)",
    np.dtype(np.bool_): "tensor(bool)", np.dtype(object): "tensor(string)",
}


def ort_type_string(dtype: np.dtype) -> str:
    """onnxruntime's name for an element type, e.g. ``tensor(float)``."""
    return _ORT_TYPE.get(np.dtype(dtype), f"tensor({np.dtype(dtype).name})")


def load_model_proto(source: ModelSource) -> onnx.ModelProto:
    """Load a ModelProto from a path (external data resolved next to it), bytes, or a ModelProto.

    Raises:
        InvalidModelError: the file is missing, unreadable, truncated or not an ONNX model.
    """
    if isinstance(source, onnx.ModelProto):
        model = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        model = _parse(bytes(source), "the given bytes")
    elif isinstance(source, (str, os.PathLike)):
        model = _load_path(Path(source))
    else:
        raise InvalidModelError(
            f"cannot load a model from a {type(source).__name__}; expected a file path (str or "
            f"os.PathLike), the model's bytes, or an onnx.ModelProto")
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InvalidModelError(
            "the model has no graph (no nodes and no outputs): the file is empty, truncated, or not "
            "an ONNX model. Re-export it, e.g. with torch.onnx.export(model, x, 'model.onnx').")
    return model


def _load_path(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise InvalidModelError(f"model file not found: '{path}'. Check the path; the current "
                                f"directory is '{Path.cwd()}'.")
    if path.is_dir():
        candidate = path / "model.onnx"
        if candidate.exists():
            return _load_path(candidate)
        raise InvalidModelError(f"'{path}' is a directory without a model.onnx; pass the .onnx file "
                                f"or a bundle directory that contains model.onnx.")
    data = path.read_bytes()
    model = _parse(data, f"'{path}'")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise InvalidModelError(
            f"model '{path}' stores weights in external data files that could not be read ({exc}); "
            f"keep the .onnx.data file(s) next to the model, with the names it was exported with.") from exc
    return model


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InvalidModelError(
            f"{what} is not a valid ONNX model ({len(data)} bytes could not be parsed: {exc}); the file "
            f"is truncated or corrupt. Copy it again or re-export it.") from exc
    return model


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values: str for strings, ndarray for tensors, lists for lists."""
    result: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8") for v in value]
        elif isinstance(value, list) and value and isinstance(value[0], onnx.TensorProto):
            value = [numpy_helper.to_array(v) for v in value]
        result[attr.name] = value
    return result


def _value_info(vi: onnx.ValueInfoProto) -> ValueInfo:
    ttype = vi.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)) if ttype.elem_type else np.dtype(np.float32)
    shape: tuple[int | str | None, ...] | None = None
    if ttype.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim)
    return ValueInfo(vi.name, dtype, shape)


def _initializer(tensor: onnx.TensorProto) -> np.ndarray:
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as exc:
        raise InvalidModelError(f"initializer '{tensor.name}' could not be decoded ({exc}); the model file "
                                f"may be truncated or its external data missing.") from exc
    if array.dtype in (np.float64, np.float16) or array.dtype.name == "bfloat16":
        # fp32 compute: exporters sometimes leave float64 scalars; fp16/bf16 weights are widened.
        array = array.astype(np.float32)
    return array


def graph_from_model(model: onnx.ModelProto) -> Graph:
    """Convert a ModelProto into the runtime's frozen Graph IR.

    Raises:
        InvalidModelError: malformed graph (duplicate outputs, undecodable initializers).
        UnsupportedDTypeError: a graph input or output has an element type the runtime lacks.
    """
    g = model.graph
    initializers = {t.name: _initializer(t) for t in g.initializer}
    for sparse in g.sparse_initializer:
        initializers[sparse.values.name] = numpy_helper.to_array(sparse)  # densified
    inputs = tuple(_value_info(v) for v in g.input if v.name not in initializers)
    outputs = tuple(_value_info(v) for v in g.output)
    for vi in inputs + outputs:
        if vi.dtype.type not in SUPPORTED_DTYPES and not vi.dtype.type.__module__.startswith("ml_dtypes"):
            raise UnsupportedDTypeError(
                f"graph {'input' if vi in inputs else 'output'} '{vi.name}' has element type "
                f"{ort_type_string(vi.dtype)}; edge_runtime computes in float32 (plus float64/float16, integer, "
                f"bool and, in Cast, ml_dtypes' narrow types). Export the model in float32 (model.float() before torch.onnx.export).")
    nodes = []
    for i, n in enumerate(g.node):
        nodes.append(Node(op_type=n.op_type, inputs=tuple(n.input), outputs=tuple(n.output),
                          attrs=attributes(n), name=n.name or f"{n.op_type}_{i}", domain=n.domain))
    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    metadata = {p.key: p.value for p in model.metadata_props}
    return Graph(nodes=tuple(nodes), initializers=initializers, inputs=inputs, outputs=outputs,
                 opsets=opsets, metadata=metadata, name=g.name)
