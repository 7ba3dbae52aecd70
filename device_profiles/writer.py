"""Write a device profile as TOML, atomically (temp file + ``os.replace``).

The schema only holds strings, numbers, booleans, lists of strings and nested
tables, so a small emitter suffices and no TOML-writing dependency is needed.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from device_profiles.errors import ProfileError
from device_profiles.schema import DeviceProfile, profile_from_dict

logger = logging.getLogger(__name__)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string with \uXXXX escapes is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as TOML")


def _emit(table: dict[str, Any], path: str, lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path:
        lines.append("")
        lines.append(f"[{path}]")
    lines.extend(f"{key} = {_value(val)}" for key, val in scalars.items())
    for key, sub in tables.items():
        _emit(sub, f"{path}.{key}" if path else key, lines)


def profile_to_toml(profile: DeviceProfile, header: str = "") -> str:
    """Render a profile as TOML text.

    Args:
        profile: the profile to render.
        header: optional comment lines put first (each gets a ``# `` prefix).

    Returns:
        TOML text that :func:`device_profiles.load_profile` reads back equal.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _emit(profile.to_dict(), "", lines)
    return "\n".join(lines) + "\n"


def dump_profile(
    profile: DeviceProfile,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    header: str = "",
) -> Path:
    """Validate ``profile`` and write it to ``path`` as TOML, atomically.

    The text goes to a temporary file in the same directory, which then
    replaces ``path`` with ``os.replace``, so readers never see half a file.

    Args:
        profile: the profile to write (e.g. a calibrated host profile).
        path: destination ``.toml`` file; its directory must exist.
        overwrite: replace an existing file; by default refuse.
        header: optional comment put at the top (e.g. how it was measured).

    Returns:
        The path written.

    Raises:
        ProfileError: if the profile breaks the schema, ``path`` exists and
            ``overwrite`` is False, or the file cannot be written.
    """
    path = Path(path)
    # Round-trip through the validator so every written file loads again.
    profile_from_dict(profile.to_dict(), origin=f"to be written to {path}")
    if path.exists() and not overwrite:
        raise ProfileError(
            f"device profile file {str(path)!r} already exists; refusing to overwrite it. "
            "Fix: pass overwrite=True (CLI: --overwrite), or choose another path."
        )
    text = profile_to_toml(profile, header)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ProfileError(
            f"cannot write device profile to {str(path)!r}: {err}. "
            "Fix: create the directory or choose a writable path."
        ) from err
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        mask = os.umask(0o022)  # mkstemp makes 0600; give the mode open() would (0666 & ~umask)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except OSError as err:
        raise ProfileError(
            f"cannot write device profile to {str(path)!r}: {err}. Fix: choose a writable path."
        ) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("wrote device profile %r to %s", profile.name, path)
    return path
