"""Benchmarks (timings live here, never in tests); shared helpers in benchmarks.common."""
