"""Fuzzing, bounded to a few seconds: mutated model / manifest / golden.npz bytes end in success or a
project error, never another exception. Longer runs: scripts/fuzz_bundle.py (docs/trust.md)."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.edge_runtime.fuzz_targets import TARGETS, mutate, seeds

SEEDS = seeds()
BOUNDED = settings(max_examples=150, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_is_accepted(name):
    assert TARGETS[name](SEEDS[name]) is True  # the mutations start from a valid input


@pytest.mark.parametrize("name", ["model", "golden"])
@BOUNDED
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 4))
def test_mutated_bytes_raise_only_project_errors(name, seed, rounds):
    rng, data = random.Random(seed), SEEDS[name]
    for _ in range(rounds):
        data = mutate(data, rng)
    TARGETS[name](data)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3))
def test_mutated_manifest_raises_only_bundle_errors(seed, rounds):
    rng, data = random.Random(seed), SEEDS["manifest"]
    for _ in range(rounds):
        data = mutate(data, rng)
    TARGETS["manifest"](data)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(raw=st.binary(max_size=512))
def test_arbitrary_bytes_as_model_and_golden(raw):
    TARGETS["model"](raw)
    TARGETS["golden"](raw)
