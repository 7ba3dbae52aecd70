"""The LLVM fast-math flags every numba kernel compiles with.

``fastmath=FAST`` in numba means all of LLVM's fast-math flags, including ``nnan`` and
``ninf``: LLVM may then assume no value is NaN or infinite, and it folds compares,
``max(x, 0)`` and pool maxima so that a NaN input silently turns into a finite output
(one NaN pixel gave finite logits where onnxruntime and PyTorch give NaN). ``FAST``
keeps the flags the kernels need for speed and drops those two:

- ``reassoc``: reorder float sums (vectorised reductions, accumulator blocking);
- ``contract``: fuse a multiply and an add into one FMA;
- ``arcp``, ``afn``: reciprocal and approximate-function rewrites (``x / n`` as
  ``x * (1 / n)``);
- ``nsz``: ignore the sign of zero (``max(x, 0)`` may return -0.0 for -0.0).

With these, NaN and Inf propagate as IEEE arithmetic says (numba docs, "Performance
tips: fastmath"; LLVM LangRef, "Fast-Math Flags").
"""
from __future__ import annotations

__all__ = ["FAST"]

#: numba ``fastmath=`` value: every fast-math flag except ``nnan`` and ``ninf``.
FAST = {"reassoc", "contract", "arcp", "afn", "nsz"}
