"""Find, read and list device profiles (shipped, user, and the generated host one)."""
from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path
from typing import Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on devices
    import tomli as tomllib

from device_profiles.errors import ProfileError
from device_profiles.schema import DeviceProfile, profile_from_dict

logger = logging.getLogger(__name__)

#: Environment variable naming a directory of user ``*.toml`` profiles.
PROFILES_ENV = "EDGE_RUNTIME_PROFILES"
#: Directory of the profiles shipped with the package.
SHIPPED_DIR = Path(__file__).resolve().parent / "profiles"
#: Name of the profile generated for the current machine.
HOST_NAME = "host"
#: Names an unknown-name error lists before "... N more".
MAX_LISTED = 20

ProfileLike = Union[str, "os.PathLike[str]", DeviceProfile]


def user_profiles_dir() -> Path | None:
    """Return the directory named by ``EDGE_RUNTIME_PROFILES``, or None if unset.

    Returns:
        The directory, or None when the variable is unset or empty.

    Raises:
        ProfileError: if the variable is set but does not name a directory.
    """
    value = os.environ.get(PROFILES_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ProfileError(
            f"{PROFILES_ENV}={value!r} is not a directory. Expected a directory of "
            f"<name>.toml device profiles. Fix: create it, or unset {PROFILES_ENV}."
        )
    return path


def _profile_files() -> dict[str, Path]:
    """Map profile name -> file; user files shadow shipped ones of the same name."""
    found = {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.toml"))}
    user_dir = user_profiles_dir()
    if user_dir is not None:
        for path in sorted(user_dir.glob("*.toml")):
            if path.stem in found:
                logger.debug("user profile %s shadows %s", path, found[path.stem])
            found[path.stem] = path
    return found


def profile_files() -> dict[str, Path]:
    """Map each file-backed profile name to its ``.toml`` (user files shadow shipped ones).

    Read the folder once and pass names through this map when loading many profiles
    (``devices list``): :func:`load_profile` scans the folders on every call.

    Raises:
        ProfileError: if ``EDGE_RUNTIME_PROFILES`` is set but is not a directory.
    """
    return _profile_files()


def list_profiles() -> list[str]:
    """Return the sorted names of every loadable profile: shipped, user, and ``host``.

    Returns:
        Sorted profile names (file stems), e.g. ``["host", "jetson-nano", ...]``.

    Raises:
        ProfileError: if ``EDGE_RUNTIME_PROFILES`` is set but is not a directory.
    """
    return sorted(set(_profile_files()) | {HOST_NAME})


def read_profile_file(path: str | os.PathLike[str]) -> DeviceProfile:
    """Parse and validate one TOML profile file.

    Args:
        path: the ``.toml`` file.

    Returns:
        The validated profile, with ``source`` set to the path.

    Raises:
        ProfileError: if the file is missing, unreadable, not valid TOML, or
            breaks the schema.
    """
    path = Path(path).expanduser()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ProfileError(
            f"device profile file {str(path)!r} does not exist. Expected a path to a "
            f"<name>.toml profile or a profile name ({', '.join(list_profiles())}). "
            "Fix: check the path."
        ) from None
    except OSError as err:
        raise ProfileError(
            f"device profile file {str(path)!r} cannot be read: {err}. "
            "Fix: check that it is a readable file."
        ) from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ProfileError(
            f"device profile {path} is not valid TOML: {err}. "
            "Fix: correct the syntax there (see docs/device_profiles.md for an example)."
        ) from err
    profile = profile_from_dict(data, origin=str(path), source=str(path))
    if profile.name != path.stem:
        logger.warning(
            "device profile %s declares name %r but is looked up as %r (its file name)",
            path, profile.name, path.stem,
        )
    return profile


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or os.sep in text


def load_profile(name_or_path: ProfileLike) -> DeviceProfile:
    """Return the device profile for a name, a ``.toml`` path, or a profile object.

    Lookup order for a name: a ``<name>.toml`` in ``EDGE_RUNTIME_PROFILES``
    (user files shadow shipped ones), then the shipped profiles; ``"host"``
    without such a file is generated for this machine by
    :func:`device_profiles.host_profile`.

    Args:
        name_or_path: a profile name (see :func:`list_profiles`), a path to a
            ``.toml`` file, or a :class:`DeviceProfile` (returned unchanged).

    Returns:
        The validated, frozen profile.

    Raises:
        ProfileError: unknown name, missing/unreadable/invalid file, or a
            schema violation; the message says which and how to fix it.

    Example:
        >>> load_profile("jetson-orin-nano").cpu.cores
        6
    """
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    if isinstance(name_or_path, os.PathLike):
        return read_profile_file(name_or_path)
    if not isinstance(name_or_path, str):
        raise ProfileError(
            f"load_profile expects a profile name, a .toml path or a DeviceProfile, "
            f"got {name_or_path!r} ({type(name_or_path).__name__}). "
            f"Fix: pass one of {', '.join(list_profiles())} or a path."
        )
    if _looks_like_path(name_or_path):
        return read_profile_file(name_or_path)
    files = _profile_files()
    if name_or_path in files:
        return read_profile_file(files[name_or_path])
    if name_or_path == HOST_NAME:
        from device_profiles.host import host_profile

        return host_profile()
    raise _unknown_name(name_or_path)


def _unknown_name(name: str) -> ProfileError:
    names = list_profiles()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    user_dir = os.environ.get(PROFILES_ENV) or "unset"
    shown = ", ".join(names[:MAX_LISTED]) + (f", ... ({len(names) - MAX_LISTED} more: run `edge-runtime devices "
                                              f"list`)" if len(names) > MAX_LISTED else "")
    return ProfileError(
        f"unknown device profile {name!r}.{hint} Available: {shown}. "
        f"Fix: pass one of these names, a path to a .toml file, or add {name}.toml "
        f"to the directory named by {PROFILES_ENV} (now: {user_dir})."
    )
