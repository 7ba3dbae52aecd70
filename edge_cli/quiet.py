"""Keep third-party chatter off the console (CLI only; the libraries never filter warnings globally).

torch.onnx, torchvision, torchao and absl print deprecation notes and optional-extension load
failures that look like errors to a user but change nothing in the result. ``-v`` shows them.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings
from types import ModuleType
from typing import Any, Sequence

#: Modules whose warnings and log records below ERROR are hidden unless ``-v`` is given.
NOISY_MODULES = ("torch", "torchvision", "torchao", "onnxscript", "absl", "tensorflow", "litert_torch",
                 "ai_edge_litert", "ai_edge_torch", "jax", "numba", "matplotlib", "onnx_ir", "tqdm")

#: Loggers that torch._logging configures itself at import (so a parent's level is reset):
#: set on the children that print, e.g. "torchvision is not installed. Skipping torchvision::nms".
QUIET_LOGGERS = ("torch.onnx", "torch.onnx._internal.exporter._registration", "torch.onnx._internal.exporter",
                 "torch._dynamo", "torch._export", "torch.export", "torch.fx.experimental.symbolic_shapes",
                 "torch.utils._pytree")


def quiet_third_party(verbose: int) -> None:
    """Filter third-party warnings and INFO/WARNING log records; nothing is filtered when ``verbose``.

    Args:
        verbose: the count of ``-v`` flags.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow/LiteRT C++ INFO and WARNING lines
    os.environ.setdefault("GLOG_minloglevel", "2")
    pattern = "|".join(NOISY_MODULES)
    warnings.filterwarnings("ignore", module=rf"({pattern})(\..*)?$")
    # deprecation notices address the authors of the calling code, not the person running a command;
    # many are attributed to the stdlib (copyreg) by their stacklevel, so filter them by category
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in NOISY_MODULES + QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not any(isinstance(f, _QuietRichConsole) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietRichConsole())


class _QuietRichConsole(importlib.abc.MetaPathFinder):
    """Silence litert-torch's nested "[START] ... [ DONE]" progress (a rich Console) once it is imported.

    litert-torch is imported lazily (only when a .tflite is exported), so the console is
    switched to quiet right after its module runs, through this import hook.
    """

    MODULE = "litert_torch.progress"

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        """Find ``litert_torch.progress`` with the other finders and wrap its loader; None otherwise."""
        if fullname != self.MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            console = getattr(module, "console", None)
            if console is not None and hasattr(console, "quiet"):
                console.quiet = True

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
