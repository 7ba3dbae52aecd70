"""torchvision Faster R-CNN / Mask R-CNN exports run on both engines (issue 18).

The fixtures in tests/edge_runtime/data/ come from scripts/make_rcnn_fixture.py (a venv with
torchvision; see its docstring): tiny random-weight models exported by torch's TorchScript
exporter with dynamic height/width, at opset 17 (RoiAlign-16) and 11 (RoiAlign-10), each with
two images (the export size 96x128 and 80x112, which the model's transform resizes by 8/7) and
the outputs of PyTorch and onnxruntime for both. Faster R-CNN: one feature map, 30 detections
(labels 2 and 3). Mask R-CNN: two feature maps (RoIs split across levels: Log, ScatterElements),
10 detections with 96x128 masks pasted in a Loop; ``mask_empty`` keeps no detection (score
threshold 0.99), so its mask head runs on 0 RoIs. Neither torch nor torchvision is needed here.

Tolerances (measured between PyTorch and onnxruntime on these files; both engines are as close):
boxes 1e-4 px absolute (coordinates reach 128 and pass through exp, clipping and the 7/8 resize
back: float32 rounding in a different op order gave 1.5e-5); scores 1e-5 (softmax outputs,
1.6e-6 seen); masks 1e-5 (sigmoid + bilinear paste, 1.1e-6 seen); labels exactly.
Order: detections come sorted by score, so two whose scores differ by less than the score
tolerance could swap under another rounding (these fixtures' closest pair is 4.4e-5 apart):
detections are matched, not compared by position, and only such near-ties may trade places.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_runtime

DATA = Path(__file__).with_name("data")
STEMS = ("faster_op17", "faster_op11", "mask_op17", "mask_empty_op17")
IMAGES = ("", "_small")
PROVIDERS = ("EdgeRuntimeExecutionProvider", "CPUExecutionProvider")  # numba engine, onnxruntime engine
ATOL = {"boxes": 1e-4, "scores": 1e-5, "masks": 1e-5}

_sessions: dict[tuple[str, str], edge_runtime.InferenceSession] = {}


def _session(stem: str, provider: str) -> edge_runtime.InferenceSession:
    if (stem, provider) not in _sessions:
        _sessions[stem, provider] = edge_runtime.InferenceSession(str(DATA / f"rcnn_{stem}.onnx"),
                                                                  providers=[provider])
    return _sessions[stem, provider]


def _match(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> list[int]:
    """For each wanted detection, the index of the got detection equal to it within ATOL.

    Raises AssertionError when one has no partner, or when a detection moved past another
    whose score differs by more than the score tolerance (a real ordering difference).
    """
    assert got["scores"].shape == want["scores"].shape, (got["scores"].shape, want["scores"].shape)
    order, free = [], set(range(len(want["scores"])))
    for i in range(len(want["scores"])):
        partners = [j for j in sorted(free) if got["labels"][j] == want["labels"][i]
                    and np.allclose(got["boxes"][j], want["boxes"][i], rtol=0, atol=ATOL["boxes"])
                    and abs(got["scores"][j] - want["scores"][i]) <= ATOL["scores"]]
        assert partners, (f"detection {i} (label {want['labels'][i]}, score {want['scores'][i]}, box "
                          f"{want['boxes'][i]}) has no partner in {got}")
        order.append(partners[0])
        free.remove(partners[0])
    for i, j in enumerate(order):
        if i != j:
            assert abs(want["scores"][i] - want["scores"][j]) <= ATOL["scores"], \
                f"detection {i} came out at {j}; their scores differ by more than {ATOL['scores']}"
    return order


def _check(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, \
            (name, got[name].dtype, got[name].shape, value.dtype, value.shape)
    order = _match(got, want)
    if "masks" in want:
        np.testing.assert_allclose(got["masks"][order], want["masks"], rtol=0, atol=ATOL["masks"])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("stem", STEMS)
def test_rcnn_export_matches_onnxruntime_and_torch(stem: str, image: str, provider: str) -> None:
    data = np.load(DATA / f"rcnn_{stem}.npz")
    session = _session(stem, provider)
    names = [o.name for o in session.get_outputs()]
    feed = {"image": data[f"pixels{image}"].astype(np.float32) / np.float32(255)}
    got = dict(zip(names, session.run(None, feed)))
    for source in ("ort", "torch"):
        _check(got, {name: data[f"{source}_{name}{image}"] for name in names})


@pytest.mark.parametrize("stem", STEMS)
def test_rcnn_fixture_is_meaningful(stem: str) -> None:
    """The stored references agree with each other, and only mask_empty is empty."""
    data = np.load(DATA / f"rcnn_{stem}.npz")
    for image in IMAGES:
        count = len(data[f"ort_scores{image}"])
        assert count == (0 if "empty" in stem else 10 if stem.startswith("mask") else 30)
        names = ["boxes", "labels", "scores"] + (["masks"] if stem.startswith("mask") else [])
        _check({n: data[f"ort_{n}{image}"] for n in names}, {n: data[f"torch_{n}{image}"] for n in names})
        if count:
            assert len(np.unique(data[f"ort_scores{image}"])) == count  # distinct scores, no blanket ties
