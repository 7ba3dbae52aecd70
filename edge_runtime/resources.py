"""Memory limits: what this process may still allocate, and the tensor sizes a model declares
(and :func:`aligned_empty`, the allocation the kernels' weight layouts use; numba-free).

A Raspberry Pi has 1-8 GB; a model that asks for a 5 GB ConstantOfShape or a 1e12-element
Expand must be refused with a clear error naming the node *before* numpy tries, since the
kernel's OOM killer ends the process without a message.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from edge_runtime.errors import InvalidModelError

#: Constant folding keeps a node instead of folding it when its result would exceed this
#: (onnxruntime stops at ~1 GB; a device has less). EDGE_RUNTIME_FOLD_LIMIT_MB overrides it.
DEFAULT_FOLD_LIMIT_BYTES = 64 << 20
FOLD_LIMIT_ENV = "EDGE_RUNTIME_FOLD_LIMIT_MB"


def fold_limit_bytes() -> int:
    """The constant-folding size limit: ``$EDGE_RUNTIME_FOLD_LIMIT_MB`` MiB or 64 MiB."""
    value = os.environ.get(FOLD_LIMIT_ENV)
    try:
        return int(float(value) * (1 << 20)) if value else DEFAULT_FOLD_LIMIT_BYTES
    except ValueError:
        return DEFAULT_FOLD_LIMIT_BYTES


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _address_space_left() -> int | None:
    """RLIMIT_AS minus the current virtual size, when a limit is set (ulimit -v, setrlimit)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm", "rb") as handle:
            used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        return max(soft - used, 0)
    except (ImportError, OSError, ValueError, IndexError):
        return None


def available_memory() -> int:
    """Bytes this process can still allocate: MemAvailable, capped by RLIMIT_AS (2**62 if unknown)."""
    known = [v for v in (_meminfo_available(), _address_space_left()) if v is not None]
    return min(known) if known else 1 << 62


def check_allocation(nbytes: int, what: str, fix: str) -> None:
    """Raise InvalidModelError when ``nbytes`` exceeds :func:`available_memory`.

    Args:
        nbytes: the size about to be allocated.
        what: the subject of the message (a node or file, named).
        fix: how to fix it.
    """
    free = available_memory()
    if nbytes > free:
        raise InvalidModelError(f"{what} needs {nbytes / 2**20:,.0f} MiB, more than the "
                                f"{free / 2**20:,.0f} MiB this process can allocate; {fix}")


def _ints(value: Any) -> list[int] | None:
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        return None
    return [int(v) for v in arr.ravel()]


def _broadcast(a: list[int], b: list[int]) -> list[int]:
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    return [max(x, y) for x, y in zip(a, b)]


def declared_bytes(op_type: str, args: list[Any], attrs: Mapping[str, Any]) -> int | None:
    """The output size that ConstantOfShape/Expand/Tile/Range declare from their inputs.

    Args:
        op_type: the node's op.
        args: its input values (numpy arrays or None), all known.
        attrs: its attributes.

    Returns:
        The output's size in bytes, or None for other ops or unreadable inputs.
    """
    if op_type == "ConstantOfShape" and args:
        shape = _ints(args[0])
        value = attrs.get("value")
        itemsize = np.asarray(value).dtype.itemsize if value is not None else 4
        return None if shape is None else math.prod(max(d, 0) for d in shape) * itemsize
    if op_type in ("Expand", "Tile") and len(args) >= 2 and args[0] is not None:
        data, other = np.asarray(args[0]), _ints(args[1])
        if other is None:
            return None
        if op_type == "Expand":
            shape = _broadcast(list(data.shape), other)
        else:
            shape = [d * max(r, 0) for d, r in zip(data.shape, other)]
        return math.prod(shape) * data.dtype.itemsize
    if op_type == "Range" and len(args) == 3 and all(a is not None for a in args):
        start, limit, delta = (float(np.asarray(a).reshape(-1)[0]) for a in args)
        if delta == 0 or not all(math.isfinite(v) for v in (start, limit, delta)):
            return None
        return max(math.ceil((limit - start) / delta), 0) * np.asarray(args[0]).dtype.itemsize
    return None


def aligned_empty(shape: tuple[int, ...] | int, dtype: Any = np.float32) -> np.ndarray:
    """A C-contiguous uninitialised array whose data starts on a 64-byte boundary.

    numpy aligns large arrays to 16 bytes only; 64-byte vector loads of weight rows that
    straddle two cache lines made the sparse kernels 10-20% slower.
    """
    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    buf = np.empty(nbytes + 64, dtype=np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + nbytes].view(dt).reshape(shape)


_TRIM: list[Any] = []


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim(0)``, ~1 ms); False
    where the C library has none (musl, macOS, Windows).

    Building a session frees large temporaries (a model's bytes and proto, decoded weights before
    their kernel layout) that glibc keeps: once a freed block above its mmap threshold was
    returned, it raises that threshold, so the next multi-MB buffers come from the heap and stay
    resident after they are freed. Called before a plan's onnxruntime sessions are created and after
    the session is built, so they are not counted twice: a 64-128-256 CNN's warm session held
    101 MB, 93 MB after the trim.
    """
    if not _TRIM:
        try:
            import ctypes

            _TRIM.append(ctypes.CDLL(None).malloc_trim)
        except (OSError, AttributeError, ImportError):
            _TRIM.append(None)
    trim = _TRIM[0]
    if trim is None:
        return False
    trim(0)
    return True
