"""Fuzz model loading, manifest/bundle loading and golden.npz reading for a while.

    PYTHONPATH=. python scripts/fuzz_bundle.py --target all --seconds 300 [--max-memory-mb 1024]

Mutates a valid seed (tests/edge_runtime/fuzz_targets.py: bit flips, overwrites, inserts,
deletions, truncation, JSON value swaps) and calls each target; with ``--atheris`` (pip
install atheris) atheris drives the model target instead. Anything but the project's own
errors is a finding: the script prints the exception and saves the input under
--findings. It ends with the executions, time and peak memory per target.
"""
from __future__ import annotations

import argparse
import logging
import random
import resource
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.edge_runtime.fuzz_targets import TARGETS, mutate, seeds  # noqa: E402


def _limit_memory(megabytes: int) -> None:
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + (megabytes << 20), resource.RLIM_INFINITY))


def fuzz(name: str, seconds: float, rng: random.Random, findings: Path) -> tuple[int, int, int]:
    """Run one target for ``seconds``; return (executions, accepted inputs, findings)."""
    target, corpus = TARGETS[name], [seeds()[name]]
    runs = kept = found = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = rng.choice(corpus)
        for _ in range(rng.randint(1, 3)):
            data = mutate(data, rng)
        runs += 1
        try:
            accepted = target(data)
        except Exception:  # a finding: not one of the project's errors
            found += 1
            findings.mkdir(parents=True, exist_ok=True)
            (findings / f"{name}-{found}.bin").write_bytes(data)
            print(f"[{name}] finding {found}:\n{traceback.format_exc(limit=4)}", file=sys.stderr)
            continue
        if accepted:  # accepted mutants reach deeper code: keep mutating them
            kept += 1
            if len(corpus) < 256:
                corpus.append(data)
            else:
                corpus[rng.randrange(256)] = data
    return runs, kept, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="all", choices=["all", *TARGETS])
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-memory-mb", type=int, default=1024, help="address space above the start (RLIMIT_AS)")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    parser.add_argument("--atheris", action="store_true", help="drive the model target with atheris")
    args = parser.parse_args()
    _limit_memory(args.max_memory_mb)
    logging.disable(logging.WARNING)  # "bundle is NOT signed" on every accepted manifest
    if args.atheris:
        import atheris

        atheris.Setup([sys.argv[0], f"-max_total_time={int(args.seconds)}"], TARGETS["model"])
        atheris.Fuzz()
        return 0
    rng = random.Random(args.seed)
    total = 0
    for name in (TARGETS if args.target == "all" else [args.target]):
        start = time.monotonic()
        runs, kept, found = fuzz(name, args.seconds, rng, args.findings)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name}: {runs} executions ({kept} accepted) in {time.monotonic() - start:.1f} s, {found} findings, "
              f"peak RSS {peak:.0f} MiB")
        total += found
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
