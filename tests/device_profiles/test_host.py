"""The generated host profile, on this machine and on fake /proc and /sys trees."""
from __future__ import annotations

import os
from pathlib import Path

from device_profiles import host_profile, profile_from_dict
from device_profiles.host import cpu_from_cpuinfo

PI4_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08
"""

PI5_FEATURES = "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
PI5_CPUINFO = PI4_CPUINFO.replace("crc32 cpuid", PI5_FEATURES).replace("0xd08", "0xd0b")

X86_CPUINFO = """\
model name\t: Test CPU
cpu MHz\t\t: 3000.000
flags\t\t: fpu sse4_2 popcnt ssse3 cx16 avx avx2 bmi1 bmi2 f16c fma movbe
"""


def _fake_tree(tmp_path: Path, cpuinfo: str) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(cpuinfo)
    (proc / "meminfo").write_text("MemTotal:        3884452 kB\nMemFree: 1 kB\n")
    sys_cpu = tmp_path / "cpu"
    caches = [(1, "Data", "32K"), (1, "Instruction", "48K"), (2, "Unified", "1M")]
    for i, (level, kind, size) in enumerate(caches):
        d = sys_cpu / "cpu0" / "cache" / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    freq = sys_cpu / "cpu0" / "cpufreq"
    freq.mkdir()
    (freq / "cpuinfo_max_freq").write_text("1800000\n")
    return proc, sys_cpu


def test_host_profile_on_this_machine_is_valid() -> None:
    p = host_profile()
    assert p.name == "host" and p.cpu.cores >= 1
    assert p.cpu.cores <= (os.cpu_count() or 1)
    assert p.cache.l1d_kb > 0 and p.memory.size_gb > 0 and p.cpu.clock_ghz > 0
    assert p.compute.estimated and p.memory.estimated
    assert profile_from_dict(p.to_dict(), origin="host") == p  # passes the schema


def test_pi4_like_tree(tmp_path: Path) -> None:
    proc, sys_cpu = _fake_tree(tmp_path, PI4_CPUINFO)
    p = host_profile(proc=proc, sys_cpu=sys_cpu)
    assert (p.cpu.core_type, p.cpu.isa, p.cpu.simd) == ("Cortex-A72", "armv8.0-a", ("neon",))
    assert p.cpu.clock_ghz == 1.8
    assert (p.cache.l1d_kb, p.cache.l2_kb, p.cache.l3_kb) == (32, 1024, 0)
    assert p.memory.size_gb == 3.88
    assert p.compute.peak_fp32_gflops == round(p.cpu.cores * 1.8 * 8, 1)


def test_pi5_features_map_to_profile_names() -> None:
    cpu = cpu_from_cpuinfo(PI5_CPUINFO, cores=4, clock_ghz=2.4)
    assert (cpu.core_type, cpu.isa) == ("Cortex-A76", "armv8.2-a")
    assert cpu.simd == ("neon", "fp16", "dotprod")


def test_x86_flags_and_level() -> None:
    cpu = cpu_from_cpuinfo(X86_CPUINFO, cores=2, clock_ghz=3.0)
    assert cpu.core_type == "Test CPU" and cpu.isa == "x86-64-v3"
    assert cpu.simd == ("sse4_2", "avx", "avx2", "fma", "f16c")


def test_missing_system_files_fall_back(tmp_path: Path) -> None:
    p = host_profile(proc=tmp_path / "none", sys_cpu=tmp_path / "none")
    assert p.cpu.clock_ghz == 1.0 and p.cache.l1d_kb == 32 and p.memory.size_gb > 0
    assert profile_from_dict(p.to_dict(), origin="host") == p
