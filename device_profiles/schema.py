"""The device-profile schema: frozen dataclasses, validated from parsed TOML.

Each dataclass field that maps to a TOML key carries its *kind* (what values
are allowed) and a one-line description in ``field(metadata=...)``; the
validator walks those fields, so the schema is stated once, here.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Mapping

from device_profiles.errors import ProfileError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# kind -> (what is expected, in words; check; conversion)
_KINDS: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    "pos_int": (
        "a positive integer (> 0)",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        int,
    ),
    "nonneg_int": (
        "an integer >= 0",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        int,
    ),
    "pos_float": (
        "a positive finite number (> 0)",
        lambda v: _is_number(v) and math.isfinite(v) and v > 0,
        float,
    ),
    "density": (
        "a density (fraction of nonzeros) in (0, 1]",
        lambda v: _is_number(v) and 0 < v <= 1,
        float,
    ),
    "str": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()), str),
    "str_list": (
        "a list of strings",
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v),
        tuple,
    ),
    "bool": ("true or false", lambda v: isinstance(v, bool), bool),
    "sparse_kernels": ('"numba" or "numpy"', lambda v: v in ("numba", "numpy"), str),
}


def _key(kind: str, doc: str, default: Any = MISSING) -> Any:
    """A dataclass field that is a TOML key of the given kind."""
    meta = {"kind": kind, "doc": doc}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _table(cls: type, doc: str, optional: bool = False) -> Any:
    """A dataclass field that is a TOML table validated as ``cls``."""
    meta = {"kind": "table", "cls": cls, "doc": doc}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


@dataclass(frozen=True)
class CPU:
    """The CPU cores the runtime runs on."""

    cores: int = _key("pos_int", "number of cores, e.g. 4")
    core_type: str = _key("str", 'core name, e.g. "Cortex-A72"')
    isa: str = _key("str", 'instruction set, e.g. "armv8.0-a"')
    simd: tuple[str, ...] = _key("str_list", 'SIMD features, e.g. ["neon", "dotprod"]')
    clock_ghz: float = _key("pos_float", "sustained core clock in GHz, e.g. 1.5")


@dataclass(frozen=True)
class Cache:
    """Cache sizes in KiB as seen by one core (a shared cache counts whole)."""

    l1d_kb: int = _key("pos_int", "L1 data cache per core in KiB, e.g. 32")
    l2_kb: int = _key("pos_int", "L2 one core can use in KiB, e.g. 1024")
    l3_kb: int = _key("nonneg_int", "shared L3 in KiB, 0 if none")


@dataclass(frozen=True)
class Memory:
    """Main memory size and sustained bandwidth."""

    size_gb: float = _key("pos_float", "DRAM size in GB, e.g. 4")
    bandwidth_gbps: float = _key("pos_float", "sustained (memcpy-like) GB/s, e.g. 2.5")
    estimated: bool = _key("bool", "true if bandwidth_gbps was not measured", False)


@dataclass(frozen=True)
class Compute:
    """CPU arithmetic throughput."""

    peak_fp32_gflops: float = _key("pos_float", "fp32 GFLOP/s on all cores, e.g. 47.9")
    estimated: bool = _key("bool", "true if peak_fp32_gflops was not measured", False)


@dataclass(frozen=True)
class GPU:
    """Informational only: the runtime computes on the CPU."""

    name: str = _key("str", 'GPU name, e.g. "VideoCore VI"')
    gflops: float | None = _key("pos_float", "peak GFLOP/s (see the file's comment)", None)
    int8_tops: float | None = _key("pos_float", "peak dense int8 TOPS", None)


@dataclass(frozen=True)
class SparseCrossover:
    """Per kernel family, the MAX input density at which the sparse kernel is used.

    Example:
        >>> c = SparseCrossover(gemv=0.75, gemm=0.15, conv=0.20)
        >>> c["gemm"], c.conv
        (0.15, 0.2)
    """

    gemv: float = _key("density", "max density for the sparse GEMV kernel, e.g. 0.75")
    gemm: float = _key("density", "max density for the sparse GEMM kernel, e.g. 0.15")
    conv: float = _key("density", "max density for the sparse conv kernel, e.g. 0.15")

    def __getitem__(self, family: str) -> float:
        names = [f.name for f in fields(self)]
        if family not in names:
            raise KeyError(
                f"unknown kernel family {family!r} for sparse_crossover; "
                f"allowed: {', '.join(names)}"
            )
        return float(getattr(self, family))


@dataclass(frozen=True)
class Runtime:
    """Runtime defaults for this device."""

    threads: int = _key("pos_int", "worker threads, e.g. 4")
    sparse_crossover: SparseCrossover = _table(
        SparseCrossover, "max density per kernel family for the sparse path"
    )
    sparse_kernels: str = _key(
        "sparse_kernels",
        'what runs the sparse islands: "numba" (fastest) or "numpy" (Gemm/MatMul only, never loads numba: '
        "~55-130 MB less on a 1 GB board)",
        "numba",
    )


@dataclass(frozen=True)
class Budget:
    """Optional application budget checked by latency profiling."""

    latency_ms: float = _key("pos_float", "target batch-1 latency in ms, e.g. 50")


@dataclass(frozen=True)
class DeviceProfile:
    """A hardware target: CPU, caches, memory, compute and runtime defaults.

    Build one with :func:`device_profiles.load_profile`; ``source`` records the
    file it came from (not part of equality or of :meth:`to_dict`).

    Example:
        >>> from device_profiles import load_profile
        >>> p = load_profile("raspberry-pi-4")
        >>> p.cpu.cores, p.runtime.sparse_crossover.gemv
        (4, 0.75)
        >>> p.to_dict()["cache"]["l2_kb"]
        1024
    """

    name: str = _key("str", 'short name, e.g. "raspberry-pi-4"')
    description: str = _key("str", "one line saying what the device is")
    cpu: CPU = _table(CPU, "CPU cores")
    cache: Cache = _table(Cache, "cache sizes")
    memory: Memory = _table(Memory, "DRAM")
    compute: Compute = _table(Compute, "CPU throughput")
    runtime: Runtime = _table(Runtime, "runtime defaults")
    gpu: GPU | None = _table(GPU, "informational GPU facts", optional=True)
    budget: Budget | None = _table(Budget, "application budget", optional=True)
    source: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the profile as plain TOML-ready data (absent optional tables omitted).

        Returns:
            A nested ``dict`` of str, int, float, bool and lists of str.
        """
        return _as_dict(self)


def _schema_fields(cls: type) -> dict[str, Any]:
    return {f.name: f for f in fields(cls) if "kind" in f.metadata}


def _as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in _schema_fields(type(obj)).items():
        value = getattr(obj, name)
        if value is None:
            continue
        if is_dataclass(value):
            out[name] = _as_dict(value)
        elif isinstance(value, tuple):
            out[name] = list(value)
        else:
            out[name] = value
    return out


def profile_from_dict(
    data: Mapping[str, Any], origin: str, source: str | None = None
) -> DeviceProfile:
    """Validate parsed TOML data and build a :class:`DeviceProfile`.

    Args:
        data: the parsed TOML document.
        origin: how to name the data in errors, e.g. the file path.
        source: recorded as ``DeviceProfile.source``.

    Returns:
        The validated, frozen profile.

    Raises:
        ProfileError: on a missing, unknown, mistyped or out-of-range key.
    """
    values = _build_values(DeviceProfile, data, "", origin)
    return DeviceProfile(**values, source=source)


def _build_values(cls: type, table: Any, path: str, origin: str) -> dict[str, Any]:
    where = f"[{path}]" if path else "the top level"
    if not isinstance(table, Mapping):
        raise ProfileError(
            f"device profile {origin}: key '{path}' must be a table ({where}), "
            f"got {table!r} ({type(table).__name__}). Fix: write it as a [{path}] section."
        )
    specs = _schema_fields(cls)
    for key in table:
        if key not in specs:
            raise _unknown_key(origin, path, key, sorted(specs), where)
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        dotted = f"{path}.{name}" if path else name
        if name not in table:
            if spec.default is MISSING:
                raise _missing_key(origin, dotted, spec, specs, where)
            continue
        values[name] = _convert(spec, table[name], dotted, origin)
    return values


def _convert(spec: Any, value: Any, dotted: str, origin: str) -> Any:
    kind = spec.metadata["kind"]
    if kind == "table":
        cls = spec.metadata["cls"]
        return cls(**_build_values(cls, value, dotted, origin))
    expected, check, convert = _KINDS[kind]
    if not check(value):
        raise ProfileError(
            f"device profile {origin}: key '{dotted}' must be {expected}, "
            f"got {value!r} ({type(value).__name__}). "
            f"Fix: set {dotted} ({spec.metadata['doc']})."
        )
    return convert(value)


def _expected(spec: Any) -> str:
    kind = spec.metadata["kind"]
    return "a table" if kind == "table" else _KINDS[kind][0]


def _missing_key(
    origin: str, dotted: str, spec: Any, specs: dict[str, Any], where: str
) -> ProfileError:
    required = sorted(n for n, s in specs.items() if s.default is MISSING)
    return ProfileError(
        f"device profile {origin}: missing required key '{dotted}' "
        f"({_expected(spec)}: {spec.metadata['doc']}). "
        f"Required keys in {where}: {', '.join(required)}. "
        f"Fix: {_how_to_add(spec, dotted, where)}."
    )


def _how_to_add(spec: Any, dotted: str, where: str) -> str:
    if spec.metadata["kind"] == "table":
        return f"add a [{dotted}] section"
    return f"add `{dotted.rsplit('.', 1)[-1]} = ...` to {where}"


def _unknown_key(origin: str, path: str, key: str, allowed: list[str], where: str) -> ProfileError:
    dotted = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ProfileError(
        f"device profile {origin}: unknown key '{dotted}'.{hint} "
        f"Allowed keys in {where}: {', '.join(allowed)}. Fix: rename or remove it."
    )
