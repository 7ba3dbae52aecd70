"""The engine's measured decision, kept on disk so the next session of the model skips measuring.

Deciding which layers become sparse islands costs a density probe (one extra onnxruntime
session and run) and timing each island and the cut (more sessions, kernels compiled): a
ResNet-18 took ~0.5 s against onnxruntime's 0.1 s session. The outcome depends only on the
model, the warm-up input, the session's settings and this machine, so it is kept, like
onnxruntime's ``optimized_model_filepath`` or TensorRT's timing cache, and the next session
with the same key builds the chosen plan directly. ``edge-runtime warmup`` fills it at deploy
time.

Where: ``$EDGE_RUNTIME_ENGINE_CACHE`` (a directory; ``off`` disables the cache), else
``$XDG_CACHE_HOME/edge-runtime/engine`` (``~/.cache/edge-runtime/engine``). One small JSON file
per key, written atomically; an unreadable, corrupt or foreign entry is ignored and measured
again (the decision only chooses between paths that compute the same outputs, so a bad entry
can cost speed, never correctness). Delete the folder to re-measure everything.
"""
from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edge_runtime.stamps import digest, file_digests, write_private_json

log = logging.getLogger(__name__)

#: Bumped when the stored decision's layout changes.
VERSION = 1
ENV = "EDGE_RUNTIME_ENGINE_CACHE"
#: Entries kept: the oldest are removed beyond this (each is a few KB).
MAX_ENTRIES = 256


def directory() -> Path | None:
    """The cache folder, or None when ``$EDGE_RUNTIME_ENGINE_CACHE`` is ``off`` / ``0``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-runtime" / "engine"


def key(model_bytes: bytes, feeds: Sequence[Mapping[str, np.ndarray]], settings: Iterable[Any],
        path: str | os.PathLike | None = None) -> str:
    """A digest (:func:`edge_runtime.stamps.digest`) of the model, the warm-up inputs (in order), the
    settings, this CPU and the deciding code.

    ``path``: the file ``model_bytes`` were read from; its digest is then remembered by the file's
    signature (:func:`edge_runtime.stamps.file_digests`), so a warm session does not hash the model
    again (8 MB: 10 ms)."""
    h = digest(f"v{VERSION}\0".encode())
    for part in (*settings, _machine(), _code_stamp()):
        h.update(repr(part).encode() + b"\0")
    content = file_digests([path], directory(), [model_bytes or None])[0] if path is not None \
        else digest(model_bytes).hexdigest()  # the same key for the file and its bytes
    h.update(content.encode())
    for i, feed in enumerate(feeds):
        h.update(f"feed {i}\0".encode())
        for name in sorted(feed):
            x = np.ascontiguousarray(feed[name])
            h.update(f"{name}\0{x.dtype.str}\0{x.shape}\0".encode())
            h.update(digest(x.view(np.uint8).reshape(-1)).digest())
    return h.hexdigest()


def load(k: str) -> dict[str, Any] | None:
    """The stored decision for key ``k``, or None (no cache, no entry, or an unusable one)."""
    folder = directory()
    if folder is None:
        return None
    path = folder / f"{k}.json"
    try:
        if path.stat().st_size > 1 << 20:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or doc.get("key") != k:
        return None
    return doc


def store(k: str, doc: Mapping[str, Any]) -> None:
    """Keep ``doc`` under key ``k`` (atomically; failures are logged and ignored)."""
    folder = directory()
    if folder is None:
        return
    try:
        write_private_json(folder / f"{k}.json", {**doc, "version": VERSION, "key": k})
        _trim(folder)
    except OSError as exc:
        log.debug("engine decision not cached in %s: %s", folder, exc)


def _trim(folder: Path) -> None:
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in entries[:-MAX_ENTRIES]:
        old.unlink(missing_ok=True)


_CPU: list[tuple[str, str]] = []


def cpu_info() -> tuple[str, str]:
    """This CPU's model name (or ARM part / hardware) and feature flags from /proc/cpuinfo ("" where absent);
    read once per process (both the engine cache's key and the compiled module's need it)."""
    if not _CPU:
        _CPU.append(_read_cpu_info())
    return _CPU[0]


def _read_cpu_info() -> tuple[str, str]:
    model = flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                low = line.lower()
                if not model and low.startswith(("model name", "cpu part", "hardware")):
                    model = line.split(":", 1)[-1].strip()
                elif not flags and low.startswith(("flags", "features")):
                    flags = line.split(":", 1)[-1].strip()
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def _machine() -> tuple[str, ...]:
    """This CPU as the decision depends on it: model name, architecture, and the code path numba targets."""
    model = cpu_info()[0]
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "-"
    return (platform.machine(), model, str(os.cpu_count()), os.environ.get("NUMBA_CPU_NAME", ""), ort_version)


_STAMP: list[str] = []


def _code_stamp() -> str:
    """A digest of the engine's, the prepared layers' and the kernels' sources: a changed rule or
    kernel re-measures."""
    if not _STAMP:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

        def sources(folder: str) -> list[str]:  # strings and listdir: pathlib's glob took 0.5 ms of a session
            return [os.path.join(root, folder, n) for n in sorted(os.listdir(os.path.join(root, folder)))
                    if n.endswith(".py")]
        files = [os.path.join(root, "dispatch.py"), os.path.join(root, "prepared.py"),
                 os.path.join(root, "ops", "conv_layer.py"), os.path.join(root, "ops", "matmul_layer.py"),
                 *sources("engine"), *sources("kernels")]
        h = digest()
        for f, content in zip(files, file_digests(files, directory())):
            h.update(os.path.basename(f).encode() + b"\0" + content.encode() + b"\0")
        _STAMP.append(h.hexdigest())
    return _STAMP[0]
