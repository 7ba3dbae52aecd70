"""Export tiny torchvision Faster R-CNN / Mask R-CNN models to ONNX, with reference outputs.

Writes, under tests/edge_runtime/data/ (read by tests/edge_runtime/test_rcnn_export.py, which
needs neither torch nor torchvision):

  rcnn_faster_op17.onnx, rcnn_faster_op11.onnx, rcnn_mask_op17.onnx, rcnn_mask_empty_op17.onnx
  rcnn_<name>.npz: two uint8 images (``pixels``: 96x128, the export size; ``pixels_small``:
  80x112, as the height/width axes are dynamic), and for each the PyTorch outputs
  (``torch_boxes``, ``torch_labels``, ``torch_scores``, ``torch_masks``, with the image's
  suffix) and onnxruntime's (``ort_*``).

Why a venv: PyPI's torchvision 0.28.0 wheel for torch 2.13.0+cpu is a CUDA build whose
``_C.so`` needs libc10_cuda.so, so ``torch.ops.torchvision.*`` are never registered and
``import torchvision`` fails (``_meta_registrations`` registers a fake kernel for
``torchvision::nms``, which does not exist). The wheel must not go into the system Python (the
test environment), so:

  python -m venv --system-site-packages /tmp/tvenv
  /tmp/tvenv/bin/pip install --no-deps \\
      /opt/pypi-more/files/torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl
  PYTHONPATH=. /tmp/tvenv/bin/python scripts/make_rcnn_fixture.py

The shims below define ``torchvision::nms`` and ``torchvision::roi_align`` (and the
``qnms`` schema the import needs) with ``torch.library`` and plain-torch kernels before
torchvision is imported, then tell torchvision its ops exist, so ``roi_align``/``nms`` call
the registered ops instead of torchvision's Python fallback. The TorchScript exporter
(``dynamo=False``) then maps them through torchvision's own symbolics
(torchvision/ops/_register_onnx_ops.py) to ONNX ``RoiAlign`` and ``NonMaxSuppression``: they
are registered by ``import torchvision.ops`` whether or not ``_C.so`` loaded. The RoIAlign shim
follows torchvision's C++ kernel (a sample outside [-1, size] contributes 0), which ONNX RoiAlign
and onnxruntime follow too; torchvision's Python fallback ``_roi_align`` clamps such samples
instead and differs on RoIs that reach past the feature map.

Models have random weights (seeded; no downloads), a two-conv backbone with one feature map,
a 96x128 input and ``box_score_thresh=0.0`` so the outputs are never empty (except in
``mask_empty``, whose threshold 0.99 keeps nothing, on purpose).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "edge_runtime" / "data"
HEIGHT, WIDTH = 96, 128


# ---------------------------------------------------------------- torch.library shims

def _nms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as torchvision's CPU kernel: stable descending sort, suppress IoU > threshold."""
    order = torch.sort(scores, stable=True, descending=True).indices
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def _bilinear_rows(start: float, bin_size: float, bins: int, grid: int, size: int) -> torch.Tensor:
    """(bins, size) weights: row b averages the `grid` bilinear samples of bin b along one axis.

    RoIAlign's bilinear sample is separable (weights and the out-of-range test factor into a
    y part and an x part), so a bin's average is Wy @ feature @ Wx^T; the rules are
    torchvision's CPU kernel (samples below -1 or above `size` are 0, clamp to the last pixel).
    """
    rows = torch.zeros(bins, size, dtype=torch.float64)
    for b in range(bins):
        for s in range(grid):
            p = start + b * bin_size + (s + 0.5) * bin_size / grid
            if p < -1.0 or p > size:
                continue
            p = max(p, 0.0)
            low = int(p)
            if low >= size - 1:
                low = high = size - 1
                p = float(low)
            else:
                high = low + 1
            frac = p - low
            rows[b, low] += (1.0 - frac) / grid
            rows[b, high] += frac / grid
    return rows


def _roi_align_reference(inp: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                         pooled_width: int, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """RoIAlign (avg) as torchvision's CPU kernel, one roi at a time."""
    _, channels, height, width = inp.shape
    out = inp.new_zeros(rois.shape[0], channels, pooled_height, pooled_width)
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1 = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w, roi_h = x2 * spatial_scale - offset - x1, y2 * spatial_scale - offset - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_height)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_width)
        if grid_h == 0 or grid_w == 0:
            continue
        wy = _bilinear_rows(y1, roi_h / pooled_height, pooled_height, grid_h, height)  # (PH, H)
        wx = _bilinear_rows(x1, roi_w / pooled_width, pooled_width, grid_w, width)  # (PW, W)
        feature = inp[int(b)].double()  # (C, H, W)
        out[k] = torch.einsum("ph,chw,qw->cpq", wy, feature, wx).to(inp.dtype)
    return out


def _has_ops() -> bool:
    """Replaces torchvision.extension._has_ops (a def, not a lambda: torch.jit.script compiles it)."""
    return True


def install_torchvision_shims() -> None:
    """Register torchvision's nms/roi_align ops (torchvision's schemas) before torchvision loads."""
    if hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "roi_align"):
        return  # a working _C.so already registered them
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # schema only
    lib.define("roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
               "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor")
    lib.impl("nms", _nms_reference, "CPU")
    lib.impl("roi_align", _roi_align_reference, "CPU")
    install_torchvision_shims.library = lib  # the registrations live as long as the Library

    import importlib

    importlib.import_module("torchvision.extension")._has_ops = _has_ops  # _assert_has_ops reads it
    # else roi_align takes its Python fallback (torchvision.ops.roi_align the attribute is the function)
    importlib.import_module("torchvision.ops.roi_align")._has_ops = _has_ops


# ---------------------------------------------------------------- models

class TwoLevelBackbone(torch.nn.Module):
    """Two feature maps (strides 4 and 8), like a two-level FPN: MultiScaleRoIAlign then maps each
    RoI to a level and merges the per-level RoiAligns (Log, Floor, ScatterElements in the export)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        nn = torch.nn
        self.stride4 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(8, channels, 3, stride=2, padding=1), nn.ReLU())
        self.stride8 = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fine = self.stride4(x)  # (N, C, H/4, W/4)
        return {"0": fine, "1": self.stride8(fine)}  # (N, C, H/8, W/8) second


def build_model(kind: str) -> torch.nn.Module:
    """A tiny Faster R-CNN ("faster": one feature map) or Mask R-CNN ("mask": two, see
    TwoLevelBackbone) with seeded random weights."""
    from torch import nn
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    channels, classes = 16, 4
    if kind == "faster":
        backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, channels, 3, stride=2, padding=1), nn.ReLU())
        backbone.out_channels = channels
        levels, anchor_sizes = ["0"], ((16, 32),)
    else:
        backbone = TwoLevelBackbone(channels)
        levels, anchor_sizes = ["0", "1"], ((16, 24), (32, 48))
    # canonical_scale 20 / level 3 (not 224 / 4, sized for 800 px images): RoIs of ~14-28 px
    # land on both levels instead of all on the finest
    pool = dict(featmap_names=levels, sampling_ratio=2, canonical_scale=20, canonical_level=3)
    options = dict(
        min_size=HEIGHT, max_size=WIDTH,
        rpn_anchor_generator=AnchorGenerator(anchor_sizes, aspect_ratios=((0.5, 1.0, 2.0),) * len(levels)),
        box_roi_pool=MultiScaleRoIAlign(output_size=7, **pool),
        box_head=TwoMLPHead(channels * 7 * 7, 32),
        box_predictor=FastRCNNPredictor(32, classes),
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=50,
        # 30 boxes reach past the top class's best into labels 1 and 3; masks (96x128 floats
        # each) keep the Mask R-CNN fixture to 10
        box_detections_per_img=30 if kind == "faster" else 10, box_score_thresh=0.0,
    )
    if kind == "faster":
        model = FasterRCNN(backbone, **options)
    else:
        model = MaskRCNN(backbone, **options, mask_roi_pool=MultiScaleRoIAlign(output_size=14, **pool),
                         mask_head=MaskRCNNHeads(channels, (8, 8), 1),
                         mask_predictor=MaskRCNNPredictor(8, 8, classes))
    _spread_heads(model)
    return model.eval()


def _spread_heads(model: torch.nn.Module) -> None:
    """Re-initialise the RPN and RoI heads so random weights give well-separated scores.

    torchvision initialises the RPN head with std 0.01, so every objectness logit is ~0 and
    which 50 proposals TopK keeps would hinge on float rounding; the same goes for class
    scores that all sit near 1/classes. Kaiming-normal weights, wider and centred class logits
    and small box deltas give distinct scores (and mixed labels) that a correct runtime
    reproduces.
    """
    for module in [*model.rpn.modules(), *model.roi_heads.modules()]:
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight)
            torch.nn.init.normal_(module.bias, std=0.1)
    with torch.no_grad():
        model.rpn.head.cls_logits.weight *= 4
        model.rpn.head.bbox_pred.weight *= 0.1
        classifier = model.roi_heads.box_predictor.cls_score
        classifier.weight *= 4
        # the box head's features are ReLU outputs, mostly alike on a random image: a class whose
        # weights sum high wins every box unless the rows are centred
        classifier.weight -= classifier.weight.mean(dim=1, keepdim=True)
        classifier.bias.zero_()
        model.roi_heads.box_predictor.bbox_pred.weight *= 0.1


#: (file stem, model kind, opset, score threshold). "mask_empty" keeps no box (its mask head then
#: convolves a batch of 0 RoIs); the others keep box_detections_per_img boxes (30 and 10).
CASES = {
    "faster_op17": ("faster", 17, 0.0),
    "faster_op11": ("faster", 11, 0.0),
    "mask_op17": ("mask", 17, 0.0),
    "mask_empty_op17": ("mask", 17, 0.99),
}
#: Image sizes in each fixture: the export size, then a smaller one the transform resizes by 8/7.
SIZES = {"": (HEIGHT, WIDTH), "_small": (80, 112)}


def export(stem: str, images: dict[str, torch.Tensor]) -> tuple[Path, dict[str, np.ndarray]]:
    """Export one case with dynamic height/width; returns the ONNX path and the PyTorch outputs."""
    kind, opset, score_thresh = CASES[stem]
    model = build_model(kind)
    model.roi_heads.score_thresh = score_thresh
    outputs = ["boxes", "labels", "scores"] + (["masks"] if kind == "mask" else [])
    reference = {}
    for suffix, image in images.items():
        with torch.no_grad():
            (result,) = model([image])
        reference.update({f"torch_{name}{suffix}": result[name].numpy() for name in outputs})
    path = DATA / f"rcnn_{stem}.onnx"
    dynamic = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in outputs}}
    torch.onnx.export(model, ([images[""]],), str(path), dynamo=False, opset_version=opset,
                      input_names=["image"], output_names=outputs, dynamic_axes=dynamic)
    return path, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    install_torchvision_shims()
    import onnxruntime

    DATA.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    pixels = {suffix: torch.randint(0, 256, (3, *size), generator=generator, dtype=torch.uint8)
              for suffix, size in SIZES.items()}
    images = {suffix: p.float() / 255 for suffix, p in pixels.items()}  # the test divides in float32 too
    for stem in args.cases:
        path, reference = export(stem, images)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        ort = {}
        for suffix, image in images.items():
            ort.update(zip((f"ort_{n}{suffix}" for n in names), session.run(None, {"image": image.numpy()})))
        np.savez_compressed(path.with_suffix(".npz"), **{f"pixels{k}": v.numpy() for k, v in pixels.items()},
                            **reference, **ort)
        print(f"{path.name}: {path.stat().st_size} bytes; "
              + ", ".join(f"{k} {v.shape}" for k, v in {**reference, **ort}.items()))


if __name__ == "__main__":
    main()
