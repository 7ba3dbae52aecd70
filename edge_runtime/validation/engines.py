"""Open the backends a validation compares and run them on whole datasets in batches.

The runtimes themselves come from :mod:`edge_runtime.profiling.backends` (edge, edge-dense,
onnxruntime, litert); this module adds the optional PyTorch reference (``torch``, only when
a model is given) and batching that respects a fixed batch size (TFLite keeps the export's).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.bundle import LoadedBundle
from edge_runtime.errors import InvalidArgumentError
from edge_runtime.options import available_cpus
from edge_runtime.profiling.inputs import bundle_files
from edge_runtime.profiling.backends import (BACKENDS, BackendUnavailableError, ModelFiles, check_backends,
                                            open_backend)

log = logging.getLogger(__name__)

ALL_BACKENDS = (*BACKENDS, "torch")
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class Engine:
    """A ready backend: ``infer(x)`` runs a batch (fixed_batch rows when set) and returns all outputs.

    Example:
        >>> eng = Engine("id", lambda x: [x], None)
        >>> run_batched(eng, np.ones((3, 2), np.float32))[0].shape
        (3, 2)
    """

    name: str
    infer: Callable[[NDArray[np.float32]], Sequence[NDArray[Any]]]
    fixed_batch: int | None  # None: any batch size


@dataclass(frozen=True)
class Skipped:
    """A backend that was not run, with the reason (missing package or file)."""

    name: str
    reason: str


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate backend names (``torch`` included), keeping order and dropping repeats.

    Raises:
        InvalidArgumentError: an unknown name.
    """
    return check_backends(names, ALL_BACKENDS)


def open_engines(bundle: LoadedBundle, names: Sequence[str], *, explicit: bool, threads: int | None,
                 torch_model: Any = None) -> tuple[list[Engine], list[Skipped]]:
    """Open every named backend on the bundle.

    Args:
        bundle: the verified bundle.
        names: backend names (see :data:`ALL_BACKENDS`).
        explicit: the user named the backends: a missing package is then an error, not a skip.
        threads: intra-op threads (None: the backend's default).
        torch_model: an ``nn.Module`` or a ``.pt2``/TorchScript path for the ``torch`` backend.

    Returns:
        (opened engines in order, skipped backends with reasons).

    Raises:
        BackendUnavailableError: an explicitly named backend cannot run here.
    """
    files = bundle_files(bundle)
    engines, skipped = [], []
    for name in check_names(names):
        try:
            engines.append(_torch_engine(torch_model) if name == "torch" else _engine(name, files, threads))
        except BackendUnavailableError as exc:
            if explicit:
                raise
            log.info("skipping backend %s: %s", name, exc)
            skipped.append(Skipped(name, str(exc)))
    return engines, skipped


def _engine(name: str, files: ModelFiles, threads: int | None) -> Engine:
    runner = open_backend(name, files, threads or available_cpus())
    input_name = _input_name(runner)
    fixed = None
    if name.startswith("litert"):  # litert, litert-int8: the export's fixed batch
        shape = runner.session.get_input_details()[0]["shape"]
        fixed = int(shape[0]) if len(shape) else None
    return Engine(name, lambda x: list(runner.run({input_name: x})), fixed)


def _input_name(runner: Any) -> str:
    session = runner.session
    if hasattr(session, "get_inputs"):
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise InvalidArgumentError(f"validation feeds one input tensor; the model has "
                                       f"{[i.name for i in inputs]}.")
        return inputs[0].name
    return "x"  # LiteRT matches inputs by position


def _torch_engine(model: Any) -> Engine:
    if model is None:
        raise BackendUnavailableError(
            "backend 'torch' needs the PyTorch model (validate_bundle(torch_model=...) or --torch-model "
            "FILE.pt2/.pt); a bundle holds no PyTorch weights. Without it golden.npz is PyTorch's "
            "reference.")
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(f"backend 'torch' needs PyTorch, which is not importable ({exc}); "
                                      f"install torch or drop 'torch' from the backends.") from exc
    if not isinstance(model, torch.nn.Module):
        model = _load_torch(str(model), torch)

    def infer(x: NDArray[np.float32]) -> list[NDArray[Any]]:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(x)))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().cpu().numpy() for o in out]

    return Engine("torch", infer, None)


def _load_torch(path: str, torch: Any) -> Any:
    try:
        if path.endswith(".pt2"):
            return torch.export.load(path).module()
        return torch.jit.load(path, map_location="cpu").eval()
    except Exception as exc:  # torch raises many types for bad files
        raise InvalidArgumentError(f"cannot load the PyTorch model {path!r} ({type(exc).__name__}: {exc}); "
                                   f"expected a torch.export.save (.pt2) or torch.jit.save file.") from exc


def run_batched(engine: Engine, x: NDArray[np.float32], *, batch: int = DEFAULT_BATCH,
                progress: Callable[[int], None] | None = None) -> list[NDArray[Any]]:
    """Run ``engine`` over all rows of ``x`` and concatenate each output along axis 0.

    A fixed-batch engine gets exactly ``fixed_batch`` rows per call (the last call padded
    with zeros, whose rows are dropped).
    """
    size = engine.fixed_batch or batch
    chunks: list[list[NDArray[Any]]] = []
    for start in range(0, x.shape[0], size):
        part = x[start:start + size]
        rows = part.shape[0]
        if engine.fixed_batch and rows < size:
            part = np.concatenate([part, np.zeros((size - rows, *part.shape[1:]), part.dtype)])
        outs = engine.infer(np.ascontiguousarray(part, dtype=np.float32))
        chunks.append([np.asarray(o)[:rows] for o in outs])
        if progress is not None:
            progress(rows)
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
