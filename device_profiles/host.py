"""Generate a device profile for the machine we are running on.

Facts come from Linux: ``/proc/cpuinfo`` (ISA, SIMD flags, core name, clock),
``/sys/devices/system/cpu`` (clock, caches), ``/proc/meminfo`` (memory) and the
scheduler's affinity mask (cores). Throughput and bandwidth cannot be read
from the system, so they get conservative defaults marked ``estimated = true``
until ``edge-runtime devices calibrate`` measures them and writes a ``host.toml``
(which :func:`device_profiles.load_profile` then prefers).
"""
from __future__ import annotations

import logging
import os
import platform
import re
from pathlib import Path

from device_profiles.schema import (
    CPU, Cache, Compute, DeviceProfile, Memory, Runtime, SparseCrossover,
)

logger = logging.getLogger(__name__)

# Max input density at which the sparse kernel beats the runtime's own dense path, measured on
# the x86 build machine with sparsity="force" vs "off" sessions (docs/sparse_kernels.md: break-even
# gemv ~1.0, gemm 197x3072x768 0.35-0.42, conv 3x3 128 -> 128 0.45) lowered by ~20% so dispatch
# does not pick the slower kernel near the break-even; edge_runtime.dispatch scales the conv value
# per layer shape, and 1x1 convs dispatch as gemm. Recalibrate per device with
# `edge-runtime devices calibrate`.
DEFAULT_CROSSOVER = SparseCrossover(gemv=0.75, gemm=0.30, conv=0.35)
# One 128-bit FMA per cycle per core = 8 fp32 FLOP/cycle; matches the measured
# Cortex-A72 (47.9 GFLOP/s / (4 cores * 1.5 GHz), references.md §3). A floor, not a peak.
CONSERVATIVE_FLOP_PER_CYCLE = 8.0
# Raspberry Pi 4's measured memcpy (references.md §3): the slowest target we know.
CONSERVATIVE_BANDWIDTH_GBPS = 2.5
FALLBACK_CLOCK_GHZ = 1.0
FALLBACK_CACHE_KB = {"l1d_kb": 32, "l2_kb": 512, "l3_kb": 0}

# x86 flags worth reporting, in the order printed.
_X86_SIMD = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
)
# aarch64 /proc/cpuinfo "Features" -> names used in the shipped profiles.
_ARM_SIMD = {
    "asimd": "neon", "asimdhp": "fp16", "asimddp": "dotprod", "i8mm": "i8mm",
    "bf16": "bf16", "sve": "sve", "sve2": "sve2",
}
# Arm "CPU part" -> core name (Arm's main-ID register values).
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76", "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE", "0xd4b": "Cortex-A78C",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2",
}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict[str, str]:
    """Return the first value of each ``key : value`` line of ``/proc/cpuinfo``.

    Args:
        text: the file's contents.

    Returns:
        Lower-cased keys mapped to their first value.
    """
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip().lower(), value.strip())
    return info


def _x86_isa(flags: set[str]) -> str:
    """The x86-64 micro-architecture level (psABI v2/v3/v4) the flags satisfy."""
    levels = (
        ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
        ("x86-64-v3", {"avx2", "bmi1", "bmi2", "f16c", "fma", "movbe"}),
        ("x86-64-v2", {"sse4_2", "popcnt", "ssse3", "cx16"}),
    )
    return next((name for name, need in levels if need <= flags), "x86-64")


def _arm_isa(features: set[str]) -> str:
    """A coarse Armv8 level from the Features line (enough for kernel choice)."""
    if "sve2" in features:
        return "armv9.0-a"
    if features & {"asimddp", "asimdhp", "dcpop"}:
        return "armv8.2-a"
    if "atomics" in features:
        return "armv8.1-a"
    return "armv8.0-a"


def cpu_from_cpuinfo(text: str, cores: int, clock_ghz: float) -> CPU:
    """Build the [cpu] section from ``/proc/cpuinfo`` text.

    Args:
        text: the contents of ``/proc/cpuinfo`` (x86 or aarch64).
        cores: usable cores.
        clock_ghz: clock to record.

    Returns:
        The CPU facts; unknown fields fall back to the machine name.
    """
    info = parse_cpuinfo(text)
    if "features" in info and "flags" not in info:  # aarch64
        features = set(info["features"].split())
        simd = tuple(name for flag, name in _ARM_SIMD.items() if flag in features)
        part = info.get("cpu part", "").lower()
        core_type = _ARM_PARTS.get(part, f"Arm core (part {part or 'unknown'})")
        return CPU(cores, core_type, _arm_isa(features), simd, clock_ghz)
    flags = set(info.get("flags", "").split())
    simd = tuple(flag for flag in _X86_SIMD if flag in flags)
    core_type = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    isa = _x86_isa(flags) if flags else (platform.machine() or "unknown")
    return CPU(cores, core_type, isa, simd, clock_ghz)


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _clock_ghz(sys_cpu: Path, cpuinfo: dict[str, str]) -> float:
    khz = _read(sys_cpu / "cpu0" / "cpufreq" / "cpuinfo_max_freq").strip()
    if khz.isdigit() and int(khz) > 0:
        return int(khz) / 1e6
    mhz = cpuinfo.get("cpu mhz", "")
    try:
        if float(mhz) > 0:
            return round(float(mhz) / 1000, 3)
    except ValueError:
        pass
    logger.debug("no CPU clock found; using %.1f GHz", FALLBACK_CLOCK_GHZ)
    return FALLBACK_CLOCK_GHZ


def _size_kb(text: str) -> int | None:
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text)
    if not match:
        return None
    scale = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}[match.group(2)]
    return int(int(match.group(1)) * scale)


def cache_from_sysfs(cache_dir: Path) -> Cache:
    """Read cpu0's cache sizes from ``/sys/devices/system/cpu/cpu0/cache``.

    Args:
        cache_dir: the directory holding ``index*/{level,type,size}``.

    Returns:
        Cache sizes in KiB; levels not found get :data:`FALLBACK_CACHE_KB`.
    """
    sizes = dict(FALLBACK_CACHE_KB)
    found: set[str] = set()
    for index in sorted(cache_dir.glob("index*")):
        level = _read(index / "level").strip()
        kind = _read(index / "type").strip()
        size = _size_kb(_read(index / "size"))
        key = {"1": "l1d_kb", "2": "l2_kb", "3": "l3_kb"}.get(level)
        if key is None or not size or kind == "Instruction" or key in found:
            continue
        sizes[key] = size
        found.add(key)
    if {"l1d_kb", "l2_kb"} - found:
        logger.debug("cache sizes partly unknown in %s; using defaults for the rest", cache_dir)
    return Cache(**sizes)


def _memory_gb(meminfo: str) -> float:
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, re.MULTILINE)
    if match:
        return round(int(match.group(1)) / 1e6, 2)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 2)
    except (ValueError, OSError, AttributeError):
        logger.debug("memory size unknown; assuming 1 GB")
        return 1.0


def host_profile(
    *, proc: Path = Path("/proc"), sys_cpu: Path = Path("/sys/devices/system/cpu")
) -> DeviceProfile:
    """Generate the ``host`` profile for the current machine.

    ``peak_fp32_gflops`` (cores x clock x 8) and ``bandwidth_gbps`` (2.5) are
    conservative estimates, marked ``estimated = true``; a calibrated
    ``host.toml`` in ``EDGE_RUNTIME_PROFILES`` replaces this profile in
    ``load_profile("host")``.

    Args:
        proc: where ``cpuinfo`` and ``meminfo`` are (for tests).
        sys_cpu: the sysfs CPU directory (for tests).

    Returns:
        A validated-by-construction profile named ``host``.

    Example:
        >>> host_profile().cpu.cores >= 1
        True
    """
    cpuinfo_text = _read(proc / "cpuinfo")
    cores = _usable_cores()
    clock = _clock_ghz(sys_cpu, parse_cpuinfo(cpuinfo_text))
    cpu = cpu_from_cpuinfo(cpuinfo_text, cores, clock)
    return DeviceProfile(
        name="host",
        description=(
            f"This machine ({cpu.core_type}, {cores} usable cores), generated at run time; "
            "compute and bandwidth are estimates until `edge-runtime devices calibrate`."
        ),
        cpu=cpu,
        cache=cache_from_sysfs(sys_cpu / "cpu0" / "cache"),
        memory=Memory(_memory_gb(_read(proc / "meminfo")), CONSERVATIVE_BANDWIDTH_GBPS, True),
        compute=Compute(round(cores * clock * CONSERVATIVE_FLOP_PER_CYCLE, 1), True),
        runtime=Runtime(threads=cores, sparse_crossover=DEFAULT_CROSSOVER),
        source="generated by device_profiles.host_profile()",
    )
