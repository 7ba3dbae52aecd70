"""Accuracy of int8 models quantized by exporters.quantize.quantize_model, against fp32, on labelled data.

Models:
  demo      - the shipped demo CNN (exporters/demo, FATReLU thresholds), demo test split (1000 images),
              calibrated on 256 training images
  fashion   - a small CNN trained here for 2 epochs on Fashion-MNIST (Debian package
              dataset-fashion-mnist, /usr/share/datasets/fashion-mnist), 10000 test images,
              calibrated on 256 training images
Each int8 model runs in onnxruntime (all test images) and in edge_runtime.InferenceSession
(--edge-samples images; the numba-only QDQ path is slow). Writes
benchmarks/results/int8_accuracy.json.

Run (training uses one thread, niced):
    nice -n 10 python3 benchmarks/int8_accuracy.py [--models demo fashion] [--edge-samples 1000]
"""
from __future__ import annotations

import argparse
import gzip
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "int8_accuracy.json"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_model(out: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """Train the Fashion-MNIST CNN; returns (onnx path, calibration x, test x, test y)."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    norm = lambda a: ((a.astype(np.float32) / 255.0 - 0.286) / 0.353)[:, None]  # noqa: E731
    xtr, ytr = norm(_idx(FASHION / "train-images-idx3-ubyte.gz")), _idx(FASHION / "train-labels-idx1-ubyte.gz")
    xte, yte = norm(_idx(FASHION / "t10k-images-idx3-ubyte.gz")), _idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x_t, y_t = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
    for _ in range(2):
        for i in torch.randperm(len(x_t)).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x_t[i]), y_t[i]).backward()
            opt.step()
    net.eval()
    path = out / "fashion.onnx"
    torch.onnx.export(net, torch.from_numpy(xte[:2]), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    return path, xtr[:256], xte, yte.astype(np.int64)


def demo_model(out: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """The shipped demo CNN exported to ONNX; returns (onnx path, calibration x, test x, test y)."""
    import onnx
    import torch

    from exporters.demo import DemoDataConfig, load_pretrained, load_splits, to_tensor
    from exporters.onnx_export import export_onnx

    splits = load_splits(DemoDataConfig())
    xtr = to_tensor(splits["train"][0][:256]).numpy()
    xte, yte = to_tensor(splits["test"][0]).numpy(), splits["test"][1]
    path = out / "demo.onnx"
    onnx.save(export_onnx(load_pretrained("cnn").eval(), torch.from_numpy(xtr[:2]), dynamo=False), str(path))
    return path, xtr, xte, np.asarray(yte, np.int64)


def evaluate(name: str, make, out: Path, edge_samples: int) -> dict:
    from exporters.quantize import accuracy_drop, quantize_model

    t0 = time.time()
    fp32, calib, xte, yte = make(out)
    q = quantize_model(fp32, calib, out / f"{name}.int8.onnx")
    row = {"calibration_samples": q.calibration_samples, "op_counts": dict(q.op_counts),
           "relu_zero_points": sorted({p.zero_point for n, p in q.activations.items() if "Relu" in n or "Where" in n}),
           "onnxruntime": accuracy_drop(fp32, q.path, xte, yte, runner="onnxruntime"),
           "edge_runtime": accuracy_drop(fp32, q.path, xte[:edge_samples], yte[:edge_samples], runner="edge_runtime"),
           "seconds": round(time.time() - t0, 1)}
    print(f"{name}: {row['onnxruntime']} | edge_runtime on {edge_samples}: {row['edge_runtime']}", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=("demo", "fashion"), default=["demo", "fashion"])
    ap.add_argument("--edge-samples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    makers = {"demo": demo_model, "fashion": fashion_model}
    with tempfile.TemporaryDirectory() as tmp:
        results = {m: evaluate(m, makers[m], Path(tmp), args.edge_samples) for m in args.models}
    print(f"wrote {write_json(args.out, results)}")


if __name__ == "__main__":
    main()
