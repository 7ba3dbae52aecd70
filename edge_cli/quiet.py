"""Keep third-party chatter off the console (CLI only; the libraries never filter warnings globally).

torch.onnx, torchvision, torchao and absl print deprecation notes and optional-extension load
failures that look like errors to a user but change nothing in the result. ``-v`` shows them.
"""
from __future__ import annotations

import logging
import os
import warnings

#: Modules whose warnings and log records below ERROR are hidden unless ``-v`` is given.
NOISY_MODULES = ("torch", "torchvision", "torchao", "onnxscript", "absl", "tensorflow", "litert_torch",
                 "ai_edge_litert", "ai_edge_torch", "jax", "numba", "matplotlib", "onnx_ir", "tqdm")


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
    for name in NOISY_MODULES:
        logging.getLogger(name).setLevel(logging.ERROR)
