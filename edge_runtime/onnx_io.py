"""Read ONNX models (path, bytes or ModelProto) into the runtime's :class:`~edge_runtime.graph.Graph`."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_runtime.errors import InvalidModelError, UnsupportedDTypeError
from edge_runtime.graph import Graph, Node, ValueInfo, outer_reads
from edge_runtime.resources import check_allocation, declared_bytes


class HandedBytes:
    """A serialized model handed to :class:`~edge_runtime.InferenceSession` to own.

    A ``bytes`` argument stays referenced by the caller and by the call until the session is
    created, so the model's size is held through the whole creation; the session empties this
    holder instead (:meth:`take`) and lets the bytes go as soon as nothing needs them. The bundle
    tools hand over a model's bytes this way after checking their sha256
    (:meth:`edge_runtime.bundle.LoadedBundle.read_model`): what runs is what was authenticated,
    and nothing reads the file again by its path (onnxruntime included).

    Args:
        data: the model's bytes.
        name: where they came from, for messages (e.g. the file's path).
        again: reads (and checks) them again, for a session that needs the model a second time
            (onnxruntime refused a plan it had accepted before); None: that is an error.
    """

    __slots__ = ("_data", "name", "again")

    def __init__(self, data: bytes, name: str, again: Callable[[], bytes] | None = None) -> None:
        self._data: bytes | None = data
        self.name, self.again = name, again

    @classmethod
    def read(cls, reader: Callable[[Path], bytes], path: Path) -> HandedBytes:
        """``reader(path)``'s bytes (e.g. a bundle's checked read), read again by it when needed twice."""
        return cls(reader(path), repr(str(path)), again=lambda: reader(path))

    def take(self) -> bytes:
        """The bytes, handed over: this holder keeps no reference."""
        data, self._data = self._data, None
        if data is not None:
            return data
        if self.again is None:
            raise InvalidModelError(f"the bytes of {self.name} were already handed to a session; hand a new "
                                    f"HandedBytes to each session.")
        return self.again()


ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto, HandedBytes]

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


#: protobuf cannot parse a message of 2 GiB or more; larger weights belong in external data.
MAX_MODEL_BYTES = (2 << 30) - 1


def load_model_proto(source: ModelSource, *, external_data: bool = True) -> onnx.ModelProto:
    """Load a ModelProto from a path (external data resolved next to it), bytes, or a ModelProto.

    The file's size (and the external data's declared sizes) are checked against the 2 GiB
    protobuf limit and the memory this process can allocate *before* reading, and two
    nodes producing the same tensor are refused (onnxruntime refuses them too).

    Args:
        source: the model.
        external_data: load external weight files (False: leave them as references).

    Raises:
        InvalidModelError: the file is missing, unreadable, truncated, too large for this
            machine, not an ONNX model, or a tensor has two producers.
    """
    return load_model(source, external_data=external_data)[0]


def load_model(source: ModelSource, *, external_data: bool = True) -> tuple[onnx.ModelProto, bytes | None]:
    """Like :func:`load_model_proto`, also returning the model's serialized bytes when the source
    holds them whole (bytes, or a file without external data), so they need not be serialized again."""
    raw: bytes | None = None
    if isinstance(source, onnx.ModelProto):
        model = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        model = _parse(raw, "the given bytes")
    elif isinstance(source, HandedBytes):
        raw = source.take()
        model = _parse(raw, source.name)
    elif isinstance(source, (str, os.PathLike)):
        model, raw = _load_path(Path(source), external_data)
    else:
        raise InvalidModelError(
            f"cannot load a model from a {type(source).__name__}; expected a file path (str or "
            f"os.PathLike), the model's bytes, or an onnx.ModelProto")
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InvalidModelError(
            "the model has no graph (no nodes and no outputs): the file is empty, truncated, or not "
            "an ONNX model. Re-export it, e.g. with torch.onnx.export(model, x, 'model.onnx').")
    check_unique_producers(model.graph)
    _check_element_types(model.graph)
    check_declared_sizes(model.graph)
    return model, raw


_SIZED_OPS = ("ConstantOfShape", "Expand", "Tile", "Range")


def _stand_in(tensor: onnx.TensorProto) -> np.ndarray | None:
    """Small initializers decoded; large ones as a zero-memory view of their shape and dtype."""
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    if math.prod(tensor.dims) <= 1024:
        try:
            return numpy_helper.to_array(tensor)
        except Exception:  # undecodable: graph_from_model reports it with context
            return None
    return np.broadcast_to(np.zeros((), dtype), tuple(tensor.dims))


def check_declared_sizes(graph: onnx.GraphProto) -> None:
    """ConstantOfShape/Expand/Tile/Range whose inputs are initializers: output size vs memory.

    Checked at load whatever the optimisation level (constant folding repeats the check
    for shapes computed from constants).

    Raises:
        InvalidModelError: naming the node, when its output would not fit in memory.
    """
    initializers = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type not in _SIZED_OPS or node.domain not in ("", "ai.onnx") \
                or not all(x == "" or x in initializers for x in node.input):
            continue
        args = [_stand_in(initializers[x]) if x else None for x in node.input]
        if any(a is None for a, x in zip(args, node.input) if x):
            continue
        size = declared_bytes(node.op_type, args, attributes(node))
        if size is not None:
            check_allocation(size, f"node '{node.name or node.op_type}' ({node.op_type}) declares an output that",
                             "the model asks for a tensor this device cannot hold; fix the shape in the model.")


def _check_element_types(graph: onnx.GraphProto) -> None:
    """Refuse element types ONNX does not define and undecodable sparse initializers (fuzzing found both)."""
    known = set(onnx.TensorProto.DataType.values())
    typed = [(v.name, v.type.tensor_type.elem_type) for v in (*graph.input, *graph.output, *graph.value_info)
             if v.type.HasField("tensor_type")]
    typed += [(t.name, t.data_type) for t in graph.initializer]
    for name, elem in typed:
        if elem not in known:
            raise InvalidModelError(f"tensor '{name}' has element type {elem}, which ONNX does not define "
                                    f"(known: 0-{max(known)}); the file is corrupt. Re-export the model.")
    for sparse in graph.sparse_initializer:
        try:
            numpy_helper.to_array(sparse)
        except Exception as exc:  # onnx raises ValueError/KeyError/IndexError for malformed ones
            raise InvalidModelError(f"sparse initializer '{sparse.values.name}' cannot be decoded "
                                    f"({type(exc).__name__}: {exc}); the file is corrupt. Re-export the model.") from exc


def check_unique_producers(graph: onnx.GraphProto) -> None:
    """Refuse a tensor written by two nodes, or by a node and a graph input/initializer.

    Raises:
        InvalidModelError: naming the tensor and both producers.
    """
    producer: dict[str, str] = {v.name: "graph input" for v in graph.input}
    producer.update({t.name: "initializer" for t in graph.initializer})
    for i, node in enumerate(graph.node):
        label = f"node '{node.name or f'{node.op_type}_{i}'}' ({node.op_type})"
        for name in node.output:
            if not name:
                continue
            if name in producer:
                raise InvalidModelError(
                    f"tensor '{name}' is produced by {producer[name]} and again by {label}; every tensor "
                    f"must have one producer (onnxruntime refuses this model too). Re-export the model.")
            producer[name] = label


def _load_path(path: Path, external_data: bool = True) -> tuple[onnx.ModelProto, bytes | None]:
    if not path.exists():
        raise InvalidModelError(f"model file not found: '{path}'. Check the path; the current "
                                f"directory is '{Path.cwd()}'.")
    if path.is_dir():
        candidate = path / "model.onnx"
        if candidate.exists():
            return _load_path(candidate, external_data)
        raise InvalidModelError(f"'{path}' is a directory without a model.onnx; pass the .onnx file "
                                f"or a bundle directory that contains model.onnx.")
    check_model_size(path.stat().st_size, f"'{path}'")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidModelError(f"model '{path}' cannot be read ({exc}); check the file.") from exc
    model = _parse(data, f"'{path}'")
    if not external_data or _load_external(model, path):
        return model, None  # the bytes lack the external weights
    return model, data


def check_model_size(size: int, what: str) -> None:
    """Refuse, before reading, a model file of ``size`` bytes that protobuf cannot parse or that this
    process cannot hold twice (read and parsed); ``what`` names it, e.g. the quoted path."""
    if size > MAX_MODEL_BYTES:
        raise InvalidModelError(f"model {what} has {size} bytes; an ONNX protobuf must be under 2 GiB "
                                f"({MAX_MODEL_BYTES} bytes). Save large weights as external data "
                                f"(onnx.save_model(..., save_as_external_data=True)).")
    check_allocation(2 * size, f"model {what} ({size} bytes, read and parsed)",
                     "use a smaller model or a device with more memory.")


def _load_external(model: onnx.ModelProto, path: Path) -> bool:
    """Resolve external weights (onnx >= 1.21 refuses paths leaving the model's folder); whether any were."""
    declared, external = 0, False
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        external = True
        info = {e.key: e.value for e in tensor.external_data}
        length = int(info["length"]) if info.get("length", "").isdigit() else None
        if length is None:
            file = path.parent / info.get("location", "")
            length = file.stat().st_size if file.is_file() else 0
        declared += length
    if not declared:
        return external  # one walk over the tensors: a second one was 0.07 ms of every session's creation
    check_allocation(declared, f"model '{path}''s external weights ({declared} bytes)",
                     "use a smaller model or a device with more memory.")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise InvalidModelError(
            f"model '{path}' stores weights in external data files that could not be read ({exc}); "
            f"keep the .onnx.data file(s) next to the model, with the names it was exported with.") from exc
    return True


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


def decode_initializer(tensor: onnx.TensorProto) -> np.ndarray:
    """A constant tensor as the runtime computes with it (float64/float16/bfloat16 widened or
    narrowed to float32).

    Raises:
        InvalidModelError: the tensor cannot be decoded (truncated file, missing external data).
    """
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
    initializers = {t.name: decode_initializer(t) for t in g.initializer}
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
    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    metadata = {p.key: p.value for p in model.metadata_props}
    return Graph(nodes=_nodes(g, opsets, ""), initializers=initializers, inputs=inputs, outputs=outputs,
                 opsets=opsets, metadata=metadata, name=g.name)


def _nodes(g: onnx.GraphProto, opsets: dict[str, int], scope: str) -> tuple[Node, ...]:
    """A graph's nodes; subgraph attributes become :class:`Graph` (with the model's opsets), and each
    node's ``implicit_inputs`` lists the outer names its subgraphs read. Unnamed nodes in a
    subgraph are named after it (``{scope}/{op_type}_{i}``), so names stay unique."""
    nodes = []
    for i, n in enumerate(g.node):
        name = n.name or f"{scope}{n.op_type}_{i}"
        attrs = attributes(n)
        implicit: dict[str, None] = {}
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                attrs[attr.name] = sub = _subgraph(attr.g, opsets, f"{name}/{attr.name}/")
                implicit.update(dict.fromkeys(outer_reads(sub)))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                raise InvalidModelError(f"node '{name}' ({n.op_type}) has a list of subgraphs in attribute "
                                        f"'{attr.name}'; no ONNX operator edge_runtime runs takes one.")
        nodes.append(Node(op_type=n.op_type, inputs=tuple(n.input), outputs=tuple(n.output), attrs=attrs,
                          name=name, domain=n.domain, implicit_inputs=tuple(implicit)))
    return tuple(nodes)


def _subgraph(g: onnx.GraphProto, opsets: dict[str, int], scope: str) -> Graph:
    """An If branch or a Loop/Scan body. Float16 formal inputs and outputs are declared float32:
    subgraphs compute in float32 like the rest of the graph (passes/float16.py)."""
    def info(v: onnx.ValueInfoProto) -> ValueInfo:
        vi = _value_info(v)
        half = vi.dtype == np.float16 or vi.dtype.name == "bfloat16"
        return ValueInfo(vi.name, np.dtype(np.float32), vi.shape) if half else vi

    return Graph(nodes=_nodes(g, opsets, scope), initializers={t.name: _initializer(t) for t in g.initializer},
                 inputs=tuple(info(v) for v in g.input), outputs=tuple(info(v) for v in g.output),
                 opsets=opsets, name=g.name)


def proto_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph``, and after each the nodes of its subgraphs, nested ones too."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from proto_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from proto_nodes(sub)


def graph_io(model: onnx.ModelProto) -> tuple[tuple[ValueInfo, ...], tuple[ValueInfo, ...]]:
    """The model's inputs (initializers excluded) and outputs, in any element type.

    Unlike :func:`graph_from_model` this decodes no weights and accepts every dtype: the
    onnxruntime-backed engine runs what onnxruntime runs.
    """
    g = model.graph
    consts = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    return (tuple(_value_info(v) for v in g.input if v.name not in consts),
            tuple(_value_info(v) for v in g.output))
