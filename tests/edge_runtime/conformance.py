"""ONNX backend node-test conformance harness, shared by the ``test_conformance_*`` files.

onnx >= 1.23 no longer ships the backend test data but still ships the generators
(references.md section 4): :func:`all_cases` builds every node case in-process, once.

Each family test file (``test_conformance_<family>.py``) declares ``OP_TYPES`` and an
``EXCLUSIONS`` dict (case name -> reason) and parametrizes over
:func:`params_for`; excluded cases become ``pytest.param(..., marks=skip(reason))`` so
they show in ``pytest -ra``. Cases whose tensors use a dtype the runtime does not
compute in are excluded automatically (:func:`dtype_exclusion`).

Usage in a family file::

    OP_TYPES = ("Relu", "Add")
    EXCLUSIONS = {"test_add_bcast": "why it cannot pass"}
    PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)
    test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)

Runner: ``edge_runtime.InferenceSession(model).run(None, feed)`` when it is importable
and passes a smoke test, otherwise a *direct* mode that resolves each node through the
op registry and calls the implementations in node order (cases are topologically
sorted). Force one with ``EDGE_CONFORMANCE_MODE=session|direct``.

``python3 -m tests.edge_runtime.conformance`` rewrites docs/conformance.md from every
family file's exclusions.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
import pkgutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

#: Element types the runtime takes: float32 (and float64 in numpy-backed ops), float16 (cast to and from
#: float32 at the graph boundary), every integer type numpy has, bool, and (in Cast/CastLike and the
#: data-movement ops) the narrow types of ml_dtypes.
SUPPORTED_ELEM_TYPES = frozenset({
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BOOL, TensorProto.INT64,
    TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT64, TensorProto.UINT32,
    TensorProto.UINT16, TensorProto.UINT8, TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ, TensorProto.UINT4, TensorProto.INT4,
    TensorProto.FLOAT4E2M1, TensorProto.UINT2, TensorProto.INT2})

DTYPE_REASON = ("unsupported dtype {names} (edge_runtime has no numpy/ml_dtypes type for strings, complex "
                "numbers or float8 E8M0)")
NON_TENSOR_REASON = "non-tensor value type (sequence/optional/map) is not supported by edge_runtime"
UNSUPPORTED_OP_REASON = "expanded function body uses ops edge_runtime does not implement: {ops}"


@functools.lru_cache(maxsize=1)
def all_cases() -> tuple[Any, ...]:
    """Every onnx backend node test case (model, data sets, tolerances), built once."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        return tuple(collect_testcases())


@functools.lru_cache(maxsize=1)
def _by_name() -> dict[str, Any]:
    return {c.name: c for c in all_cases()}


def is_expanded(case: Any) -> bool:
    """Whether ``case`` is an ``_expanded`` function-body variant of a single-op case."""
    return "_expanded" in case.name


def target_op(case: Any) -> str | None:
    """The op type a case tests: its single node, or the base case's node for ``_expanded`` ones."""
    if not is_expanded(case):
        nodes = case.model.graph.node
        return nodes[0].op_type if len(nodes) == 1 else None
    base = _by_name().get(case.name.split("_expanded")[0])
    if base is None or len(base.model.graph.node) != 1:
        return None
    return base.model.graph.node[0].op_type


def model_opset(model: onnx.ModelProto, domain: str = "") -> int:
    """The model's opset for ``domain`` (default domain when absent)."""
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    return 1


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes and those of its subgraphs (If branches, Loop/Scan bodies), nested ones too."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                nodes.extend(all_nodes(sub))
    return nodes


def missing_ops(case: Any) -> list[str]:
    """Op types in the case's model (subgraphs included) that the registry cannot resolve at the model's opset."""
    from edge_runtime.errors import UnsupportedOpError
    from edge_runtime.ops.registry import resolve

    missing = []
    for node in all_nodes(case.model.graph):
        try:
            resolve(node.domain, node.op_type, model_opset(case.model, node.domain))
        except UnsupportedOpError:
            missing.append(node.op_type)
    return sorted(set(missing))


def _value_elem_types(case: Any) -> tuple[set[int], bool]:
    graph = case.model.graph
    types: set[int] = set()
    non_tensor = False
    for vi in list(graph.input) + list(graph.output):
        if vi.type.HasField("tensor_type"):
            types.add(vi.type.tensor_type.elem_type)
        else:
            non_tensor = True
    for node in all_nodes(graph):  # Cast/CastLike targets and typed constants, in subgraphs too
        for attr in node.attribute:
            if attr.name == "to":
                types.add(attr.i)
            elif attr.type == onnx.AttributeProto.TENSOR:
                types.add(attr.t.data_type)
    types.update(init.data_type for init in graph.initializer)
    return types, non_tensor


def dtype_exclusion(case: Any) -> str | None:
    """The skip reason when a case uses element/value types the runtime does not support."""
    types, non_tensor = _value_elem_types(case)
    if non_tensor:
        return NON_TENSOR_REASON
    bad = sorted(TensorProto.DataType.Name(t) for t in types - SUPPORTED_ELEM_TYPES if t != 0)
    return DTYPE_REASON.format(names=", ".join(bad)) if bad else None


def cases_for(op_types: Iterable[str]) -> list[Any]:
    """Cases that test one of ``op_types``: the single-op cases and their ``_expanded`` variants.

    Expanded variants are included only when every op of their function body resolves in
    the registry (so a family's suite does not fail because another family is unfinished).
    """
    wanted = set(op_types)
    selected = []
    for case in all_cases():
        if target_op(case) not in wanted:
            continue
        if is_expanded(case) and missing_ops(case):
            continue
        selected.append(case)
    return selected


def make_case(name: str, nodes: Sequence[onnx.NodeProto], inputs: dict[str, np.ndarray],
              outputs: dict[str, np.ndarray], opset: int = 17, *, rtol: float = 1e-3, atol: float = 1e-7) -> Any:
    """A hand-written single-data-set case, for ops whose onnx cases are all excluded.

    Args:
        name: the case name (``test_<op>_...`` by convention).
        nodes: the graph's nodes, topologically sorted.
        inputs: graph input name -> value (its dtype/shape define the input's type).
        outputs: graph output name -> expected value.
        opset: the default-domain opset of the model.
    Returns:
        An ``onnx.backend.test.case.test_case.TestCase`` usable with :func:`run_case`.
    """
    from onnx.backend.test.case.test_case import TestCase

    def info(n: str, v: np.ndarray) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))

    graph = helper.make_graph(list(nodes), name, [info(n, v) for n, v in inputs.items()],
                              [info(n, v) for n, v in outputs.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return TestCase(name=name, model_name=name, url="", model_dir=None, model=model,
                    data_sets=[(list(inputs.values()), list(outputs.values()))], kind="node", rtol=rtol, atol=atol)


def exclusion_reason(case: Any, exclusions: dict[str, str]) -> str | None:
    """The family's explicit reason, else the automatic dtype reason, else None."""
    return exclusions.get(case.name) or dtype_exclusion(case)


def params_for(op_types: Iterable[str], exclusions: dict[str, str], extra: Sequence[Any] = ()) -> list[Any]:
    """pytest params (id = case name) over :func:`cases_for` plus ``extra`` (see :func:`make_case`).

    Excluded cases are marked skip with their reason.
    """
    import pytest

    params = []
    for case in [*cases_for(op_types), *extra]:
        reason = exclusion_reason(case, exclusions)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def assert_each_op_runs(op_types: Iterable[str], params: Sequence[Any]) -> None:
    """Fail when some op in ``op_types`` has no case that actually runs (all excluded or none)."""
    running = {target_op(p.values[0]) for p in params if not p.marks}
    missing = sorted(set(op_types) - running)
    if missing:
        raise AssertionError(f"no conformance case runs for {missing}: every case is excluded or absent; "
                             f"add a test case for them in the family's test file")


def family_tests(op_types: Iterable[str], params: Sequence[Any]) -> tuple[Callable[..., None], Callable[[], None]]:
    """The two tests every family file runs, for it to bind as ``test_case, test_every_op_runs``.

    ``test_case`` runs each case of ``params`` (excluded ones show as skips); ``test_every_op_runs``
    fails when some op of ``op_types`` has no case that runs.
    """
    import pytest

    @pytest.mark.parametrize("case", params)
    def test_case(case: Any) -> None:
        run_case(case)

    def test_every_op_runs() -> None:
        assert_each_op_runs(op_types, params)

    return test_case, test_every_op_runs


# ---------------------------------------------------------------- running

def _to_array(value: Any) -> np.ndarray:
    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value)


def _feed(case_model: onnx.ModelProto, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    inits = {i.name for i in case_model.graph.initializer}
    names = [vi.name for vi in case_model.graph.input if vi.name not in inits]
    return {name: _to_array(v) for name, v in zip(names, inputs)}


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    try:
        from edge_runtime.onnx_io import attributes
        return attributes(node)
    except ImportError:
        pass
    result: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8") for v in value]
        result[attr.name] = value
    return result


def run_direct(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a topologically sorted model by calling registry implementations node by node."""
    from edge_runtime.ops.registry import resolve

    values: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    values.update(feed)
    for node in model.graph.node:
        impl, _ = resolve(node.domain, node.op_type, model_opset(model, node.domain))
        args = [values[name] if name else None for name in node.input]
        out = impl.fn(*args, **_attributes(node))
        outs = out if isinstance(out, tuple) else (out,)
        for name, val in zip(node.output, outs):
            if name:
                values[name] = val
    return [values[o.name] for o in model.graph.output]


def run_session(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run through ``edge_runtime.InferenceSession`` (the integrated path)."""
    import edge_runtime

    return list(edge_runtime.InferenceSession(model).run(None, feed))


def _smoke_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "smoke", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@functools.lru_cache(maxsize=1)
def runner() -> Callable[[onnx.ModelProto, dict[str, np.ndarray]], list[np.ndarray]]:
    """The session runner when it exists and works (or is forced), else :func:`run_direct`."""
    mode = os.environ.get("EDGE_CONFORMANCE_MODE", "auto")
    if mode == "direct":
        return run_direct
    if mode == "session":
        return run_session
    try:
        out = run_session(_smoke_model(), {"x": np.array([-1.0, 2.0], np.float32)})
        if np.array_equal(out[0], [0.0, 2.0]):
            return run_session
    except Exception as exc:  # noqa: BLE001 - any failure means: not ready, use direct mode
        log.info("conformance: InferenceSession unavailable (%s); using direct mode", exc)
    return run_direct


def assert_outputs_match(case: Any, got: Sequence[np.ndarray], expected: Sequence[Any]) -> None:
    """Compare outputs: dtype and shape exactly; floats to the case's rtol/atol, others exactly."""
    if len(got) < len(expected):
        raise AssertionError(f"{case.name}: {len(got)} outputs, expected {len(expected)}")
    for i, (g, e) in enumerate(zip(got, expected)):
        e = _to_array(e)
        g = np.asarray(g)
        where = f"{case.name} output {i}"
        assert g.dtype == e.dtype, f"{where}: dtype {g.dtype}, expected {e.dtype}"
        assert g.shape == e.shape, f"{where}: shape {g.shape}, expected {e.shape}"
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol, err_msg=where)
        else:
            np.testing.assert_array_equal(g, e, err_msg=where)


#: Cases where onnxruntime itself departs from the ONNX reference. With ``--dense-engine
#: onnxruntime`` the session gives onnxruntime's answer there (its result, or its refusal as an
#: ExecutionError naming the numba engine: tests/edge_runtime/engine/test_ort_boundary.py), so
#: these cases measure onnxruntime, not edge_runtime, and are skipped on that engine only.
ORT_ENGINE_DIFFERS = {
    "test_convinteger_with_padding": "onnxruntime's ConvInteger takes per-tensor weight zero points only",
    "test_reduce_max_empty_set_bool": "onnxruntime's ReduceMax refuses an empty bool set",
    "test_resize_downsample_scales_linear_align_corners": "onnxruntime's align_corners downsampling "
                                                           "picks other source pixels than the reference",
    "test_resize_downsample_scales_cubic_align_corners": "onnxruntime's align_corners downsampling "
                                                          "picks other source pixels than the reference",
}


def run_case(case: Any) -> None:
    """Run every data set of ``case`` and compare with the expected outputs (raises on mismatch)."""
    if case.name in ORT_ENGINE_DIFFERS and os.environ.get("EDGE_RUNTIME_DENSE_ENGINE") == "onnxruntime":
        import pytest

        pytest.skip(f"onnxruntime engine: {ORT_ENGINE_DIFFERS[case.name]}")
    run = runner()
    for inputs, expected in case.data_sets:
        got = run(case.model, _feed(case.model, inputs))
        assert_outputs_match(case, got, expected)


# ---------------------------------------------------------------- docs

def family_modules() -> list[Any]:
    """Every ``tests.edge_runtime.test_conformance_*`` module (each has OP_TYPES, EXCLUSIONS)."""
    import tests.edge_runtime as pkg

    mods = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("test_conformance_"):
            mod = importlib.import_module(f"tests.edge_runtime.{info.name}")
            if hasattr(mod, "OP_TYPES"):  # families only (not the registry-coverage check)
                mods.append(mod)
    return mods


def _skip_reason(param: Any) -> str | None:
    """The reason a parametrized case is skipped, read from its marks (what pytest will do)."""
    return next((m.kwargs.get("reason", "skipped") for m in param.marks if m.name == "skip"), None)


def _family_section(family: str, mod: Any) -> list[str]:
    params = getattr(mod, "PARAMS", None) or params_for(mod.OP_TYPES, mod.EXCLUSIONS)
    explicit, automatic = [], {}
    for p in params:
        case = p.values[0]
        reason = _skip_reason(p)
        if case.name in mod.EXCLUSIONS:
            explicit.append((case.name, reason))
        elif reason:
            automatic.setdefault(reason, []).append(case.name)
    n_auto = sum(len(v) for v in automatic.values())
    lines = [f"## {family}", "", f"Ops: {', '.join(sorted(mod.OP_TYPES))}", "",
             f"{len(params)} cases, {len(params) - len(explicit) - n_auto} run, {len(explicit)} excluded "
             f"explicitly, {n_auto} excluded for their dtypes.", ""]
    if explicit:
        lines += ["| case | reason |", "|---|---|"] + [f"| `{n}` | {r} |" for n, r in explicit] + [""]
    for reason, names in sorted(automatic.items()):
        lines += [f"- {reason}: {len(names)} cases: " + ", ".join(f"`{n}`" for n in names)]
    return lines + [""]


def exclusions_markdown() -> str:
    """docs/conformance.md: per family, counts, explicit exclusions and dtype exclusions grouped by reason."""
    lines = ["# ONNX conformance: excluded backend node cases", "",
             "Generated by `python3 -m tests.edge_runtime.conformance` from the `PARAMS`/`EXCLUSIONS` of each",
             "`tests/edge_runtime/test_conformance_<family>.py` plus the automatic dtype rule",
             "(types without a numpy/ml_dtypes type: string, complex, float8 E8M0). Do not edit by hand.",
             "`_expanded` (function-body) cases are counted only when every op they use is implemented,",
             "so the counts grow as op families land.", ""]
    sections, total, run = [], 0, 0
    for mod in family_modules():
        sections += _family_section(mod.__name__.rsplit("test_conformance_", 1)[1], mod)
        params = getattr(mod, "PARAMS", None) or params_for(mod.OP_TYPES, mod.EXCLUSIONS)
        total += len(params)
        run += sum(1 for p in params if not _skip_reason(p))
    lines += [f"**All claimed ops: {run} of {total} node cases run ({100 * run / max(total, 1):.1f}%).**", ""]
    return "\n".join(lines + sections)


def main() -> None:
    """Write docs/conformance.md next to this repository's tests."""
    path = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    survey = Path(__file__).with_name("conformance_survey.md")  # hand-written, appended verbatim
    path.write_text(exclusions_markdown() + ("\n" + survey.read_text() if survey.is_file() else ""))
    log.warning("wrote %s", path)


if __name__ == "__main__":
    main()
