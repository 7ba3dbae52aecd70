"""dump_profile: round trip, no-overwrite protection, validation before writing."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from device_profiles import (
    Budget, ProfileError, dump_profile, host_profile, list_profiles, load_profile,
)


@pytest.mark.parametrize("name", ["raspberry-pi-4", "jetson-orin-nano", "host"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    original = load_profile(name)
    path = dump_profile(original, tmp_path / f"{name}.toml")
    again = load_profile(path)
    assert again == original
    assert again.to_dict() == original.to_dict()
    assert again.source == str(path)


def test_round_trip_with_budget_and_odd_strings(tmp_path: Path) -> None:
    p = dataclasses.replace(
        load_profile("jetson-nano"),
        description='quote " backslash \\ unicode \u00b5s tab\t',
        budget=Budget(latency_ms=12.5),
    )
    assert load_profile(dump_profile(p, tmp_path / "x.toml")) == p


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text("keep me")
    with pytest.raises(ProfileError, match="already exists; refusing to overwrite.*overwrite=True"):
        dump_profile(host_profile(), path)
    assert path.read_text() == "keep me"


def test_overwrite_true_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text("old")
    dump_profile(host_profile(), path, overwrite=True, header="calibrated\non this machine")
    assert path.read_text().startswith("# calibrated\n# on this machine\n")
    assert load_profile(path).name == "host"
    assert [p.name for p in tmp_path.iterdir()] == ["host.toml"]


def test_invalid_profile_is_not_written(tmp_path: Path) -> None:
    bad = dataclasses.replace(host_profile(), cpu=dataclasses.replace(host_profile().cpu, cores=0))
    with pytest.raises(ProfileError, match="key 'cpu.cores' must be a positive integer"):
        dump_profile(bad, tmp_path / "bad.toml")
    assert not (tmp_path / "bad.toml").exists()


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot write device profile"):
        dump_profile(host_profile(), tmp_path / "no" / "such" / "host.toml")


def test_dumped_file_is_listed_via_env(tmp_path: Path, monkeypatch) -> None:
    p = dataclasses.replace(load_profile("raspberry-pi-5"), name="pi5-calibrated")
    dump_profile(p, tmp_path / "pi5-calibrated.toml")
    monkeypatch.setenv("EDGE_RUNTIME_PROFILES", str(tmp_path))
    assert "pi5-calibrated" in list_profiles()
    assert load_profile("pi5-calibrated") == p
