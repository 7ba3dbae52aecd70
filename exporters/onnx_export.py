"""Export a PyTorch model to ONNX and map its Linear/Conv2d modules to ONNX nodes.

The mapping tells the annotation writer which ONNX node consumes the input whose density
was measured by :func:`exporters.calibrate`. It must never guess: a module that cannot be
matched unambiguously raises :class:`ExportError`.
"""
from __future__ import annotations

import ast
import logging
import re
from typing import Iterable

import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from exporters.errors import ExportError
from exporters.onnx_fold import fold_bias_shifts

logger = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 1_500_000_000  # weights above this go to model.onnx.data
TORCHSCRIPT_OPSET = 17
MAPPED_OPS = ("Conv", "Gemm", "MatMul")
_SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def export_onnx(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = True,
                opset: int | None = None, dynamo: bool = True) -> onnx.ModelProto:
    """Export ``model`` to an in-memory ONNX model (weights embedded).

    Args:
        model: the model, in eval mode.
        example: one example input (B, ...).
        dynamic_batch: make the first axis of the input and outputs symbolic ("batch").
        opset: ONNX opset; default: the exporter's (>= 18 with dynamo, 17 without).
        dynamo: use ``torch.onnx.export(dynamo=True)``; False uses the deprecated
            TorchScript exporter (opset <= 17).

    Returns:
        The ModelProto, still with per-node metadata (call :func:`finalize` after mapping).

    Raises:
        ExportError: the exporter failed; the message carries its reason.
    """
    if dynamic_batch and example.shape[0] == 1:
        example = example.repeat(2, *([1] * (example.dim() - 1)))  # batch 1 specialises
    try:
        if dynamo:
            return _export_dynamo(model, example, dynamic_batch, opset)
        return _export_torchscript(model, example, dynamic_batch, opset or TORCHSCRIPT_OPSET)
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many unrelated types
        raise ExportError(
            f"torch.onnx.export ({'dynamo' if dynamo else 'torchscript'}) failed for "
            f"{type(model).__name__} with input shape {tuple(example.shape)}: "
            f"{type(exc).__name__}: {exc}. Make the model traceable by torch.export "
            "(no data-dependent Python control flow) or try dynamo=False."
        ) from exc


def _export_dynamo(model: nn.Module, example: torch.Tensor, dynamic_batch: bool,
                   opset: int | None) -> onnx.ModelProto:
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    if big:
        logger.warning("Weights exceed %d bytes; ONNX export keeps them external.",
                       EXTERNAL_DATA_BYTES)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.onnx.export(model, (example,), dynamo=True, external_data=big,
                                dynamic_shapes=shapes, opset_version=opset, verbose=False)
    return program.model_proto


def _export_torchscript(model: nn.Module, example: torch.Tensor, dynamic_batch: bool,
                        opset: int) -> onnx.ModelProto:
    import io

    buffer = io.BytesIO()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def finalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strip per-node metadata, fold bias shifts, lower the IR version to what the opset needs.

    ``exporters.onnx_fold.fold_bias_shifts`` turns ``Conv -> Sub(t) -> Relu`` (a ShiftedReLU)
    into ``Conv(bias - t) -> Relu``, which onnxruntime fuses.

    Per-node metadata (stack traces with local paths) needs IR 10, which older device
    builds of onnxruntime reject (references.md §4). Runs ``onnx.checker``.

    Raises:
        ExportError: the checker rejects the model.
    """
    for node in model.graph.node:
        del node.metadata_props[:]
    fold_bias_shifts(model)
    try:
        model.ir_version = min(model.ir_version,
                               helper.find_min_ir_version_for(list(model.opset_import)))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"The exported ONNX model fails onnx.checker: {exc}. This is an "
                          "exporter bug; report it with the model.") from exc
    return model


def module_path(node: onnx.NodeProto) -> str | None:
    """The qualified torch module name a node came from, if the exporter recorded it."""
    for prop in node.metadata_props:
        if prop.key == _SCOPE_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            # ['', 'blocks', 'blocks.0', 'blocks.0.fc1', 'linear']: deepest module scope
            return re.sub(r"@\d+$", "", scopes[-2]) if len(scopes) >= 2 else ""
    if node.name.startswith("/"):  # TorchScript: "/features/features.0/Conv"
        name = ""
        for part in node.name.split("/")[1:-1]:  # ['blocks', 'blocks.0', 'fc1']
            name = part if not name or part.startswith(name + ".") else f"{name}.{part}"
        return name
    return None


def _constant_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(numpy_helper.to_array(attr.t).shape)
    return shapes


def _compatible(node: onnx.NodeProto, weight: tuple[int, ...],
                shapes: dict[str, tuple[int, ...]]) -> bool:
    if len(node.input) < 2 or node.input[1] not in shapes or node.input[0] in shapes:
        return False
    got = shapes[node.input[1]]
    if node.op_type == "Conv":
        return got == weight
    if len(weight) != 2:
        return False
    trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
    if node.op_type == "Gemm":
        return got == (weight if trans_b else weight[::-1])
    return got == weight[::-1]  # MatMul(x, W^T)


def map_modules(model_proto: onnx.ModelProto, modules: Iterable[tuple[str, tuple[int, ...]]]
                ) -> dict[str, onnx.NodeProto]:
    """Map torch module names to the Conv/Gemm/MatMul node that applies their weight.

    Tries, in order: the weight initializer's name (``<module>.weight``), the module
    scope the exporter recorded on the node, then the only unclaimed node whose weight
    shape fits. Every match must have a compatible weight shape.

    Args:
        model_proto: the exported model, before :func:`finalize`.
        modules: (qualified name, weight shape) of each module to map.

    Returns:
        module name -> node.

    Raises:
        ExportError: a module matches no node or several; the message names it.
    """
    shapes = _constant_shapes(model_proto)
    nodes = [n for n in model_proto.graph.node if n.op_type in MAPPED_OPS]
    claimed: dict[str, str] = {}
    result: dict[str, onnx.NodeProto] = {}
    pending = list(modules)
    for strategy in ("name", "scope", "shape"):
        still = []
        for name, weight in pending:
            fits = [n for n in nodes if n.name not in claimed and _compatible(n, weight, shapes)]
            if strategy == "name":
                fits = [n for n in fits if n.input[1] == f"{name}.weight"]
            elif strategy == "scope":
                fits = [n for n in fits if module_path(n) == name]
            if len(fits) == 1:
                result[name] = fits[0]
                claimed[fits[0].name] = name
            else:
                still.append((name, weight, len(fits)))
        pending = [(name, weight) for name, weight, _ in still]
        if strategy == "shape" and still:
            name, weight, count = still[0]
            raise ExportError(
                f"Cannot map torch module {name!r} (weight shape {weight}) to an ONNX "
                f"node: {count} unclaimed Conv/Gemm/MatMul nodes fit (expected exactly 1). "
                "Refusing to guess. Give the module a unique weight shape, or export "
                "with calibration=None to skip annotations.")
    return result
