"""Hardware targets as data files, and their loader.

One TOML file per target lives in ``device_profiles/profiles/``; users add or
shadow profiles with a directory named by ``EDGE_RUNTIME_PROFILES``; ``"host"``
is generated for the current machine. This package imports nothing of ours
(the runtime imports it), and nothing beyond the standard library.

Example:
    >>> from device_profiles import list_profiles, load_profile
    >>> "raspberry-pi-5" in list_profiles()
    True
    >>> load_profile("raspberry-pi-5").memory.bandwidth_gbps
    4.4
"""
from __future__ import annotations

from device_profiles.errors import ProfileError
from device_profiles.host import DEFAULT_CROSSOVER, host_profile
from device_profiles.loader import (
    PROFILES_ENV, SHIPPED_DIR, list_profiles, load_profile, profile_files, read_profile_file,
    user_profiles_dir,
)
from device_profiles.schema import (
    CPU, GPU, Budget, Cache, Compute, DeviceProfile, Memory, Runtime,
    SparseCrossover, profile_from_dict,
)
from device_profiles.writer import dump_profile, profile_to_toml

__all__ = [
    "CPU", "GPU", "Budget", "Cache", "Compute", "DEFAULT_CROSSOVER", "DeviceProfile",
    "Memory", "PROFILES_ENV", "ProfileError", "Runtime", "SHIPPED_DIR", "SparseCrossover",
    "dump_profile", "host_profile", "list_profiles", "load_profile", "profile_from_dict",
    "profile_files", "profile_to_toml", "read_profile_file", "user_profiles_dir",
]
