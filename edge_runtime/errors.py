"""The runtime's exception hierarchy.

Every message states what failed, the offending value, what was expected or
available, and how to fix it. All classes derive from :class:`EdgeRuntimeError`
so callers can catch one type.
"""
from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Root of every error raised by edge_runtime, exporters and the CLI."""


class InvalidModelError(EdgeRuntimeError, ValueError):
    """The model file or graph is unusable: unreadable, truncated, cyclic, or missing a tensor."""


class UnsupportedOpError(EdgeRuntimeError, NotImplementedError):
    """The graph uses an operator (domain, op_type, opset) that the runtime does not implement."""


class UnsupportedDTypeError(EdgeRuntimeError, TypeError):
    """A tensor has an element type the runtime does not compute in."""


class InvalidInputError(EdgeRuntimeError, ValueError):
    """The input feed of ``run`` is wrong: missing/unexpected names, wrong rank, shape or dtype."""


class InvalidArgumentError(EdgeRuntimeError, ValueError):
    """An API argument (session option, sparsity mode, profile, CLI flag) has an invalid value."""


class BundleError(EdgeRuntimeError):
    """A deployment bundle is missing files, fails its checksums or has a bad manifest."""


class ExecutionError(EdgeRuntimeError, RuntimeError):
    """An operator failed while running; the message names the node, its op and input shapes."""
