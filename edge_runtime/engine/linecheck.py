"""Check a marginal plan decision on the first images the line runs, and keep the faster plan.

At session creation the engine times the cut plan (or the numba engine) against the whole model
in one onnxruntime session on the warm-up inputs (:func:`edge_runtime.engine.hybrid.time_plans`).
Where the measured gain is small, that decision can be wrong for the images the line then runs:
on a relufied backbone at 56 px with 80% zeros the cut plan was timed 8% faster on 8 warm-up
images and ran 3% slower over 16 test images (images denser than the warm-up ones run their
islands dense; another process's load moves the timings), so the session broke the product's
promise of never being slower than onnxruntime
(docs/experiments.md, "Several warm-up images").

So when the kept plan's measured gain is under :data:`edge_runtime.engine.hybrid.LINE_CHECK_BELOW`,
the session keeps the whole-model session too and runs its first :data:`CALLS` ``run()`` calls
alternately on the two plans, :data:`BLOCK` consecutive calls each (a line runs one plan back to
back; the first call of a block, on caches the other plan filled, is not counted). Both plans
compute the same outputs, so every call returns a correct result while it is being timed; no call
runs twice. Then each plan's time is the median over its blocks of the block's mean call, and the
candidate stays only if it is not slower than the whole model; the other plan is let go (its
weights with it), and the outcome is kept in the engine cache so the next session of the model
on this machine builds the winner without checking again.

Thread-safe: concurrent ``run()`` calls take their plan and record their time under a lock; a
call that took the plan which then lost still finishes on it.
"""
from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from typing import Callable

from edge_runtime.plan import Plan
from edge_runtime.threads import run_clock

#: Calls per plan in the check (the first of each block is not counted).
CALLS = 24
#: Consecutive calls of one plan before the check switches to the other.
BLOCK = 4


@dataclass(frozen=True)
class Verdict:
    """The check's outcome: the plan kept and both plans' times (ms) on the line's images."""

    plan: Plan
    candidate_kept: bool
    candidate_ms: float
    whole_ms: float
    calls: int

    def sentence(self, candidate: str) -> str:
        """What the report says, e.g. ``checked on the first 48 images run: cut plan 1.120 ms vs whole
        1.240 ms: cut plan kept``."""
        kept = candidate if self.candidate_kept else "whole model"
        return (f"checked on the first {self.calls} images run: {candidate} {self.candidate_ms:.3f} ms vs whole "
                f"{self.whole_ms:.3f} ms: {kept} kept")


class LineCheck:
    """Alternates blocks of calls between ``candidate`` and ``whole`` until each ran :data:`CALLS` calls.

    Args:
        candidate: the plan the engine chose at creation (a cut plan or the numba engine's).
        whole: the whole model in one onnxruntime session.
        threads: the session's threads (1: calls are timed in thread CPU time, immune to other
            processes' time slices, where BLAS is held to one thread too; else wall clock:
            :func:`edge_runtime.threads.run_clock`).
        key: the engine cache's key of the decision (the verdict replaces its entry), or None.
        calls, block: calls per plan and per block (tests shorten them).
    """

    def __init__(self, candidate: Plan, whole: Plan, threads: int, key: str | None = None,
                 calls: int = CALLS, block: int = BLOCK) -> None:
        self.candidate, self.whole, self.key = candidate, whole, key
        self.clock: Callable[[], float] = run_clock(threads)
        self.calls, self.block = max(1, calls), max(2, block)
        self._per_plan = max(1, self.calls - -(-self.calls // self.block))  # a block's first call is not counted
        self._counted = [0, 0]
        self._lock = threading.Lock()
        self._started = 0
        self._blocks: tuple[dict[int, list[float]], dict[int, list[float]]] = ({}, {})
        self._done: Verdict | None = None

    @property
    def pending(self) -> bool:
        """True until the check has decided."""
        return self._done is None

    def take(self) -> tuple[Plan, int, int, bool]:
        """The plan for the next call: (plan, 0 candidate / 1 whole, block number, counted); after
        the verdict (a call that raced it), the kept plan, not counted."""
        with self._lock:
            if self._done is not None:
                return self._done.plan, 0, 0, False
            n = self._started
            self._started += 1
        index = n // self.block
        which = index % 2
        return (self.candidate if which == 0 else self.whole), which, index, n % self.block != 0

    def record(self, which: int, index: int, seconds: float) -> Verdict | None:
        """Count one call's time; returns the verdict once, when the check has just decided."""
        with self._lock:
            if self._done is not None:
                return None
            self._blocks[which].setdefault(index, []).append(seconds)
            self._counted[which] += 1
            if min(self._counted) < self._per_plan:
                return None
            cand, whole = (statistics.median(sum(v) / len(v) for v in b.values()) for b in self._blocks)
            self._done = Verdict(self.candidate if cand <= whole else self.whole, cand <= whole,
                                 cand * 1e3, whole * 1e3, self._started)
            return self._done
