"""The one exception type of :mod:`device_profiles`.

``device_profiles`` imports nothing of ours, so it cannot derive from
``edge_runtime.errors.EdgeRuntimeError``; the runtime wraps or re-raises it.
"""
from __future__ import annotations


class ProfileError(ValueError):
    """A device profile is missing, unreadable, or breaks the schema.

    Every message names the file (or profile name), the dotted key, the
    offending value, what was expected or allowed, and how to fix it.

    Example:
        >>> from device_profiles import ProfileError, load_profile
        >>> try:
        ...     load_profile("no-such-board")
        ... except ProfileError as err:
        ...     "Available" in str(err)
        True
    """
