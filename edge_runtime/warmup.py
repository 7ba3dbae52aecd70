"""Cold start: compile and cache every numba kernel a model needs, once, at install or deploy time.

numba compiles a kernel on its first call (about a second each; 5-13 s per model with an empty
cache on a fast x86 host, several times that on a Pi) and caches it on disk (stamped with the
kernel sources, kernels/cache.py). :func:`warmup` builds a session and runs it on a synthetic
input with the default ``sparsity="auto"`` (density checks, plan-time weight layouts), with the
dense kernels only (``"off"``) and with every sparse kernel that applies (``"force"``), so the first real image of a production line pays neither. Run it as
``edge-runtime warmup BUNDLE`` (:func:`add_parser`) or from Python::

    >>> import edge_runtime
    >>> times = edge_runtime.warmup("out/bundle")  # doctest: +SKIP
    >>> times["modes"]["off"]["first_run_s"]  # doctest: +SKIP
    0.004

Where onnxruntime runs the dense layers, it also compiles the Gemm islands' kernels ahead of time
for this CPU (:func:`compile_kernels`, :mod:`edge_runtime.engine.aot`; needs a C compiler), so later
sessions of a model whose islands are all Gemms never load numba.

The cache is per machine (numba keys it by CPU), so warm up on the device itself.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from edge_runtime.errors import InvalidArgumentError

if TYPE_CHECKING:  # numpy loads on use: edge_runtime/__init__.py imports this module eagerly
    import numpy as np

log = logging.getLogger(__name__)

#: the sparsity modes run: production's default (its density checks and plan-time weight layouts),
#: the dense kernels alone, then every sparse kernel that applies
MODES = ("auto", "off", "force")


def _model_path(model_path_or_bundle_dir: str | Path, trust: Any = None
                ) -> tuple[Path, Callable[[], Any], list[dict[str, np.ndarray]] | None]:
    """``model.onnx`` of a bundle directory (authenticated under ``trust`` and checksums verified, as
    ``run`` does), what a session loads it from (a bundle's model: its checked bytes, read once per
    session) and the bundle's warm-up feeds; or the given model file, its path and None."""
    path = Path(model_path_or_bundle_dir).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file():
        from edge_runtime.bundle import load_bundle

        bundle = load_bundle(path, trust=trust)
        model = bundle.require_onnx()
        return model, lambda: bundle.read_model(model), bundle.warmup_feeds()
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise InvalidArgumentError(f"warmup: {str(model_path_or_bundle_dir)!r} is neither an .onnx file nor a "
                                   f"bundle directory with model.onnx; pass the bundle directory or the model file.")
    return path, lambda: str(path), None


def _dtype(arg: Any) -> np.dtype:
    """A NodeArg's numpy dtype (its onnxruntime type string, e.g. ``tensor(float)``)."""
    import numpy as np

    from edge_runtime.onnx_io import SUPPORTED_DTYPES, ort_type_string

    if hasattr(arg, "dtype"):
        return np.dtype(arg.dtype)
    by_name = {ort_type_string(np.dtype(t)): np.dtype(t) for t in SUPPORTED_DTYPES}
    if arg.type not in by_name:
        raise InvalidArgumentError(f"warmup: input '{arg.name}' has type {arg.type}; pass feed= with a value for it.")
    return by_name[arg.type]


def synthetic_feed(inputs: list[Any], batch: int = 1) -> dict[str, np.ndarray]:
    """A random input per graph input (free dimensions = ``batch`` for the first, else 1).

    Floats are standard normal (so ReLU outputs are about half zeros and the sparse kernels see
    realistic lists); integers are zeros; bools False.

    Raises:
        InvalidArgumentError: an input of unknown rank (no synthetic value can be made).
    """
    import numpy as np

    from edge_runtime.feeds import standard_normal

    feed = {}
    for arg in inputs:
        if arg.shape is None:
            raise InvalidArgumentError(f"warmup: input '{arg.name}' has no declared shape; pass feed= with a "
                                       f"value for it.")
        shape = tuple(d if isinstance(d, int) and d > 0 else (batch if i == 0 else 1) for i, d in enumerate(arg.shape))
        dtype = _dtype(arg)
        if dtype.kind == "f":
            feed[arg.name] = standard_normal(shape, len(feed)).astype(dtype)
        else:
            feed[arg.name] = np.zeros(shape, dtype)
    return feed


def warmup(model_path_or_bundle_dir: str | Path, *, threads: int | None = None, profile: Any = None,
           feed: Mapping[str, np.ndarray] | None = None, trust: Any = None) -> dict[str, Any]:
    """Compile and cache every kernel a model needs, and the engine's decision; return the times it took.

    Args:
        model_path_or_bundle_dir: an .onnx file or a bundle directory (its checksums are verified).
        threads: intra-op threads (default: as a session would choose); parallel kernel variants
            compile only where the session would use them, so warm up with production's setting.
        profile: a device profile name or TOML path, as ``InferenceSession(profile=...)``.
        feed: inputs to run with (default: :func:`synthetic_feed`).
        trust: a bundle's :class:`~edge_runtime.trust.TrustPolicy` (default: the environment's and the
            config folder's pinned keys).

    Returns:
        ``{"model": path, "cache_stamp": str, "compiled_kernels": {...} (:func:`compile_kernels`),
        "modes": {mode: {"session_s", "first_run_s", "second_run_s"}}, "total_s": float}``;
        ``first_run_s - second_run_s`` is roughly the
        compile (or cache load) time of that mode's kernels. A mode whose engine decision had a
        small measured gain also has ``"line_check_runs"``: the runs (golden inputs, else ``feed``)
        that checked it against the whole model (:meth:`InferenceSession.finish_line_check`).

    Raises:
        InvalidArgumentError: not a model or bundle, or an input without a shape.
        BundleError: a bundle that fails its signature or file checks (docs/trust.md).
        EdgeRuntimeError: the model cannot be loaded or run (as ``InferenceSession``).
    """
    from edge_runtime.kernels import CACHE_STAMP
    from edge_runtime.options import SessionOptions
    from edge_runtime.session import InferenceSession

    path, source, golden = _model_path(model_path_or_bundle_dir, trust)
    options = SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    start = time.perf_counter()
    compiled = compile_kernels()  # before the sessions: their engine decision is made with them
    modes: dict[str, dict[str, float]] = {}
    for mode in MODES:
        t0 = time.perf_counter()
        # the bundle's golden inputs, as `run` passes them: the engine's measured decision is cached for the line
        sess = InferenceSession(source(), options, profile=profile, sparsity=mode, warmup_feed=golden)
        t1 = time.perf_counter()
        data = dict(feed) if feed is not None else synthetic_feed(sess.get_inputs())
        sess.run(None, data)
        t2 = time.perf_counter()
        sess.run(None, data)
        t3 = time.perf_counter()
        # a small measured gain is checked on the first images run: settle it now, on the golden inputs
        checked = sess.finish_line_check(golden or [data])
        modes[mode] = {"session_s": t1 - t0, "first_run_s": t2 - t1, "second_run_s": t3 - t2}
        if checked:
            modes[mode]["line_check_runs"] = checked
        log.info("warmup %s sparsity=%s: session %.3f s, first run %.3f s, second %.4f s", path, mode,
                 t1 - t0, t2 - t1, t3 - t2)
    return {"model": str(path), "cache_stamp": CACHE_STAMP[:12], "compiled_kernels": compiled, "modes": modes,
            "total_s": time.perf_counter() - start}


def compile_kernels() -> dict[str, Any]:
    """The Gemm islands' kernels compiled ahead of time for this CPU (:mod:`edge_runtime.engine.aot`),
    once per code version, where onnxruntime runs the dense layers (the numba engine loads numba anyway).

    Returns:
        ``{"path", "seconds", "fresh"}``, or ``{"unavailable": why}`` (no onnxruntime, engine cache
        off, no C compiler: the JIT kernels run, as before).
    """
    from edge_runtime.engine import aot, ort

    if not ort.available():
        return {"unavailable": "onnxruntime is not installed: the numba engine runs every layer"}
    try:
        built = aot.build()
    except aot.AotUnavailable as exc:
        log.warning("%s", exc)
        return {"unavailable": str(exc)}
    removed = aot.remove_stale()
    if removed:
        log.info("removed %d compiled kernel modules of earlier versions", removed)
    return {"path": str(built.path), "seconds": built.seconds, "fresh": built.fresh}


def add_parser(subparsers: Any) -> None:
    """Add ``warmup BUNDLE`` to an argparse subparsers object (sets ``func(args) -> int``)."""
    p = subparsers.add_parser(
        "warmup", help="compile and cache every kernel a bundle needs (run once at deploy)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  edge-runtime warmup bundle/ --threads 4   # on the device, once after copying the bundle")
    p.add_argument("bundle", help="bundle directory or .onnx file")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads, as in production (default: all CPUs)")
    p.add_argument("--device", help="device profile name or TOML (threads, dense/sparse crossovers)")
    p.add_argument("--json", type=Path, help="also write the times to this .json file (checked before any work)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    from edge_runtime.trust import add_trust_flags

    add_trust_flags(p)
    p.set_defaults(func=cmd_warmup)


def cmd_warmup(args: argparse.Namespace) -> int:
    """Warm the kernel cache for ``args.bundle``; print one line per mode; 0 on success."""
    from edge_runtime.outputs import check_output, write_atomic

    if args.json is not None:
        check_output(args.json, flag="--json", suffixes=(".json",), overwrite=args.overwrite)
    from edge_runtime.engine import aot, ort

    target = aot.module_path()
    if ort.available() and target is not None and not target.exists():
        print("compiling the sparse kernels ahead of time for this CPU (once per version, 10-60 s)...", flush=True)
    from edge_runtime.trust import policy_from_args

    result = warmup(args.bundle, threads=args.threads, profile=args.device, trust=policy_from_args(args))
    for mode, t in result["modes"].items():
        print(f"sparsity={mode}: session {t['session_s']:.2f} s, first run {t['first_run_s']:.2f} s, "
              f"next run {t['second_run_s'] * 1e3:.1f} ms"
              + (f", engine decision checked on {t['line_check_runs']} runs" if "line_check_runs" in t else ""))
    compiled = result["compiled_kernels"]
    print(f"kernels compiled ahead of time: {compiled['path']}" + (f" (built in {compiled['seconds']:.1f} s)"
                                                                     if compiled["fresh"] else "")
          if "path" in compiled else f"kernels not compiled ahead of time: {compiled['unavailable']}")
    print(f"kernels cached for {result['model']} (cache stamp {result['cache_stamp']}) in {result['total_s']:.1f} s")
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2), overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0
