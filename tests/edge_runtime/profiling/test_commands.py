from __future__ import annotations

import json

import pytest

import device_profiles as dp
from edge_runtime.errors import InvalidArgumentError
from edge_runtime.profiling import calibrate, commands


def test_profile_command_prints_report_and_writes_json(tiny_path, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert commands.main(["profile", str(tiny_path), "--backend", "edge", "--runs", "2", "--warmup", "0",
                          "--device", "raspberry-pi-4", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "raspberry-pi-4" in printed and "ESTIMATE" in printed
    assert json.loads(out.read_text())["backends"][0]["backend"] == "edge"


def test_devices_list_and_show(capsys):
    assert commands.main(["devices", "list"]) == 0
    assert "raspberry-pi-5" in capsys.readouterr().out
    assert commands.main(["devices", "show", "jetson-orin-nano"]) == 0
    assert 'name = "jetson-orin-nano"' in capsys.readouterr().out


def test_profile_rejects_unknown_backend():
    with pytest.raises(SystemExit):
        commands.main(["profile", "m.onnx", "--backend", "tensorrt"])


def test_calibrate_writes_a_measured_profile_and_keeps_defaults_without_kernels(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(calibrate, "peak_gflops", lambda n, reps: 12.5)
    monkeypatch.setattr(calibrate, "bandwidth_gbps", lambda mb, reps: 3.25)
    monkeypatch.setattr(calibrate, "_family_calls", lambda family, quick: None)
    out = tmp_path / "host.toml"
    assert commands.main(["devices", "calibrate", "--quick", "--out", str(out)]) == 0
    assert "kept the default" in capsys.readouterr().out
    prof = dp.load_profile(out)
    assert (prof.compute.peak_fp32_gflops, prof.memory.bandwidth_gbps) == (12.5, 3.25)
    assert not prof.compute.estimated and prof.runtime.sparse_crossover.gemm == dp.host_profile().runtime.sparse_crossover.gemm
    monkeypatch.setattr(calibrate, "peak_gflops", lambda n, reps: pytest.fail("measured before refusing"))
    with pytest.raises(InvalidArgumentError, match="--overwrite"):  # no silent overwrite, refused before measuring
        commands.main(["devices", "calibrate", "--quick", "--out", str(out)])


def test_micro_benchmarks_return_positive_rates():
    assert calibrate.peak_gflops(64, 1) > 0
    assert calibrate.bandwidth_gbps(1, 1) > 0


def test_crossover_is_the_largest_density_where_sparse_wins():
    now = [0.0]  # a fake clock: each call advances it by its cost, so no real timing is involved

    def calls(d):  # the sparse call costs d, the dense one 0.5: sparse wins up to 0.3 (0.5 ties)
        def spend(cost):
            return lambda i: now.__setitem__(0, now[0] + cost)
        return spend(d), spend(0.5)
    assert calibrate._crossover(calls, runs=3, clock=lambda: now[0]) == 0.3
