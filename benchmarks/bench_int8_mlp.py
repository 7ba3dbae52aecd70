"""int8 Transformer MLP block (QDQ MatMul fusion), edge_runtime vs onnxruntime int8.

Linear(64, 256) -> ReLU or GELU -> Linear(256, 64) on (1, 16, 64) tokens (random init, seed 0),
exported by torch.onnx.export (MatMul + Add per Linear) and quantized by onnxruntime's
quantize_static (QDQ, per-channel int8 weights, uint8 activations, 8 random calibration batches).
Timed, 1 thread, thread CPU time, interleaved blocks over a pool of 32 random token batches:
onnxruntime int8; edge_runtime numba-only (QLinearMatMul after passes/fuse_qdq.py, the sparse int8
kernel); the same with the MatMul fusion switched off (the float MatMuls it ran before); edge_runtime
as installed (the engine picks). Also the fraction of the second Linear's inputs at the zero point.

Run (about 1 min on 2 cores)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 -m benchmarks.bench_int8_mlp

Writes benchmarks/results/bench_int8_mlp.json (with the CPU and the code path).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "bench_int8_mlp.json"
TOKENS, DIM, HIDDEN = 16, 64, 256


def _quantized(act: str, d: Path) -> Path:
    from onnxruntime import quantization as q

    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(DIM, HIDDEN), torch.nn.ReLU() if act == "relu" else torch.nn.GELU(),
                                torch.nn.Linear(HIDDEN, DIM)).eval()
    fp32, path = d / f"{act}.onnx", d / f"{act}.int8.onnx"
    torch.onnx.export(block, (torch.zeros(1, TOKENS, DIM),), str(fp32), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": _tokens(i)} for i in range(8)])

        def get_next(self):
            return next(self.it, None)

    q.quantize_static(str(fp32), str(path), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    return path


def _tokens(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, TOKENS, DIM)).astype(np.float32)


def _sessions(path: Path, pool: list[np.ndarray]) -> dict[str, Any]:
    import onnxruntime as ort

    import edge_runtime
    from edge_runtime.passes import fuse_qdq

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3

    def edge(providers: Any) -> Any:
        opts = edge_runtime.SessionOptions()
        opts.intra_op_num_threads = 1
        return edge_runtime.InferenceSession(str(path), opts, providers, warmup_feed={"x": pool[0]})

    out = {"onnxruntime_int8": ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]),
           "edge_numba_int8": edge(["EdgeRuntimeExecutionProvider"]), "edge_int8": edge(None)}
    fusion = fuse_qdq._matmul_fusion
    fuse_qdq._matmul_fusion = lambda *a: None  # the float MatMuls this model ran before the fusion
    try:
        out["edge_numba_int8_unfused"] = edge(["EdgeRuntimeExecutionProvider"])
    finally:
        fuse_qdq._matmul_fusion = fusion
    return out


def _bench(act: str, d: Path, blocks: int, calls: int) -> dict[str, Any]:
    path = _quantized(act, d)
    pool = [_tokens(100 + i) for i in range(32)]
    sessions = _sessions(path, pool)
    ref = sessions["onnxruntime_int8"]
    equal = all(np.array_equal(sessions["edge_numba_int8"].run(None, {"x": x})[0], ref.run(None, {"x": x})[0])
                for x in pool)
    fns = {k: (lambda x, s=s: s.run(None, {"x": x})) for k, s in sessions.items()}
    times = common.interleave(fns, pool, blocks, calls, clock=time.thread_time)
    base = times["onnxruntime_int8"]
    hidden = [n for n in sessions["edge_numba_int8"].plan.graph.nodes if n.op_type == "QLinearMatMul"][1].inputs[0]
    import onnxruntime as ort
    import onnx

    m = onnx.load(str(path))
    m.graph.output.extend([onnx.helper.make_tensor_value_info(hidden, onnx.TensorProto.UINT8, None)])
    probe = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    zp = int(onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == hidden.replace(
        "_QuantizeLinear_Output", "_zero_point"))))
    at_zp = float(np.mean([np.mean(probe.run([hidden], {"x": x})[0] == zp) for x in pool]))
    return {"edge_numba_equals_onnxruntime_int8": bool(equal), "second_linear_inputs_at_zero_point": round(at_zp, 3),
            "ms": {k: round(common.median_ms(v), 4) for k, v in times.items()},
            "speedup_vs_onnxruntime_int8": {k: round(common.ratio(base, v), 3) for k, v in times.items()},
            "speedup_interval_90": {k: [round(r, 3) for r in common.ratio_interval(base, v)] for k, v in times.items()},
            "providers": {k: list(s.get_providers()) for k, s in sessions.items() if k.startswith("edge")},
            "runs_per_contender": blocks * calls}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=15)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        result = {act: _bench(act, Path(tmp), args.blocks, args.calls) for act in ("relu", "gelu")}
    doc = {"machine": common.machine_info(), "results": result}
    common.write_json(args.out, doc)
    print(common.markdown_table(["block", "contender", "ms", "speedup vs ort int8", "90% interval"], [
        [act, k, r["ms"][k], r["speedup_vs_onnxruntime_int8"][k], r["speedup_interval_90"][k]]
        for act, r in result.items() for k in r["ms"]]))
    return doc


if __name__ == "__main__":
    main()
