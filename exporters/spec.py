"""Load a model from a spec: a ``.pt2`` torch.export file, a TorchScript file, or
``"package.module:factory"`` (a callable returning an nn.Module)."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from edge_runtime.errors import InvalidArgumentError
from exporters.errors import ExportError


def load_model(spec: str) -> nn.Module:
    """Load the model named by ``spec``, in eval mode.

    Args:
        spec: ``path/to/model.pt2`` (torch.export.save), ``path/to/model.pt`` (TorchScript,
            torch.jit.save) or ``package.module:factory``.

    Returns:
        The model, in eval mode.

    Raises:
        InvalidArgumentError: the file does not exist, or the spec has neither form.
        ExportError: importing/calling the factory or loading the file failed.
    """
    path = Path(spec)
    if path.suffix in (".pt2", ".pt", ".pth", ".ts", ".jit") or path.exists():
        if not path.is_file():
            raise InvalidArgumentError(f"Model file {spec!r} does not exist; pass an "
                                       "existing .pt2/.pt file or 'package.module:factory'.")
        return _load_file(path)
    if ":" not in spec:
        raise InvalidArgumentError(
            f"Model spec {spec!r} is neither a file nor 'package.module:factory'.")
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        model = factory() if not isinstance(factory, nn.Module) else factory
    except Exception as exc:
        raise ExportError(f"Cannot build the model from {spec!r}: {type(exc).__name__}: "
                          f"{exc}. Check the module is importable and the factory takes "
                          "no arguments.") from exc
    if not isinstance(model, nn.Module):
        raise ExportError(f"{spec!r} returned {type(model).__name__}, expected an "
                          "nn.Module.")
    return model.eval()


def _load_file(path: Path) -> nn.Module:
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ExportError(f"Cannot load model file {str(path)!r}: {type(exc).__name__}: "
                          f"{exc}. Expected torch.export.save (.pt2) or torch.jit.save "
                          "output.") from exc
