"""Measure how sparse the inputs of a model's Linear/Conv2d layers are on calibration data.

The statistics drive the runtime's choice between dense and sparse kernels (see
docs/annotations.md). Inputs of layers fed by a ReLU-family activation also get
pre-activation quantiles, from which a threshold (FATReLU/TEAL style, references.md §1)
can be chosen.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn
from torch.overrides import TorchFunctionMode

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.preprocessing import IMAGE_SUFFIXES, Preprocessing, list_images, load_image

logger = logging.getLogger(__name__)

HOT_THRESHOLD = 0.5  # a neuron is "hot" if nonzero in >= 50% of observations
COLD_THRESHOLD = 0.05  # "cold" if nonzero in < 5% (PowerInfer-style split, references §1)
PREACT_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5)
_RESERVOIR = 100_000  # pre-activation values kept per layer
_TRACKED = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class LayerStats:
    """Input-density statistics of one nn.Linear / nn.Conv2d.

    ``firing`` holds, per input neuron (channel for Conv2d, last-axis feature for Linear),
    the fraction of observations in which it was nonzero. ``preact_quantiles`` maps
    quantile q to the q-quantile of the *positive* pre-activation values (only for
    ``relu_fed`` layers): a threshold there zeroes about q of the surviving activations.
    """

    module: str
    kind: str
    weight_shape: tuple[int, ...]
    density: float
    density_p10: float
    density_p50: float
    density_p90: float
    hot_fraction: float
    cold_fraction: float
    firing: tuple[float, ...]
    observations: int
    relu_fed: bool
    preact_quantiles: dict[str, float] | None = None
    preact_histogram: dict[str, list[float]] | None = None


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer input density measured by :func:`calibrate`.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> report = calibrate(net, torch.randn(16, 4))
        >>> report.layer("2").relu_fed
        True
    """

    layers: tuple[LayerStats, ...]
    samples: int
    hot_threshold: float = HOT_THRESHOLD
    cold_threshold: float = COLD_THRESHOLD
    inputs: NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    @property
    def mean_density(self) -> float:
        """Unweighted mean of the layers' densities (1.0 when no layer was observed)."""
        return float(np.mean([s.density for s in self.layers])) if self.layers else 1.0

    def layer(self, module: str) -> LayerStats:
        """Return the stats of the module with this qualified name.

        Raises:
            KeyError: no such layer was observed; the message lists the observed ones.
        """
        for stats in self.layers:
            if stats.module == module:
                return stats
        raise KeyError(f"No calibrated layer named {module!r}; observed: "
                       f"{[s.module for s in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (without the kept calibration inputs)."""
        return {"samples": self.samples, "hot_threshold": self.hot_threshold,
                "cold_threshold": self.cold_threshold, "mean_density": self.mean_density,
                "layers": [asdict(s) for s in self.layers]}


class _Accumulator:
    """Running sums for one layer."""

    def __init__(self, module: str, layer: nn.Module) -> None:
        self.module, self.layer = module, layer
        self.nonzero = 0
        self.total = 0
        self.per_sample: list[NDArray[np.float64]] = []
        self.channel_counts: NDArray[np.int64] | None = None
        self.observations = 0
        self.relu_fed_calls = 0
        self.calls = 0
        self.preact: list[NDArray[np.float32]] = []
        self.rng = np.random.default_rng(0)

    def add(self, x: torch.Tensor, pre: torch.Tensor | None) -> None:
        nz = (x.detach() != 0)
        self.calls += 1
        self.nonzero += int(nz.sum())
        self.total += nz.numel()
        self.per_sample.append(nz.reshape(nz.shape[0], -1).double().mean(1).cpu().numpy())
        if isinstance(self.layer, nn.Conv2d):  # (B, C, H, W): channel axis 1
            counts = nz.sum(dim=(0, 2, 3)) if nz.dim() == 4 else nz.sum(dim=(1, 2))
            self.observations += nz.numel() // nz.shape[-3]
        else:  # (..., K): last axis
            counts = nz.reshape(-1, nz.shape[-1]).sum(0)
            self.observations += nz.numel() // nz.shape[-1]
        counts = counts.cpu().numpy().astype(np.int64)
        self.channel_counts = counts if self.channel_counts is None else self.channel_counts + counts
        if pre is not None:
            self.relu_fed_calls += 1
            flat = pre.detach().reshape(-1).float().cpu().numpy()
            if flat.size > _RESERVOIR // 4:
                flat = self.rng.choice(flat, _RESERVOIR // 4, replace=False)
            self.preact.append(flat)

    def finish(self, hot: float, cold: float) -> LayerStats:
        per_sample = np.concatenate(self.per_sample)
        firing = self.channel_counts / max(self.observations, 1)
        relu_fed = self.relu_fed_calls == self.calls
        quantiles, histogram = _preact_summary(self.preact) if relu_fed else (None, None)
        p10, p50, p90 = (float(v) for v in np.percentile(per_sample, [10, 50, 90]))
        return LayerStats(
            module=self.module, kind=type(self.layer).__name__,
            weight_shape=tuple(self.layer.weight.shape),
            density=self.nonzero / max(self.total, 1),
            density_p10=p10, density_p50=p50, density_p90=p90,
            hot_fraction=float(np.mean(firing >= hot)),
            cold_fraction=float(np.mean(firing < cold)),
            firing=tuple(float(f) for f in firing), observations=self.observations,
            relu_fed=relu_fed, preact_quantiles=quantiles, preact_histogram=histogram)


def _preact_summary(chunks: list[NDArray[np.float32]]
                    ) -> tuple[dict[str, float] | None, dict[str, list[float]] | None]:
    values = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if values.size > _RESERVOIR:
        values = np.random.default_rng(1).choice(values, _RESERVOIR, replace=False)
    positive = values[values > 0]
    if positive.size == 0:
        return None, None
    quantiles = {f"q{q:g}": float(np.quantile(positive, q)) for q in PREACT_QUANTILES}
    span = float(np.quantile(np.abs(values), 0.5)) or 1.0
    counts, edges = np.histogram(values, bins=32, range=(-span, span))
    return quantiles, {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}


def _zero_floor(func: Any, args: tuple, kwargs: dict) -> bool:
    """True when ``func(*args, **kwargs)`` is a ReLU-family activation (floor at 0)."""
    if func in (torch.relu, torch.relu_, F.relu, F.relu6, torch.Tensor.relu,
                torch.Tensor.relu_):
        return True
    if func in (F.hardtanh, F.hardtanh_):
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        return low == 0
    if func in _CLAMPS:
        low = args[1] if len(args) > 1 else kwargs.get("min", kwargs.get("min_val"))
        return isinstance(low, (int, float)) and low == 0
    return False


_CLAMPS = (torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clamp_, torch.Tensor.clip,
           torch.clamp_min, torch.Tensor.clamp_min)
_UPPER_CLAMPS = (torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clip,
                 torch.clamp_max, torch.Tensor.clamp_max)
#: ``x >= t`` / ``x > t`` as torch functions (``Tensor.__ge__`` dispatches as ``ge``).
_AT_LEAST = {"ge", "__ge__", "greater_equal", "gt", "__gt__", "greater"}


def _nonnegative(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() > 0 and bool((value >= 0).all())
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _is_zero(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() > 0 and not bool(value.any())
    return isinstance(value, (int, float)) and value == 0


def _key(t: torch.Tensor) -> tuple[int, int]:
    return (t.data_ptr(), t.numel())


class _ActivationTap(TorchFunctionMode):
    """Remembers the input of every ReLU-family call, keyed by its output's storage.

    Besides the calls :func:`_zero_floor` knows, a thresholded ReLU written
    ``torch.where(x >= t, x, 0)`` with ``t >= 0`` (what ``FATReLU`` computes, in any
    model) counts, and so does an upper clamp (``clamp(max=6)``, a capped FATReLU) of
    an output already recognised: both keep the zero floor.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pre: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.masks: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def clear(self) -> None:
        """Forget the tensors of the last forward pass."""
        self.pre.clear()
        self.masks.clear()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        pre = self._floor_input(func, args, kwargs)
        if pre is not None:
            pre = pre.detach().clone()
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            if pre is not None:
                self.pre[_key(out)] = (out, pre)  # keep `out` alive so keys stay unique
            elif (getattr(func, "__name__", "") in _AT_LEAST and len(args) > 1
                  and isinstance(args[0], torch.Tensor) and _nonnegative(args[1])):
                self.masks[_key(out)] = (out, args[0])  # a candidate `x >= t` mask
        return out

    def _floor_input(self, func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The pre-activation when ``func(*args)`` floors its input at 0, else None."""
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        if _zero_floor(func, args, kwargs):
            return args[0]
        if func is torch.where and len(args) == 3 and isinstance(args[1], torch.Tensor):
            mask = self.masks.get(_key(args[0]))
            if mask is not None and mask[1] is args[1] and _is_zero(args[2]):
                return args[1]
            return None
        if func in _UPPER_CLAMPS and _key(args[0]) in self.pre:
            low = args[1] if len(args) > 1 else kwargs.get("min")
            if low is None:
                return self.pre[_key(args[0])][1]
        return None


def calibrate(model: nn.Module, data: Any, *, preprocessing: dict | None = None,
              max_samples: int = 256, batch_size: int = 32,
              keep_inputs: int = 32) -> SparsityReport:
    """Measure the input density of every nn.Linear / nn.Conv2d on calibration data.

    Args:
        model: the PyTorch model. A model in train mode is switched to eval (with a
            warning) for the measurement and switched back afterwards.
        data: a DataLoader / iterable of batches (tensors or (x, y) tuples), a tensor or
            array shaped (N, ...), a ``.npy`` file, or an image directory (ImageFolder
            layout or flat) read with ``preprocessing``.
        preprocessing: how to read images (schema in docs/bundle.md); required for a
            directory.
        max_samples: stop after this many samples.
        batch_size: batch size for tensors, arrays and directories.
        keep_inputs: how many calibration inputs to keep in the report (golden set).

    Returns:
        A :class:`SparsityReport`; layers whose forward was never called (for example
        ``nn.MultiheadAttention.out_proj``) are not in it.

    Raises:
        InvalidArgumentError: bad arguments, no data, or data the model cannot run on.
    """
    if max_samples < 1 or batch_size < 1:
        raise InvalidArgumentError(
            f"max_samples={max_samples} and batch_size={batch_size} must both be >= 1.")
    was_training = model.training
    if was_training:
        warnings.warn("calibrate: the model was in train mode; switching it to eval() for "
                      "calibration (Dropout/BatchNorm would distort the densities).",
                      stacklevel=2)
        model.eval()
    try:
        return _run(model, data, preprocessing, max_samples, batch_size, keep_inputs)
    finally:
        model.train(was_training)


def _run(model: nn.Module, data: Any, preprocessing: dict | None, max_samples: int,
         batch_size: int, keep_inputs: int) -> SparsityReport:
    accs = {name: _Accumulator(name, m) for name, m in model.named_modules()
            if isinstance(m, _TRACKED)}
    tap = _ActivationTap()
    handles = [m.register_forward_pre_hook(_make_hook(accs[name], tap))
               for name, m in model.named_modules() if name in accs]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seen, kept = 0, []
    try:
        with torch.no_grad():
            for batch in iter_batches(data, preprocessing, batch_size):
                batch = batch[: max_samples - seen].to(device)
                with tap:
                    model(batch)
                tap.clear()
                if sum(len(k) for k in kept) < keep_inputs:
                    kept.append(batch.cpu().numpy().astype(np.float32))
                seen += batch.shape[0]
                if seen >= max_samples:
                    break
    finally:
        for handle in handles:
            handle.remove()
    if seen == 0:
        raise InvalidArgumentError(f"calibrate: the data ({type(data).__name__}) yielded "
                                   "no samples; pass at least one input.")
    layers = tuple(acc.finish(HOT_THRESHOLD, COLD_THRESHOLD) for acc in accs.values()
                   if acc.calls)
    skipped = [name for name, acc in accs.items() if not acc.calls]
    if skipped:
        logger.info("calibrate: layers never called directly (not annotated): %s", skipped)
    inputs = np.concatenate(kept)[:keep_inputs] if kept else None
    return SparsityReport(layers=layers, samples=seen, inputs=inputs)


def _make_hook(acc: _Accumulator, tap: _ActivationTap):  # noqa: ANN202
    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        entry = tap.pre.get(_key(x))
        acc.add(x, entry[1].reshape(x.shape) if entry is not None else None)
    return hook


def iter_batches(data: Any, preprocessing: dict | None, batch_size: int
                 ) -> Iterator[torch.Tensor]:
    """Yield float tensors (B, ...) from any supported calibration-data source.

    Raises:
        InvalidArgumentError: unsupported type, a missing path, or a directory without
            ``preprocessing``.
    """
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            yield from (torch.from_numpy(b) for b in
                        iter_image_batches(path, preprocessing, batch_size))
            return
        if path.suffix == ".npy" and path.is_file():
            data = np.load(path)
        else:
            raise InvalidArgumentError(
                f"Calibration data path {str(path)!r} is neither an image directory nor "
                "an existing .npy file; pass a directory, a .npy of shape (N, ...), a "
                "tensor or a DataLoader.")
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size].float()
        return
    if not isinstance(data, Iterable):
        raise InvalidArgumentError(
            f"Unsupported calibration data type {type(data).__name__}; expected a "
            "DataLoader/iterable, tensor, numpy array, .npy path or image directory.")
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield torch.as_tensor(x).float()


# --- Reading images (preprocessing schema: docs/bundle.md) -----------------------------

def validate_preprocessing(pre: dict | None) -> dict[str, Any]:
    """Return ``pre`` checked and with defaults filled in (the schema of docs/bundle.md).

    Raises:
        InvalidArgumentError: a missing ``input_size`` or a field with a bad value.
    """
    return Preprocessing.from_dict(pre).to_dict()


def iter_image_batches(directory: Path, preprocessing: dict | None, batch_size: int
                       ) -> Iterator[NDArray[np.float32]]:
    """Yield (B, ...) float32 batches of the images under ``directory``.

    Raises:
        InvalidArgumentError: no preprocessing, or no image files in the directory.
    """
    pre = Preprocessing.from_dict(preprocessing)
    files = list_images([directory])
    if not files:
        raise InvalidArgumentError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found under {str(directory)!r}; "
            "expected class subfolders of images (ImageFolder layout) or images.")
    for start in range(0, len(files), batch_size):
        yield np.stack([load_image(f, pre) for f in files[start:start + batch_size]])
