"""Recurrent operators: LSTM, GRU and RNN (forward, reverse, bidirectional; layout 0 and 1).

Each direction runs as one loop over time steps with the whole batch in numpy matmuls: the
input projection of every step is one ``(T*B, I) @ (I, G)`` GEMM up front, then each step adds
``H_{t-1} @ R^T`` and applies the gates. ``sequence_lens`` masks finished sequences (their
state is held and their Y rows are 0, as in onnxruntime); the reverse direction walks each
sequence from its own last valid step. Gate order and equations are the ONNX spec's:
LSTM ``i, o, f, c`` (with optional peepholes ``P`` and ``input_forget``), GRU ``z, r, h`` (with
``linear_before_reset``), RNN one gate. ``clip`` bounds every gate's pre-activation.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.ops.elementwise import FLOAT, check_dtype
from edge_runtime.ops.registry import register

Array = NDArray[Any]
Act = Callable[[Array], Array]
_f = np.float32


def _sigmoid(x: Array) -> Array:
    with np.errstate(over="ignore"):
        return (_f(1) / (_f(1) + np.exp(-x))).astype(np.float32, copy=False)


#: activation name -> (fn(x, alpha, beta), default alpha, default beta); alpha/beta None = unused
_ACTS: dict[str, tuple[Callable[[Array, float, float], Array], float | None, float | None]] = {
    "sigmoid": (lambda x, a, b: _sigmoid(x), None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "relu": (lambda x, a, b: np.maximum(x, _f(0)), None, None),
    "affine": (lambda x, a, b: _f(a) * x + _f(b), 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, _f(a) * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > _f(a), x, _f(0)), 1.0, None),
    "scaledtanh": (lambda x, a, b: _f(a) * np.tanh(_f(b) * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(_f(a) * x + _f(b), _f(0), _f(1)), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x > 0, x, _f(a) * np.expm1(np.minimum(x, 0))), 1.0, None),
    "softsign": (lambda x, a, b: x / (_f(1) + np.abs(x)), None, None),
    "softplus": (lambda x, a, b: np.logaddexp(_f(0), x).astype(np.float32), None, None),
}


def _activations(op: str, names: Sequence[str] | None, defaults: tuple[str, ...], dirs: int,
                 alphas: Sequence[float] | None, betas: Sequence[float] | None) -> list[list[Act]]:
    """Per direction, the gate activations; alphas/betas are consumed in order by the ones that take them."""
    names = list(names) if names else list(defaults) * dirs
    if len(names) == len(defaults) and dirs == 2:
        names = names * 2
    if len(names) != len(defaults) * dirs:
        raise InvalidModelError(f"{op}: activations={names} has {len(names)} entries; expected "
                                f"{len(defaults) * dirs} ({len(defaults)} per direction). Re-export the model.")
    alphas, betas = list(alphas or []), list(betas or [])
    fns: list[Act] = []
    for name in names:
        entry = _ACTS.get(str(name).lower())
        if entry is None:
            raise InvalidModelError(f"{op}: activation '{name}' is not an ONNX RNN activation; expected one "
                                    f"of {sorted(_ACTS)}. Re-export the model.")
        fn, da, db = entry
        a = (alphas.pop(0) if alphas else da) if da is not None else 0.0
        b = (betas.pop(0) if betas else db) if db is not None else 0.0
        fns.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    k = len(defaults)
    return [fns[d * k:(d + 1) * k] for d in range(dirs)]


def _dirs(op: str, direction: str) -> int:
    if direction not in ("forward", "reverse", "bidirectional"):
        raise InvalidModelError(f"{op}: direction='{direction}' is invalid; expected 'forward', 'reverse' or "
                                f"'bidirectional'. Re-export the model.")
    return 2 if direction == "bidirectional" else 1


def _step_order(lens: Array, t_max: int, reverse: bool) -> Array:
    """(T, B) time index each step reads/writes: t, or len_b - 1 - t for the reverse direction."""
    t = np.arange(t_max)[:, None]
    if not reverse:
        return np.broadcast_to(t, (t_max, lens.size))
    return np.where(t < lens[None, :], lens[None, :] - 1 - t, t)


class _Inputs:
    """The op inputs in layout 0 (time-major), checked, plus the per-batch lengths."""

    def __init__(self, op: str, X: Array, W: Array, R: Array, hidden: int, gates: int, dirs: int,
                 layout: int, sequence_lens: Array | None) -> None:
        check_dtype(op, X, FLOAT)
        if layout not in (0, 1):
            raise InvalidModelError(f"{op}: layout={layout} is invalid; expected 0 or 1. Re-export the model.")
        self.x = X.transpose(1, 0, 2) if layout == 1 else X   # (T, B, I)
        t_max, batch, width = self.x.shape
        self.hidden = hidden or R.shape[-1]
        want_w = (dirs, gates * self.hidden, width)
        if W.shape != want_w or R.shape != (dirs, gates * self.hidden, self.hidden):
            raise InvalidInputError(f"{op}: W {W.shape} / R {R.shape} do not match input width {width}, "
                                    f"hidden_size {self.hidden} and {dirs} direction(s); expected W {want_w} and R "
                                    f"{(dirs, gates * self.hidden, self.hidden)}. Check the model.")
        lens = np.full(batch, t_max, np.int64) if sequence_lens is None else np.asarray(sequence_lens, np.int64)
        if lens.shape != (batch,) or (lens < 0).any() or (lens > t_max).any():
            raise InvalidInputError(f"{op}: sequence_lens {lens.tolist()} must hold {batch} values in [0, {t_max}]. "
                                    f"Fix the input.")
        self.lens, self.layout, self.dirs = lens, layout, dirs

    def state(self, value: Array | None) -> Array:
        """An initial state in layout 0, (dirs, B, H); zeros when absent."""
        if value is None:
            return np.zeros((self.dirs, self.x.shape[1], self.hidden), np.float32)
        return np.ascontiguousarray(value.transpose(1, 0, 2) if self.layout == 1 else value, dtype=np.float32)

    def outputs(self, y: Array, finals: Sequence[Array]) -> tuple[Array, ...]:
        """Y (T, D, B, H) and the final states (D, B, H) in the op's layout."""
        if self.layout == 1:
            return (y.transpose(2, 0, 1, 3),) + tuple(s.transpose(1, 0, 2) for s in finals)
        return (y,) + tuple(finals)


def _run(inp: _Inputs, W: Array, B: Array | None, gates: int, cell: Callable[..., tuple[Array, ...]],
         states: list[Array], direction: str) -> tuple[Array, list[Array]]:
    """Run every direction: ``cell(d, xw_t, states_d) -> new states_d`` (first = H) per time step."""
    t_max, batch, _ = inp.x.shape
    g = gates * inp.hidden
    y = np.zeros((t_max, inp.dirs, batch, inp.hidden), np.float32)
    finals: list[list[Array]] = [[] for _ in states]
    for d in range(inp.dirs):
        reverse = direction == "reverse" or d == 1
        xw = inp.x.reshape(-1, inp.x.shape[2]) @ W[d].T                      # (T*B, G): every step's input GEMM
        if B is not None:
            xw += B[d, :g]
        xw = xw.reshape(t_max, batch, g)
        order = _step_order(inp.lens, t_max, reverse)
        cols = np.arange(batch)
        cur = [s[d] for s in states]
        for t in range(t_max):
            live = (t < inp.lens)[:, None]                                   # (B, 1)
            new = cell(d, xw[order[t], cols], cur)
            cur = [np.where(live, n, c) for n, c in zip(new, cur)]
            y[order[t], d, cols] = np.where(live, cur[0], _f(0))
        for i, c in enumerate(cur):
            finals[i].append(c)
    return y, [np.stack(f) for f in finals]


def _clip(x: Array, clip: float | None) -> Array:
    return x if clip is None else np.clip(x, _f(-clip), _f(clip))


@register("LSTM", since_version=7)
def LSTM(X: Array, W: Array, R: Array, B: Array | None = None, sequence_lens: Array | None = None,
         initial_h: Array | None = None, initial_c: Array | None = None, P: Array | None = None, *,
         activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
         activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
         hidden_size: int = 0, input_forget: int = 0, layout: int = 0) -> tuple[Array, Array, Array]:
    """LSTM (opset 7+; ``layout`` from 14): returns (Y, Y_h, Y_c).

    Raises:
        InvalidModelError: a bad direction, layout or activation. InvalidInputError: shapes disagree.
    """
    dirs = _dirs("LSTM", direction)
    inp = _Inputs("LSTM", X, W, R, hidden_size, 4, dirs, layout, sequence_lens)
    acts = _activations("LSTM", activations, ("Sigmoid", "Tanh", "Tanh"), dirs, activation_alpha, activation_beta)
    h = inp.hidden
    rb = None if B is None else B[:, 4 * h:]
    peep = None if P is None else P.reshape(dirs, 3, 1, h)

    def cell(d: int, xw: Array, cur: list[Array]) -> tuple[Array, Array]:
        f, g, hh = acts[d]
        hp, cp = cur
        z = xw + hp @ R[d].T                                                  # (B, 4H): i, o, f, c
        if rb is not None:
            z = z + rb[d]
        zi, zo, zf, zc = z[:, :h], z[:, h:2 * h], z[:, 2 * h:3 * h], z[:, 3 * h:]
        if peep is not None:
            zi, zf = zi + peep[d, 0] * cp, zf + peep[d, 2] * cp
        i = f(_clip(zi, clip))
        ft = _f(1) - i if input_forget else f(_clip(zf, clip))
        c = ft * cp + i * g(_clip(zc, clip))
        if peep is not None:
            zo = zo + peep[d, 1] * c
        return f(_clip(zo, clip)) * hh(c), c

    y, (yh, yc) = _run(inp, W, B, 4, cell, [inp.state(initial_h), inp.state(initial_c)], direction)
    return inp.outputs(y, [yh, yc])  # type: ignore[return-value]


@register("GRU", since_version=7)
def GRU(X: Array, W: Array, R: Array, B: Array | None = None, sequence_lens: Array | None = None,
        initial_h: Array | None = None, *, activation_alpha: Sequence[float] | None = None,
        activation_beta: Sequence[float] | None = None, activations: Sequence[str] | None = None,
        clip: float | None = None, direction: str = "forward", hidden_size: int = 0,
        linear_before_reset: int = 0, layout: int = 0) -> tuple[Array, Array]:
    """GRU (opset 7+; ``layout`` from 14): returns (Y, Y_h).

    Raises:
        InvalidModelError: a bad direction, layout or activation. InvalidInputError: shapes disagree.
    """
    dirs = _dirs("GRU", direction)
    inp = _Inputs("GRU", X, W, R, hidden_size, 3, dirs, layout, sequence_lens)
    acts = _activations("GRU", activations, ("Sigmoid", "Tanh"), dirs, activation_alpha, activation_beta)
    h = inp.hidden
    rb = np.zeros((dirs, 3 * h), np.float32) if B is None else B[:, 3 * h:]

    def cell(d: int, xw: Array, cur: list[Array]) -> tuple[Array]:
        f, g = acts[d]
        (hp,) = cur
        rz = hp @ R[d, :2 * h].T + rb[d, :2 * h]                              # (B, 2H): z, r
        z = f(_clip(xw[:, :h] + rz[:, :h], clip))
        r = f(_clip(xw[:, h:2 * h] + rz[:, h:], clip))
        if linear_before_reset:
            hh = xw[:, 2 * h:] + r * (hp @ R[d, 2 * h:].T + rb[d, 2 * h:])
        else:
            hh = xw[:, 2 * h:] + (r * hp) @ R[d, 2 * h:].T + rb[d, 2 * h:]
        ht = g(_clip(hh, clip))
        return ((_f(1) - z) * ht + z * hp,)

    y, (yh,) = _run(inp, W, B, 3, cell, [inp.state(initial_h)], direction)
    return inp.outputs(y, [yh])  # type: ignore[return-value]


@register("RNN", since_version=7)
def RNN(X: Array, W: Array, R: Array, B: Array | None = None, sequence_lens: Array | None = None,
        initial_h: Array | None = None, *, activation_alpha: Sequence[float] | None = None,
        activation_beta: Sequence[float] | None = None, activations: Sequence[str] | None = None,
        clip: float | None = None, direction: str = "forward", hidden_size: int = 0,
        layout: int = 0) -> tuple[Array, Array]:
    """Simple RNN (opset 7+; ``layout`` from 14): H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb); returns (Y, Y_h).

    Raises:
        InvalidModelError: a bad direction, layout or activation. InvalidInputError: shapes disagree.
    """
    dirs = _dirs("RNN", direction)
    inp = _Inputs("RNN", X, W, R, hidden_size, 1, dirs, layout, sequence_lens)
    acts = _activations("RNN", activations, ("Tanh",), dirs, activation_alpha, activation_beta)
    rb = None if B is None else B[:, inp.hidden:]

    def cell(d: int, xw: Array, cur: list[Array]) -> tuple[Array]:
        z = xw + cur[0] @ R[d].T
        return (acts[d][0](_clip(z if rb is None else z + rb[d], clip)),)

    y, (yh,) = _run(inp, W, B, 1, cell, [inp.state(initial_h)], direction)
    return inp.outputs(y, [yh])  # type: ignore[return-value]
