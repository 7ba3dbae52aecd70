"""Fixtures for device-profile tests: an isolated user-profile directory and a valid TOML text."""
from __future__ import annotations

from pathlib import Path

import pytest

from device_profiles import SHIPPED_DIR


@pytest.fixture(autouse=True)
def _no_user_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own EDGE_RUNTIME_PROFILES."""
    monkeypatch.delenv("EDGE_RUNTIME_PROFILES", raising=False)


@pytest.fixture
def pi4_text() -> str:
    """The shipped Raspberry Pi 4 profile, a known-valid starting point for broken variants."""
    return (SHIPPED_DIR / "raspberry-pi-4.toml").read_text(encoding="utf-8")


@pytest.fixture
def write(tmp_path: Path):
    """Write TOML text to tmp_path/<name>.toml and return the path."""

    def _write(text: str, name: str = "board") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return _write
