"""Per-layer FLOPs and bytes, and a calibrated roofline estimate of latency on a device profile.

For each layer of the optimised graph (the fused Conv/Gemm/MatMul layers dominate)::

    t_layer = max(flops_eff / (peak_fp32 * threads / cores), bytes_eff / bandwidth)

where ``flops_eff = flops * density`` and ``bytes_eff`` counts only the weight rows of
nonzero inputs when the target's crossover says the sparse kernel would run at the
measured input density, else the dense figures. The roofline is an optimistic lower
bound; real runtimes reach a fraction of it, so::

    estimate = efficiency * sum(t_layer)

``efficiency`` (measured time / roofline time) is :data:`DEFAULT_EFFICIENCY`, fitted to
published latencies of tuned fp32 CPU runtimes (ncnn, XNNPACK class) on each device with its
own thread count (docs/profiling.md): that figure, :data:`TUNED_RUNTIME`, is what ``profile
--device`` reports first, with the band :data:`PUBLISHED_ERROR_BAND` it showed against the
published figures. A host-calibrated efficiency (``host p50 / host roofline``) remains
available through :func:`host_efficiency`; ``profile`` derives its separate edge_runtime
figure from the measured edge / onnxruntime ratio instead (:func:`edge_runtime_estimate`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edge_runtime.graph import Graph, Node

log = logging.getLogger(__name__)

#: measured / roofline time when no host measurement calibrates it. Fitted to the published
#: batch-1 latencies of MobileNetV2 and ResNet-18 (224x224) on the Raspberry Pi 4, Raspberry
#: Pi 5 and Jetson Orin Nano CPU (references.md §3): published / roofline ranges from 0.57
#: (ResNet-18, Orin Nano) to 2.11 (MobileNetV2, Pi 4); 1.1 is the geometric middle of that
#: range (sqrt(0.57 * 2.11)), so all six estimates land within 1.93x. Table: docs/profiling.md.
DEFAULT_EFFICIENCY = 1.1
#: What a default-efficiency estimate is for.
TUNED_RUNTIME = "a tuned fp32 CPU runtime (ncnn/XNNPACK class)"
#: estimate / published latency over the six reference cases (MobileNetV2, ResNet-18 at 224 on
#: raspberry-pi-4, raspberry-pi-5, jetson-orin-nano; tests/edge_runtime/profiling/test_costmodel.py).
PUBLISHED_ERROR_BAND = (0.52, 1.93)

_BYTES = 4  # fp32
_MATMUL = ("FusedGemm", "FusedMatMul", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerCost:
    """Work of one layer at batch 1 (symbolic dims = 1).

    ``family`` is the sparse-kernel family that could run it (``"gemv"``, ``"gemm"``,
    ``"conv"``; a 1x1 conv is ``"gemm"``, as in the runtime's dispatcher) or ``None``;
    ``weight_bytes`` is the part of ``bytes`` a sparse kernel reads only for nonzero
    inputs; ``sparse_scale`` is the prepared layer's per-shape factor on the family crossover,
    the dispatcher's (:func:`edge_runtime.ops.conv_layer.conv_crossover_scale` for convs, 1
    otherwise; 0: the runtime never runs this layer sparse in ``auto``).
    """

    name: str
    op_type: str
    flops: float
    bytes: float
    weight_bytes: float
    family: str | None
    output_shape: tuple[int, ...] | None
    sparse_scale: float = 1.0


def _size(shape: Sequence[int] | None) -> int:
    return int(np.prod(shape)) if shape is not None else 0


def layer_cost(node: Node, graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> LayerCost:
    """FLOPs and bytes of one node, from its weights and the known tensor shapes.

    A Conv/Gemm/MatMul with constant weights is costed by its prepared layer
    (:func:`edge_runtime.prepared.prepare`: FLOPs, weight bytes, family and crossover scale as
    the dispatcher sees them); bytes count every input and the output of any node.

    Args:
        node: a node of ``graph``.
        graph: the (optimised) graph holding the weights.
        shapes: tensor name -> concrete shape for activations (graph inputs and node outputs).

    Returns:
        The layer's cost; FLOPs count a multiply-add as 2, other ops 1 per output element.
    """
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.prepared import prepare

    consts = graph.initializers

    def shape(name: str) -> tuple[int, ...] | None:
        if not name:
            return None
        if name in consts:
            return tuple(np.shape(consts[name]))
        return shapes.get(name)

    x = shape(node.inputs[0]) if node.inputs else None
    out = shape(node.outputs[0])
    layer = prepare(node, consts)
    second = consts.get(node.inputs[1]) if len(node.inputs) > 1 else None
    weight_bytes = float(_BYTES * second.size) if second is not None else 0.0  # read only by sparse layers
    family, scale = None, 1.0
    if layer is not None:
        try:
            work = layer.cost(x, out)
        except EdgeRuntimeError as exc:  # an output derived from attributes that do not fit the input
            log.debug("layer %s: no output shape (%s)", node.name, exc)
            work = layer.cost(None, out)
        out, flops, weight_bytes = work.output_shape, work.flops, work.weight_bytes
        family, scale = layer.family(x), layer.crossover_scale
    elif node.op_type in _MATMUL and x is not None:  # a product of two activations (attention)
        flops = 2.0 * _size(out) * x[-1]
    else:
        flops = float(_size(out))
    extra = [shape(n) for n in node.inputs[1:] if n]
    act_bytes = _BYTES * (_size(x) + _size(out))
    other_bytes = _BYTES * sum(_size(s) for s in extra)
    return LayerCost(node.name, node.op_type, flops, float(act_bytes + other_bytes), weight_bytes,
                     family, out, scale)


def _concrete(dims: Any) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)


def inferred_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of the model's tensors by ONNX shape inference, symbolic dims set to 1.

    Args:
        model: an ``onnx.ModelProto``.

    Returns:
        Tensor name -> shape for every tensor whose shape could be inferred.
    """
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    for vi in proto.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.dim_value = 1
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # inference is best effort: unknown shapes cost 0 and are logged
        log.warning("ONNX shape inference failed (%s); layer costs use the shapes it could not infer as 0", exc)
    shapes = {}
    for vi in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = _concrete(vi.type.tensor_type.shape.dim)
    return shapes


def graph_costs(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> tuple[LayerCost, ...]:
    """:func:`layer_cost` of every node of ``graph``, in order."""
    return tuple(layer_cost(n, graph, shapes) for n in graph.nodes)


def model_costs(model: Any) -> tuple[LayerCost, ...]:
    """Per-layer costs of a model as the runtime would run it (after the planner's passes).

    Needs no kernels, so it works for any model the passes accept.

    Args:
        model: a path, bytes or ``onnx.ModelProto``.

    Returns:
        One :class:`LayerCost` per node of the optimised graph.

    Raises:
        InvalidModelError: the model cannot be loaded.
    """
    from edge_runtime import planner
    from edge_runtime.onnx_io import graph_from_model, load_model_proto

    proto = load_model_proto(model)
    graph = planner.optimize(graph_from_model(proto))
    return graph_costs(graph, inferred_shapes(proto))


def _sparse_runs(cost: LayerCost, density: float | None, profile: Any) -> bool:
    if density is None or cost.family is None or cost.sparse_scale <= 0.0:
        return False
    return density <= profile.runtime.sparse_crossover[cost.family] * cost.sparse_scale


def layer_times(cost: LayerCost, profile: Any, density: float | None = None,
                threads: int | None = None) -> tuple[float, float]:
    """(compute seconds, memory seconds) of one layer on ``profile``.

    Args:
        cost: the layer's work.
        profile: a ``DeviceProfile``.
        density: measured input density, or None (dense).
        threads: threads used (default ``profile.runtime.threads``); peak scales by threads / cores.

    Returns:
        FLOPs / peak and bytes / bandwidth; FLOPs and weight bytes are scaled by ``density``
        where the profile's crossover for the layer's kernel family says the sparse kernel runs.
    """
    used = min(threads or profile.runtime.threads, profile.cpu.cores)
    peak = profile.compute.peak_fp32_gflops * 1e9 * used / profile.cpu.cores
    flops, nbytes = cost.flops, cost.bytes
    if _sparse_runs(cost, density, profile):
        flops *= density
        nbytes -= cost.weight_bytes * (1.0 - density)
    return flops / peak, nbytes / (profile.memory.bandwidth_gbps * 1e9)


def layer_roofline(cost: LayerCost, profile: Any, density: float | None = None,
                   threads: int | None = None) -> float:
    """Roofline seconds of one layer: max(compute time, memory time) of :func:`layer_times`."""
    return max(layer_times(cost, profile, density, threads))


def roofline_seconds(costs: Sequence[LayerCost], profile: Any,
                     densities: Mapping[str, float] | None = None, threads: int | None = None) -> float:
    """Sum of :func:`layer_roofline` over the layers (``densities`` by layer name)."""
    densities = densities or {}
    return sum(layer_roofline(c, profile, densities.get(c.name), threads) for c in costs)


@dataclass(frozen=True)
class Estimate:
    """An ESTIMATED batch-1 latency on a device profile (never a measurement).

    Example:
        >>> from device_profiles import load_profile
        >>> c = LayerCost("fc", "FusedGemm", 2e9, 4e6, 4e6, "gemv", (1, 1000))
        >>> e = estimate_latency([c], load_profile("raspberry-pi-4"))
        >>> round(e.roofline_ms, 1), e.efficiency_source
        (41.8, 'default')
    """

    device: str
    latency_ms: float
    roofline_ms: float
    efficiency: float
    efficiency_source: str           # "default" or "host" (measured p50 / host roofline)
    compute_bound_fraction: float    # share of roofline time in compute-bound layers
    flops: float
    flops_skipped: float
    budget_ms: float | None
    meets_budget: bool | None        # None when the profile has no budget
    threads: int = 0                 # threads assumed on the device (its profile's runtime.threads)
    runtime: str = TUNED_RUNTIME     # which runtime the latency is for
    edge_runtime_ms: float | None = None  # edge_runtime itself, scaled by its measured ratio (or None)
    edge_runtime_basis: str = ""          # how edge_runtime_ms was derived

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return dict(self.__dict__, estimate=True)


def host_efficiency(costs: Sequence[LayerCost], host: Any, measured_seconds: float,
                    densities: Mapping[str, float] | None = None, threads: int | None = None) -> float:
    """measured time / roofline time on the host profile: how far from the roofline the runtime runs.

    Raises:
        InvalidArgumentError: a non-positive measurement or a model with no work.
    """
    from edge_runtime.errors import InvalidArgumentError

    roof = roofline_seconds(costs, host, densities, threads)
    if not (measured_seconds > 0 and roof > 0 and math.isfinite(measured_seconds)):
        raise InvalidArgumentError(
            f"cannot calibrate the cost model: measured {measured_seconds!r} s against a host roofline of "
            f"{roof!r} s; both must be positive. Measure the model with at least one run first.")
    return measured_seconds / roof


def estimate_latency(costs: Sequence[LayerCost], profile: Any, *, efficiency: float | None = None,
                     densities: Mapping[str, float] | None = None, threads: int | None = None) -> Estimate:
    """Estimated latency of a model on ``profile``: efficiency x roofline.

    Args:
        costs: per-layer work (:func:`model_costs`).
        profile: the target ``DeviceProfile``.
        efficiency: measured / roofline factor from :func:`host_efficiency`; None uses
            :data:`DEFAULT_EFFICIENCY`.
        densities: measured input density by layer name (sparse kernels scale FLOPs by it).
        threads: threads on the target (default: the profile's).

    Returns:
        The :class:`Estimate`, including whether it meets ``profile.budget.latency_ms``.
    """
    densities = densities or {}
    times = [layer_times(c, profile, densities.get(c.name), threads) for c in costs]
    roof = sum(max(t) for t in times)
    compute = sum(tc for tc, tm in times if tc >= tm)
    skipped = sum(c.flops * (1.0 - densities[c.name]) for c in costs
                  if _sparse_runs(c, densities.get(c.name), profile))
    eff = DEFAULT_EFFICIENCY if efficiency is None else efficiency
    latency = eff * roof * 1e3
    budget = profile.budget.latency_ms if profile.budget is not None else None
    used = min(threads or profile.runtime.threads, profile.cpu.cores)
    return Estimate(profile.name, latency, roof * 1e3, eff, "default" if efficiency is None else "host",
                    compute / roof if roof > 0 else 0.0, sum(c.flops for c in costs), skipped, budget,
                    None if budget is None else latency <= budget, used,
                    TUNED_RUNTIME if efficiency is None else "edge_runtime (host-calibrated efficiency)")


def edge_runtime_estimate(estimate: Estimate, profile: Any, host: Any, *, edge_p50_ms: float,
                          ort_p50_ms: float | None) -> Estimate:
    """Add edge_runtime's own estimated latency on the device to a tuned-runtime ``estimate``.

    edge_runtime's figure is the tuned-runtime estimate times edge p50 / onnxruntime p50 measured
    here (onnxruntime standing in for a tuned runtime), and never less than the host's own p50
    scaled by single-core speed (host peak per core / device peak per core): a device with
    slower cores does not run the model faster than this machine (small models are bound by
    per-layer overhead, which more threads do not shorten).

    Args:
        estimate: the tuned-runtime estimate on ``profile``.
        profile: the target ``DeviceProfile``.
        host: this machine's ``DeviceProfile``.
        edge_p50_ms: edge_runtime's median latency measured here.
        ort_p50_ms: onnxruntime's median measured here (None: not measured).

    Returns:
        ``estimate`` with ``edge_runtime_ms`` and ``edge_runtime_basis`` set, and the budget
        verdict taken on edge_runtime's figure (the runtime that will run there).
    """
    import dataclasses

    def per_core(p: Any) -> float:
        return p.compute.peak_fp32_gflops / p.cpu.cores

    floor = edge_p50_ms * per_core(host) / per_core(profile)
    if ort_p50_ms:
        ratio = edge_p50_ms / ort_p50_ms
        value = max(estimate.latency_ms * ratio, floor)
        basis = (f"x{ratio:.2f} (edge_runtime p50 / onnxruntime p50 here)" if value > floor else
                 f"this machine's p50 {edge_p50_ms:.2f} ms x{floor / edge_p50_ms:.2f}, its single-core speed "
                 f"relative to this machine's")
    else:
        value = floor
        basis = (f"this machine's p50 {edge_p50_ms:.2f} ms x{floor / edge_p50_ms:.2f}, its single-core speed "
                 f"relative to this machine's (onnxruntime not measured)")
    meets = None if estimate.budget_ms is None else value <= estimate.budget_ms  # the runtime that will run
    return dataclasses.replace(estimate, edge_runtime_ms=value, edge_runtime_basis=basis, meets_budget=meets)

