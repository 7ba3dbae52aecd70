"""Each way a profile file can be broken gives an error naming file, key, value and the fix."""
from __future__ import annotations

import pytest

from device_profiles import ProfileError, load_profile


def _error(write, text: str) -> str:
    path = write(text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg, msg  # every message names the file
    return msg


def test_missing_required_key(write, pi4_text: str) -> None:
    msg = _error(write, pi4_text.replace("cores = 4\n", ""))
    assert "missing required key 'cpu.cores'" in msg
    assert "a positive integer" in msg
    assert "Required keys in [cpu]: clock_ghz, core_type, cores, isa, simd" in msg


def test_missing_required_table(write, pi4_text: str) -> None:
    text = pi4_text.split("[compute]")[0] + "[runtime]" + pi4_text.split("[runtime]")[1]
    msg = _error(write, text)
    assert "missing required key 'compute'" in msg and "a table" in msg


def test_unknown_key_suggests_closest_and_lists_allowed(write, pi4_text: str) -> None:
    msg = _error(write, pi4_text.replace("clock_ghz =", "clock_mhz ="))
    assert "unknown key 'cpu.clock_mhz'" in msg
    assert "Did you mean 'clock_ghz'?" in msg
    assert "Allowed keys in [cpu]: clock_ghz, core_type, cores, isa, simd" in msg


def test_unknown_nested_key(write, pi4_text: str) -> None:
    msg = _error(write, pi4_text.replace("conv = 0.35", "conv = 0.35\nattention = 0.5"))
    assert "unknown key 'runtime.sparse_crossover.attention'" in msg
    assert "Allowed keys in [runtime.sparse_crossover]: conv, gemm, gemv" in msg


def test_unknown_top_level_table(write, pi4_text: str) -> None:
    msg = _error(write, pi4_text + "\n[budgets]\nlatency_ms = 5\n")
    assert "unknown key 'budgets'" in msg and "Did you mean 'budget'?" in msg


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("cores = 4", 'cores = "4"', "cpu.cores", "a positive integer"),
        ("cores = 4", "cores = 4.5", "cpu.cores", "a positive integer"),
        ("cores = 4", "cores = true", "cpu.cores", "a positive integer"),
        ('simd = ["neon"]', 'simd = "neon"', "cpu.simd", "a list of strings"),
        ("estimated = false", "estimated = 0", "memory.estimated", "true or false"),
        ('core_type = "Cortex-A72"', 'core_type = ""', "cpu.core_type", "a non-empty string"),
    ],
)
def test_wrong_type(write, pi4_text: str, old: str, new: str, key: str, expected: str) -> None:
    msg = _error(write, pi4_text.replace(old, new, 1))
    assert f"key '{key}' must be {expected}" in msg
    assert "got " in msg and "Fix: set " + key in msg


@pytest.mark.parametrize(
    ("old", "new", "key", "got"),
    [
        ("cores = 4", "cores = 0", "cpu.cores", "got 0 (int)"),
        ("threads = 4", "threads = -2", "runtime.threads", "got -2 (int)"),
        ("clock_ghz = 1.5", "clock_ghz = 0.0", "cpu.clock_ghz", "got 0.0 (float)"),
        ("bandwidth_gbps = 2.5", "bandwidth_gbps = -1", "memory.bandwidth_gbps", "got -1"),
        ("peak_fp32_gflops = 47.9", "peak_fp32_gflops = inf", "compute.peak_fp32_gflops", "inf"),
        ("l3_kb = 0", "l3_kb = -1", "cache.l3_kb", "got -1"),
    ],
)
def test_non_positive_values(write, pi4_text: str, old: str, new: str, key: str, got: str) -> None:
    msg = _error(write, pi4_text.replace(old, new, 1))
    assert f"key '{key}'" in msg and got in msg
    assert "positive" in msg or ">= 0" in msg


@pytest.mark.parametrize("value", ["0", "0.0", "1.5", "-0.1", "nan"])
def test_density_outside_unit_interval(write, pi4_text: str, value: str) -> None:
    msg = _error(write, pi4_text.replace("gemm = 0.30", f"gemm = {value}"))
    assert "key 'runtime.sparse_crossover.gemm' must be a density" in msg
    assert "in (0, 1]" in msg


def test_density_of_one_is_allowed(write, pi4_text: str) -> None:
    p = load_profile(write(pi4_text.replace("gemv = 0.75", "gemv = 1")))
    assert p.runtime.sparse_crossover.gemv == 1.0


def test_section_given_as_value(write, pi4_text: str) -> None:
    msg = _error(write, 'budget = 5\n' + pi4_text)
    assert "key 'budget' must be a table" in msg


def test_invalid_toml_reports_line(write, pi4_text: str) -> None:
    msg = _error(write, pi4_text.replace("cores = 4", "cores = = 4"))
    assert "is not valid TOML" in msg
    assert "line 8" in msg


def test_not_utf8(write, tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(path)


def test_optional_budget_and_gpu(write, pi4_text: str) -> None:
    p = load_profile(write(pi4_text + "\n[budget]\nlatency_ms = 50\n"))
    assert p.budget is not None and p.budget.latency_ms == 50.0
    gpu = '[gpu]  # informational: the runtime computes on the CPU\nname = "VideoCore VI"\n'
    assert gpu in pi4_text
    no_gpu = pi4_text.replace(gpu, "")
    assert load_profile(write(no_gpu, name="b2")).gpu is None
