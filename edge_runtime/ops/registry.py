"""Operator registry: (domain, op_type, since_version) -> implementation.

An implementation's Python signature is its ONNX schema (tinygrad style): inputs
positional (a missing optional input arrives as ``None``), attributes keyword-only
with the spec's defaults::

    @register("Gemm")
    def Gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0): ...

Ops whose inputs/attributes changed across opsets register one function per
``since_version``; the planner resolves a model's opset to the newest registered
version that is <= the schema's since_version for that opset (onnx.defs).

Ops that gain from plan-time work (re-laid-out weights, cached geometry) also register a
*builder* with :func:`register_builder`; a Conv/Gemm/MatMul with constant weights has a
prepared layer instead (:mod:`edge_runtime.prepared`), which the planner asks first. The
planner calls ``builder(node, consts, ctx)`` once per node, where ``consts[i]`` is the constant
value of input ``i`` (or ``None`` when it is only known at run time); the builder
returns a callable taking the same positional inputs as the op (``None`` for
missing optionals), or ``None`` to fall back to the plain implementation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from edge_runtime.errors import UnsupportedOpError
from edge_runtime.graph import INTERNAL_DOMAIN  # noqa: F401 - the internal ops' domain, re-exported

ONNX_DOMAIN = ""

OpFn = Callable[..., Any]
Builder = Callable[..., "OpFn | None"]


@dataclass(frozen=True)
class OpImpl:
    """One registered implementation of an operator version."""

    domain: str
    op_type: str
    since_version: int
    fn: OpFn


_IMPLS: dict[tuple[str, str], dict[int, OpImpl]] = {}
_BUILDERS: dict[tuple[str, str], dict[int, Builder]] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def register(op_type: str, *, domain: str = ONNX_DOMAIN, since_version: int = 1) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` as the implementation of ``op_type`` from ``since_version`` on.

    Raises:
        ValueError: the same (domain, op_type, since_version) is registered twice.
    """
    key = (_norm_domain(domain), op_type)

    def deco(fn: OpFn) -> OpFn:
        versions = _IMPLS.setdefault(key, {})
        if since_version in versions:
            raise ValueError(f"duplicate registration of {key} since_version={since_version}: "
                             f"{versions[since_version].fn.__module__} and {fn.__module__}")
        versions[since_version] = OpImpl(key[0], op_type, since_version, fn)
        return fn

    return deco


def register_builder(op_type: str, *, domain: str = ONNX_DOMAIN, since_version: int = 1) -> Callable[[Builder], Builder]:
    """Register a plan-time specialiser for ``op_type`` (see module docstring)."""
    key = (_norm_domain(domain), op_type)

    def deco(fn: Builder) -> Builder:
        versions = _BUILDERS.setdefault(key, {})
        if since_version in versions:
            raise ValueError(f"duplicate builder for {key} since_version={since_version}")
        versions[since_version] = fn
        return fn

    return deco


def _load_all() -> None:
    """Import every op module once so their decorators run."""
    from edge_runtime import ops  # noqa: F401  (ops/__init__ imports the families)


def _schema_version(domain: str, op_type: str, opset: int) -> int:
    """The since_version of the ONNX schema in force for ``op_type`` at ``opset``."""
    if domain != "":
        return opset
    import onnx.defs

    try:
        return onnx.defs.get_schema(op_type, opset, domain).since_version
    except Exception:  # unknown to this onnx build: fall back to the model's opset
        return opset


def _op_label(domain: str, op_type: str) -> str:
    return f"{domain}::{op_type}" if domain else op_type


def _lookup(domain: str, op_type: str, opset: int) -> tuple[OpImpl | None, str]:
    """The implementation for an op at a model opset, or None and why not (one clause)."""
    key = (_norm_domain(domain), op_type)
    versions = _IMPLS.get(key)
    if not versions:
        return None, f"domain '{domain or 'ai.onnx'}' opset {opset}: not implemented"
    wanted = _schema_version(key[0], op_type, opset)
    candidates = [v for v in versions if v <= wanted]
    if not candidates:
        return None, (f"opset {opset} (schema version {wanted}): edge_runtime implements versions "
                      f"{sorted(versions)}, re-export with opset >= {min(versions)}")
    return versions[max(candidates)], ""


def resolve(domain: str, op_type: str, opset: int) -> tuple[OpImpl, Builder | None]:
    """Find the implementation (and optional builder) for an op at a model opset.

    Raises:
        UnsupportedOpError: no implementation for that op and version.
    """
    _load_all()
    impl, why = _lookup(domain, op_type, opset)
    if impl is None:
        raise UnsupportedOpError(
            f"operator '{_op_label(domain, op_type)}' ({why}) is not supported by edge_runtime; "
            f"edge_runtime.supported_ops() lists what is. Replace the layer or open an issue with the model attached.")
    key = (_norm_domain(domain), op_type)
    wanted = _schema_version(key[0], op_type, opset)
    builders = _BUILDERS.get(key, {})
    bcands = [v for v in builders if v <= wanted]
    builder = builders[max(bcands)] if bcands else None
    return impl, builder


@dataclass(frozen=True)
class MissingOp:
    """An operator a model needs that this runtime cannot run, with where it occurs."""

    domain: str
    op_type: str
    reason: str       # why not (not implemented, or which versions are)
    count: int        # nodes of this op in the model
    first_node: str   # the first such node's name ('' when unnamed)


def find_missing(nodes: Iterable[Any], opset_of: Callable[[str], int]) -> list[MissingOp]:
    """Every (domain, op_type) among ``nodes`` that cannot be resolved, in order of first use.

    Args:
        nodes: graph nodes (``domain``, ``op_type``, ``name`` attributes).
        opset_of: the model's opset for a domain.

    Returns:
        One :class:`MissingOp` per missing op, with its node count and first node name.
    """
    _load_all()
    found: dict[tuple[str, str], list[Any]] = {}
    for node in nodes:
        key = (_norm_domain(node.domain), node.op_type)
        if key in found:
            found[key][1] += 1
            continue
        impl, why = _lookup(node.domain, node.op_type, opset_of(node.domain))
        found[key] = [why, 1, node.name] if impl is None else ["", 0, ""]
    return [MissingOp(d, t, why, n, first) for (d, t), (why, n, first) in found.items() if n and why]


def check_supported(nodes: Iterable[Any], opset_of: Callable[[str], int]) -> None:
    """Raise one error naming every operator of ``nodes`` this runtime cannot run.

    Raises:
        UnsupportedOpError: at least one op is missing; the message lists each with its reason,
            node count and first node name, and points to ``edge_runtime.supported_ops()``.
    """
    missing = find_missing(nodes, opset_of)
    if not missing:
        return
    parts = []
    for m in missing:
        where = f"{m.count} node{'s' if m.count > 1 else ''}, first '{m.first_node}'" if m.first_node else (
            f"{m.count} node{'s' if m.count > 1 else ''}")
        parts.append(f"{_op_label(m.domain, m.op_type)} ({m.reason}; {where})")
    raise UnsupportedOpError(
        f"the model uses {len(missing)} operator{'s' if len(missing) > 1 else ''} edge_runtime cannot run: "
        f"{'; '.join(parts)}. edge_runtime.supported_ops() lists the supported operators; replace these "
        f"layers in the model or open an issue with the model attached.")


def supported_ops() -> set[tuple[str, str]]:
    """The (domain, op_type) pairs this runtime implements (ONNX's default domain is '')."""
    _load_all()
    return {k for k in _IMPLS if k[0] != INTERNAL_DOMAIN}


def iter_impls() -> Iterator[OpImpl]:
    """Every registered implementation (all versions), for tests and docs."""
    _load_all()
    for versions in _IMPLS.values():
        yield from versions.values()
