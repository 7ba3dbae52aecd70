"""Loading shipped and user profiles by name or path; listing; lookup errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from device_profiles import (
    DeviceProfile, ProfileError, SparseCrossover, list_profiles, load_profile,
)

SHIPPED = ["jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_with_sane_values(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.cpu.cores >= 4 and p.runtime.threads == p.cpu.cores
    assert p.cpu.isa.startswith("armv8") and "neon" in p.cpu.simd
    assert 0 < p.runtime.sparse_crossover.conv <= p.runtime.sparse_crossover.gemv <= 1
    assert p.source is not None and p.source.endswith(f"{name}.toml")


def test_shipped_facts_match_references() -> None:
    pi4, pi5 = load_profile("raspberry-pi-4"), load_profile("raspberry-pi-5")
    assert (pi4.compute.peak_fp32_gflops, pi4.memory.bandwidth_gbps) == (47.9, 2.5)
    assert (pi5.compute.peak_fp32_gflops, pi5.memory.bandwidth_gbps) == (153.5, 4.4)
    assert not pi4.compute.estimated and load_profile("jetson-nano").compute.estimated
    assert pi5.cache.l3_kb == 2048 and pi4.cache.l3_kb == 0
    assert load_profile("jetson-orin-nano").gpu.int8_tops == 20.0


def test_list_profiles_is_sorted_and_includes_host() -> None:
    names = list_profiles()
    assert names == sorted(names)
    assert set(SHIPPED) | {"host"} == set(names)


def test_profile_object_is_returned_unchanged() -> None:
    p = load_profile("raspberry-pi-5")
    assert load_profile(p) is p


def test_load_by_path_str_and_pathlike(write, pi4_text: str) -> None:
    path = write(pi4_text, name="raspberry-pi-4")
    assert load_profile(path) == load_profile(str(path)) == load_profile("raspberry-pi-4")


def test_load_by_path_expands_home(tmp_path: Path, monkeypatch, pi4_text: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "raspberry-pi-4.toml").write_text(pi4_text)
    assert load_profile("~/raspberry-pi-4.toml").cpu.cores == 4


def test_profiles_are_frozen() -> None:
    p = load_profile("raspberry-pi-4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.cpu.cores = 8  # type: ignore[misc]


def test_sparse_crossover_mapping_access() -> None:
    c = SparseCrossover(gemv=0.7, gemm=0.3, conv=0.2)
    assert c["gemm"] == 0.3
    with pytest.raises(KeyError, match="allowed: gemv, gemm, conv"):
        c["attention"]


def test_env_var_directory_adds_and_shadows(tmp_path: Path, monkeypatch, pi4_text: str) -> None:
    (tmp_path / "my-board.toml").write_text(pi4_text.replace('"raspberry-pi-4"', '"my-board"'))
    shadow = pi4_text.replace("threads = 4", "threads = 2")
    (tmp_path / "raspberry-pi-4.toml").write_text(shadow)
    monkeypatch.setenv("EDGE_RUNTIME_PROFILES", str(tmp_path))
    assert "my-board" in list_profiles() and list_profiles().count("raspberry-pi-4") == 1
    assert load_profile("my-board").name == "my-board"
    assert load_profile("raspberry-pi-4").runtime.threads == 2
    assert load_profile("raspberry-pi-4").source == str(tmp_path / "raspberry-pi-4.toml")


def test_env_var_not_a_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_RUNTIME_PROFILES", str(tmp_path / "nope"))
    with pytest.raises(ProfileError, match="EDGE_RUNTIME_PROFILES=.*nope.*is not a directory"):
        list_profiles()


def test_unknown_name_lists_available_and_suggests() -> None:
    with pytest.raises(ProfileError) as err:
        load_profile("raspberry-pi-3")
    msg = str(err.value)
    assert "unknown device profile 'raspberry-pi-3'" in msg
    assert "Did you mean" in msg
    assert "Available: host, jetson-nano, jetson-orin-nano, raspberry-pi-4, raspberry-pi-5" in msg
    assert "EDGE_RUNTIME_PROFILES" in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"nothere\.toml' does not exist"):
        load_profile(tmp_path / "nothere.toml")


def test_unreadable_path_is_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(folder)


def test_wrong_argument_type() -> None:
    with pytest.raises(ProfileError, match=r"got 42 \(int\)"):
        load_profile(42)  # type: ignore[arg-type]


def test_host_name_returns_generated_profile() -> None:
    p = load_profile("host")
    assert isinstance(p, DeviceProfile) and p.name == "host"
    assert p.compute.estimated and p.memory.estimated


def test_calibrated_host_file_overrides_generated(tmp_path: Path, monkeypatch, pi4_text) -> None:
    (tmp_path / "host.toml").write_text(pi4_text.replace('"raspberry-pi-4"', '"host"'))
    monkeypatch.setenv("EDGE_RUNTIME_PROFILES", str(tmp_path))
    assert load_profile("host").compute.peak_fp32_gflops == 47.9
