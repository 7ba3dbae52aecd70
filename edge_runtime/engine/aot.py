"""Sparse kernels compiled ahead of time: islands that run numba's machine code without loading numba.

A session that keeps a numba island imports numba and loads its cached kernels: on the sparse MLP
that is 55-130 MB of the process and 0.3-0.6 s of its creation (docs/benchmarks.md, "Kernels
compiled ahead of time"), more than onnxruntime's whole session. :func:`build` compiles the Gemm /
MatMul islands' zero-skipping kernels (``sparse_matmul._gemv_kernel`` for one row,
``sparse_matmul._gemm_kernel`` for several) and the Conv islands' (``sparse_conv._conv_kernel``),
all single-threaded, with ``numba.pycc`` for this CPU
into a plain Python extension module in the engine cache; :func:`load` imports it in a later
process without numba. ``edge-runtime warmup`` builds it; the islands of
:mod:`edge_runtime.engine.gather` and :mod:`edge_runtime.engine.compiled_conv` then call it.

What the build needs beyond the device install: C and C++ compilers, Python's headers and (on
Python 3.12+) setuptools (``numba.pycc`` compiles a small C wrapper and checks that C++ compiles
too); :func:`missing_build_tools` names what is absent. Without them
:func:`build` raises :class:`AotUnavailable` with the fix, and the JIT kernels run as before.
``numba.pycc`` is deprecated by numba; when a numba drops it, the same error says so.

The module is keyed like numba's cache (:func:`edge_runtime.stamps.package_stamp`: every kernel
and op source and numba's version) and also by this CPU and Python, in its file name: a stale one
is never loaded, a new one is built next to it. Like numba's cache, it is machine code loaded from
the user's cache directory: :func:`load` refuses a file or folder that another user owns or can
write (``chmod go-w`` it), or that fails to import, and logs why.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

from edge_runtime.engine import plancache
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.stamps import digest, package_stamp, private_file

log = logging.getLogger(__name__)

#: The exported kernels and their signatures: x, W (ntiles, K, T), bias (N,) or empty, act code,
#: p0, p1, out. C-contiguous arrays only: with ``f4[:, :]`` (any layout) the loop was not
#: vectorised and ran 4-5x slower (benchmarks/bench_aot.py).
SIGNATURES = {
    "gemv": "void(f4[::1], f4[:, :, ::1], f4[::1], i8, f8, f8, f4[::1])",
    "gemm": "void(f4[:, ::1], f4[:, :, ::1], f4[::1], i8, f8, f8, f4[:, ::1])",
    # x (N, C, H, W), W (ntiles, KH*KW*Cin, T), bias, geometry, act, p0, p1, out, then the scratch
    "conv": "void(f4[:, :, :, ::1], f4[:, :, ::1], f4[::1], i8[::1], i8, f8, f8, f4[:, :, :, ::1], "
            "f4[::1], i4[::1], i8[::1], f4[:, :, ::1])",
    # the dispatcher's density checks (kernels/density.py): nonzeros of x; of x up to the chunk
    # where they pass ``stop`` (how far it read goes to seen[0])
    "count": "i8(f4[::1])",
    "count_upto": "i8(f4[::1], i8, i8[::1])",
}
#: The column count the kernels' vector loops step by: a weight's N must be a multiple of it
#: (the JIT's layout pads to it, :func:`edge_runtime.kernels.sparse_matmul.prepare_matmul_weights`).
N_MULTIPLE = 16
PREFIX = "edge_runtime_aot_"
#: The file name ending of this interpreter's extension modules (what numba.pycc writes).
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or importlib.machinery.EXTENSION_SUFFIXES[0]


class AotUnavailable(EdgeRuntimeError):
    """The kernels cannot be compiled ahead of time here (no compiler, no ``numba.pycc``, no cache)."""


@dataclass(frozen=True)
class Built:
    """What :func:`build` did: the module's path and the seconds it took (0 when it was there)."""

    path: Path
    seconds: float
    fresh: bool


def _cpu() -> str:
    """This CPU as the machine code depends on it: architecture, model and feature flags."""
    model, flags = plancache.cpu_info()
    return f"{platform.machine()}|{model}|{flags}|{os.environ.get('NUMBA_CPU_NAME', '')}"


_STAMP: list[str] = []


def stamp() -> str:
    """The key of the module this code, numba, Python and CPU would build (first 20 hex digits)."""
    if not _STAMP:
        h = digest(package_stamp(memo=plancache.directory()).encode())
        h.update(f"{sys.implementation.cache_tag}|{_cpu()}|{tuple(SIGNATURES.items())}".encode())
        _STAMP.append(h.hexdigest()[:20])
    return _STAMP[0]


def directory() -> Path | None:
    """Where the modules live: ``aot/`` in the engine cache (:func:`plancache.directory`); None when it is off."""
    folder = plancache.directory()
    return None if folder is None else folder / "aot"


def module_name() -> str:
    return PREFIX + stamp()


def module_path(folder: Path | None = None) -> Path | None:
    """The current module's file in ``folder`` (default: :func:`directory`); None when the cache is off."""
    folder = folder if folder is not None else directory()
    return None if folder is None else Path(folder) / f"{module_name()}{EXT_SUFFIX}"


_LOADED: dict[str, ModuleType | None] = {}


def load() -> ModuleType | None:
    """The current module (exports :data:`SIGNATURES`' kernels), or None when none was
    built for this code and CPU or it cannot be trusted or imported (logged); numba is not imported."""
    path = module_path()
    if path is None:
        return None
    key = str(path)
    if key not in _LOADED:
        _LOADED[key] = _import(path)
    return _LOADED[key]


def _private(path: Path) -> bool:
    """:func:`edge_runtime.stamps.private_file`, with the warning when it is not."""
    ok = private_file(path)
    if not ok:
        log.warning("kernels compiled ahead of time at %s not loaded: the file or its folder is not this "
                    "user's alone (chmod go-w it, or delete it and run edge-runtime warmup again)", path)
    return ok


def _import(path: Path) -> ModuleType | None:
    if not path.exists() or not _private(path):
        return None
    try:
        spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not all(callable(getattr(module, name, None)) for name in SIGNATURES):
            raise ImportError(f"it lacks one of {sorted(SIGNATURES)}")
    except (ImportError, OSError) as exc:
        log.warning("kernels compiled ahead of time at %s not loaded (%s); the numba kernels run instead", path, exc)
        return None
    log.debug("kernels compiled ahead of time loaded from %s", path)
    return module


#: How to install what :func:`build` needs on Debian / Raspberry Pi OS / JetPack (Ubuntu).
INSTALL_HINT = "apt install gcc g++ python3-dev; pip install setuptools"


def missing_build_tools() -> list[str]:
    """What ``numba.pycc`` needs and this machine lacks, named for the user: the C compiler Python was
    built with (or ``$CC``), a C++ compiler (pycc checks that C++ compiles too: without g++ it fails with
    "Attempted to compile AOT function without the compiler used by numpy.distutils present", found on
    the arm64 Debian root) and Python's headers. Empty when all are there (the build may still fail), and
    off POSIX, where distutils finds MSVC its own way."""
    if os.name != "posix":
        return []
    missing = []
    for var, default, what in (("CC", "cc", "a C compiler"), ("CXX", "c++", "a C++ compiler")):
        words = (os.environ.get(var) or sysconfig.get_config_var(var) or default).split()
        program = words[0] if words else default
        if shutil.which(program) is None:
            missing.append(f"{what} ({program})")
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        missing.append(f"Python's headers ({os.path.join(include, 'Python.h')})")
    return missing


def build(force: bool = False, folder: Path | None = None) -> Built:
    """Compile the kernels for this CPU into :func:`module_path` (atomically), unless a current one is there.

    ``folder``: build there instead of the engine cache (benchmarks/bench_aot.py).

    Raises:
        AotUnavailable: no engine cache (``EDGE_RUNTIME_ENGINE_CACHE=off``), no ``numba.pycc``, or
            no C / C++ compiler, Python headers or setuptools: the message says which and how to fix it.
    """
    path = module_path(folder)
    if path is None:
        raise AotUnavailable(f"kernels are not compiled ahead of time: the engine cache is off "
                             f"({plancache.ENV}={os.environ.get(plancache.ENV)!r}); set it to a folder")
    if path.exists() and not force:
        return Built(path, 0.0, False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycc's pending-deprecation warning: the module docstring says it
            from numba.pycc import CC
    except ImportError as exc:
        raise AotUnavailable(f"kernels are not compiled ahead of time: this numba has no numba.pycc ({exc}); "
                             "the JIT kernels run instead") from None
    missing = missing_build_tools()
    if missing:
        raise AotUnavailable(f"kernels are not compiled ahead of time: numba.pycc needs {' and '.join(missing)}, "
                             f"not found on this machine; install them ({INSTALL_HINT}) and run edge-runtime "
                             "warmup again; the JIT kernels run meanwhile")
    from edge_runtime.kernels import density, sparse_conv, sparse_matmul

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        try:
            _compile(CC, (sparse_matmul, sparse_conv, density), tmp)
        except Exception as exc:  # pycc and setuptools raise their own types for a missing compiler
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[0].split(". ")[0][:160] if lines else type(exc).__name__
            raise AotUnavailable(f"kernels are not compiled ahead of time: numba.pycc failed ({reason}); install C "
                                 f"and C++ compilers, Python's headers and setuptools ({INSTALL_HINT}) and run "
                                 "edge-runtime warmup again; the JIT kernels run meanwhile") from None
        built = [p for p in Path(tmp).iterdir() if p.name.startswith(module_name())]
        if len(built) != 1:
            raise AotUnavailable(f"kernels are not compiled ahead of time: numba.pycc wrote {[p.name for p in built]}")
        os.chmod(built[0], 0o755)
        os.replace(built[0], path)
    _LOADED.pop(str(path), None)
    seconds = time.perf_counter() - t0
    log.info("kernels compiled ahead of time in %.1f s: %s", seconds, path)
    return Built(path, seconds, True)


def _compile(cc_class: type, kernels: tuple[ModuleType, ModuleType, ModuleType], folder: str) -> None:
    """numba.pycc: the exported entry points call the JIT kernels, which it compiles in (their own
    fastmath flags kept), for the host CPU as the JIT does."""
    sparse_matmul, sparse_conv, density = kernels
    cc = cc_class(module_name())
    cc.output_dir = folder
    cc.target_cpu = "host"
    cc.verbose = False
    gemv_kernel, gemm_kernel = sparse_matmul._gemv_kernel, sparse_matmul._gemm_kernel
    conv_kernel = sparse_conv._conv_kernel
    count_kernel, upto_kernel = density._count_nonzero_f32, density._count_nonzero_upto_f32

    def count(x):  # pragma: no cover - compiled
        return count_kernel(x)

    def count_upto(x, stop, seen):  # pragma: no cover - compiled
        c, s = upto_kernel(x, stop)
        seen[0] = s
        return c

    def conv(x, wt, bias, geom, act, p0, p1, out, vals, idx, ptr, scratch):  # pragma: no cover - compiled
        conv_kernel(x, wt, bias, geom, act, p0, p1, out, vals, idx, ptr, scratch)

    def gemv(x, wt, bias, act, p0, p1, out):  # pragma: no cover - compiled
        gemv_kernel(x, wt, bias, act, p0, p1, out)

    def gemm(x, wt, bias, act, p0, p1, out):  # pragma: no cover - compiled
        gemm_kernel(x, wt, bias, act, p0, p1, out)

    cc.export("gemv", SIGNATURES["gemv"])(gemv)
    cc.export("gemm", SIGNATURES["gemm"])(gemm)
    cc.export("conv", SIGNATURES["conv"])(conv)
    cc.export("count", SIGNATURES["count"])(count)
    cc.export("count_upto", SIGNATURES["count_upto"])(count_upto)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cc.compile()


def counters(module: ModuleType) -> tuple[Callable[[np.ndarray], float], Callable[[np.ndarray, float], tuple[bool, float]]]:
    """The dispatcher's ``density(x)`` and ``density_at_most(x, limit)`` on the compiled counts, as
    :mod:`edge_runtime.kernels.density` defines them (NaN counts as nonzero; an empty input is dense;
    ``density_at_most`` stops counting once the answer is "above"). numpy's ``count_nonzero`` on
    float32 took 67 us on a 100K-value conv input, the compiled count a tenth of that."""
    def density(x: np.ndarray) -> float:
        if x.size == 0:
            return 1.0
        if x.dtype == np.float32 and x.flags.c_contiguous:
            return module.count(x.reshape(-1)) / x.size
        return float(np.count_nonzero(x) / x.size)

    def density_at_most(x: np.ndarray, limit: float) -> tuple[bool, float]:
        n = x.size
        if n and x.dtype == np.float32 and x.flags.c_contiguous:
            seen = np.empty(1, np.int64)
            count = module.count_upto(x.reshape(-1), int(limit * n), seen)
            d = count / int(seen[0])
            return int(seen[0]) == n and d <= limit, d
        d = density(x)
        return d <= limit, d

    return density, density_at_most


def remove_stale() -> int:
    """Delete modules built for other code, numba, Python or CPU; returns how many."""
    folder, name = directory(), module_name()
    if folder is None or not folder.is_dir():
        return 0
    stale = [p for p in folder.glob(PREFIX + "*") if not p.name.startswith(name)]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)
