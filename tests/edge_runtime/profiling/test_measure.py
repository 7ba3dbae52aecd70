from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.profiling import measure


def test_percentiles_interpolate_linearly_on_known_samples():
    samples = [1.0, 2.0, 3.0, 4.0]
    assert measure.percentile(samples, 50) == pytest.approx(2.5)
    assert measure.percentile(samples, 90) == pytest.approx(3.7)   # 1 + 0.9 * 3 = 3.7 -> between 3 and 4
    assert measure.percentile(samples, 99) == pytest.approx(3.97)
    assert measure.percentile(list(range(101)), 90) == pytest.approx(90.0)
    assert measure.percentile([5.0], 99) == 5.0


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(InvalidArgumentError, match="runs >= 1"):
        measure.percentile([], 50)
    with pytest.raises(InvalidArgumentError, match=r"\[0, 100\]"):
        measure.percentile([1.0], 101)


def test_summarize_converts_to_ms_and_items_per_second():
    s = measure.summarize([0.001, 0.002, 0.003, 0.004], batch=2)
    assert (s.runs, s.min_ms, s.max_ms) == (4, pytest.approx(1.0), pytest.approx(4.0))
    assert s.mean_ms == pytest.approx(2.5)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4]))
    assert s.items_per_s == pytest.approx(2 / 0.0025)
    assert set(s.to_dict()) >= {"mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "items_per_s"}


def test_interleave_alternates_blocks_and_varies_inputs():
    order: list[tuple[str, int]] = []
    calls = {name: (lambda i, n=name: order.append((n, i))) for name in ("A", "B")}
    times = measure.interleave(calls, runs=4, warmup=1, block=2)
    assert order[:2] == [("A", -1), ("B", -1)]
    blocks = [order[i:i + 2] for i in range(2, len(order), 2)]  # each contender's block: consecutive calls
    assert all(a[0] == b[0] and (a[1], b[1]) in ((0, 1), (2, 3)) for a, b in blocks)
    assert sorted(blocks) == sorted([[(n, 0), (n, 1)] for n in "AB"] + [[(n, 2), (n, 3)] for n in "AB"])
    assert [len(t) for t in times.values()] == [4, 4]


def test_interleave_varies_which_contender_goes_first():
    """No contender always runs right after the same neighbour (a fixed order biased the second one)."""
    order: list[str] = []
    calls = {name: (lambda i, n=name: order.append(n)) for name in ("A", "B", "C")}
    measure.interleave(calls, runs=40, warmup=0, block=1)
    firsts = {order[i] for i in range(0, len(order), 3)}
    assert firsts == {"A", "B", "C"}


def test_interleave_uses_the_given_clock():
    ticks = iter(range(100))
    times = measure.interleave({"A": lambda i: None}, runs=3, warmup=0, clock=lambda: next(ticks) * 2.0)
    assert times["A"] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("runs,warmup", [(0, 1), (-1, 0), (2.5, 0), (3, -1)])
def test_interleave_rejects_bad_counts(runs, warmup):
    with pytest.raises(InvalidArgumentError):
        measure.interleave({"A": lambda i: None}, runs=runs, warmup=warmup)


def test_pair_ratio_median_pairs_calls_of_the_same_round():
    assert measure.pair_ratio_median([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == pytest.approx(2.0)
    with pytest.raises(InvalidArgumentError):
        measure.pair_ratio_median([], [1.0])
