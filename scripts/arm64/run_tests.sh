#!/usr/bin/env bash
# Run the device-side tests of this checkout on aarch64 (qemu-user, Cortex-A72 = Pi 4 core by default)
# and check that kernels/models give the same numbers as on the host.
#
# Usage: scripts/arm64/run_tests.sh [pytest args]
#   Default pytest args: tests/edge_runtime tests/device_profiles (paths are relative to
#   the checkout; they are run from its copy at /work inside the root).
#
# Phases (each prints its duration):
#   1. build_root.sh: the cached arm64 root (about 12 min the first time, ~1 s after).
#   2. copy edge_runtime, device_profiles, exporters, edge_cli, tests, scripts/arm64, pyproject.toml to ROOT/work.
#   3. probe.py inside: uname -m, platform.machine(), numba's first-compile time.
#   4. compare_outputs.py on the host and inside, then compare (tolerance 1e-4 relative).
#   5. pytest inside, under `timeout`.
# Exit status: 0 only if every phase passed; each failure is named in the summary.
#
# Environment:
#   EDGE_RUNTIME_ARM64_CACHE     root cache dir (see build_root.sh)
#   EDGE_RUNTIME_ARM64_TIMEOUT   seconds allowed for the emulated pytest (default 1200)
#   EDGE_RUNTIME_ARM64_COMPARE   0 to skip phase 4 (default 1)
#   EDGE_RUNTIME_ARM64_BUNDLE    a bundle exported on the host (e.g. demo-out/bundle): copied into
#                                the root, checked with `edge-runtime validate` there, and its
#                                outputs on golden.npz compared host vs arm64 in phase 4
#   EDGE_RUNTIME_ARM64_CPU       qemu's CPU model (default cortex-a72, the Pi 4 core, no dotprod);
#                                cortex-a76 / neoverse-n1 have the dot-product extension: numba is
#                                then told so (NUMBA_CPU_NAME/FEATURES, unless set), because LLVM
#                                reads the host's x86 /proc/cpuinfo under qemu and finds nothing
#   HOST_PYTHON                  host interpreter for phase 4 (default python3)
#   NUMBA_*, HYPOTHESIS_*, EDGE_RUNTIME_*  passed into the root unchanged
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${EDGE_RUNTIME_ARM64_CACHE:-/var/cache/edge-runtime/arm64}"
TIMEOUT="${EDGE_RUNTIME_ARM64_TIMEOUT:-1200}"
COMPARE="${EDGE_RUNTIME_ARM64_COMPARE:-1}"
HOST_PYTHON="${HOST_PYTHON:-python3}"
# qemu's default CPU makes numpy raise false floating-point warnings (references.md s6).
QEMU_CPU_MODEL="${EDGE_RUNTIME_ARM64_CPU:-cortex-a72}"
# What LLVM would read from a real core's /proc/cpuinfo (asimddp -> dotprod, ...); empty for
# the A72 so that its runs keep numba's default target exactly as before.
case "$QEMU_CPU_MODEL" in
    cortex-a72) NUMBA_TARGET=() ;;
    cortex-a76|neoverse-n1)
        NUMBA_TARGET=("NUMBA_CPU_NAME=${NUMBA_CPU_NAME:-$QEMU_CPU_MODEL}"
                      "NUMBA_CPU_FEATURES=${NUMBA_CPU_FEATURES:-+neon,+fp-armv8,+crc,+lse,+rdm,+fullfp16,+dotprod,+rcpc}") ;;
    *) echo "arm64: EDGE_RUNTIME_ARM64_CPU=$QEMU_CPU_MODEL not supported; use cortex-a72, cortex-a76 or neoverse-n1" >&2
       exit 2 ;;
esac

if (($# == 0)); then
    # A module that fails to import must not hide the results of all the others (the run
    # still fails); --durations shows what emulation makes slow.
    set -- tests/edge_runtime tests/device_profiles --continue-on-collection-errors \
        --durations=20
fi

declare -a SUMMARY=()
FAILED=0
T_ALL=$SECONDS
phase_start() { PHASE="$1"; T_PHASE=$SECONDS; printf '\n=== arm64: %s ===\n' "$PHASE"; }
phase_end() { # $1 = exit status of the phase
    local status="ok"
    (($1 == 0)) || { status="FAILED (exit $1)"; FAILED=1; }
    SUMMARY+=("$(printf '%-34s %5d s  %s' "$PHASE" $((SECONDS - T_PHASE)) "$status")")
    printf '=== arm64: %s: %s in %d s ===\n' "$PHASE" "$status" $((SECONDS - T_PHASE))
}
summary() {
    printf '\n=== arm64 summary (total %d s) ===\n' $((SECONDS - T_ALL))
    printf '  %s\n' "${SUMMARY[@]}"
}

# Run "$@" inside ROOT under qemu ($QEMU_CPU_MODEL, default Cortex-A72) with cwd /work, only /proc mounted (with
# the host's /sys mounted onnxruntime segfaults under qemu) and a clean environment.
# Programs that the emulated process itself starts go through binfmt_misc, which
# build_root.sh registers; QEMU_CPU gives them the same CPU model.
in_root() {
    local -a envs=(PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                   HOME=/root LANG=C.UTF-8 PYTHONPATH=/work QEMU_CPU=$QEMU_CPU_MODEL)
    local var
    while IFS='=' read -r var _; do
        [[ "$var" =~ ^(NUMBA_|HYPOTHESIS_|EDGE_RUNTIME_) ]] && envs+=("$var=${!var}")
    done < <(env)
    envs+=("${NUMBA_TARGET[@]}")
    env -i "${envs[@]}" "${RUN_PREFIX[@]}" unshare -m -- sh -c \
        'mount -t proc proc "$0/proc" && exec unshare --root="$0" --wd=/work "$@"' \
        "$ROOT" /usr/bin/qemu-aarch64-static -cpu "$QEMU_CPU_MODEL" "$@"
}

RUN_PREFIX=()  # e.g. (timeout 600): wraps the whole emulated command

# 1. the cached root --------------------------------------------------------------------------
phase_start "build_root (cached)"
ROOT="$("$HERE/build_root.sh" | tail -n 1)"  # pipefail: a failed build fails this line
status=$?
phase_end "$status"
if ((status != 0)) || [[ ! -x "$ROOT/venv/bin/python" ]]; then
    echo "arm64: no usable root (see build_root.sh's error above); nothing was tested." >&2
    summary
    exit 1
fi

# One run at a time per cache: ROOT/work is shared.
exec 8>"$CACHE/.run.lock"
flock 8

# 2. the checkout into ROOT/work --------------------------------------------------------------
# rsync -c without -t: files whose content did not change keep their old mtime in the
# root, so numba's on-disk cache (ROOT/work/**/__pycache__, keyed on source mtime) stays
# valid across fresh CI clones and only edited kernels recompile under qemu.
phase_start "copy checkout to ROOT/work"
mkdir -p "$ROOT/work"
if command -v rsync >/dev/null; then
    rsync -rlc --delete --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
        --include='/edge_runtime/***' --include='/device_profiles/***' --include='/tests/***' \
        --include='/exporters/***' --include='/edge_cli/***' \
        --include='/scripts/' --include='/scripts/arm64/***' --include='/pyproject.toml' \
        --exclude='*' "$REPO/" "$ROOT/work/"
    phase_end $?
else
    rm -rf "$ROOT/work"/* && mkdir -p "$ROOT/work/scripts" &&
        cp -a "$REPO/edge_runtime" "$REPO/device_profiles" "$REPO/tests" "$REPO/exporters" "$REPO/edge_cli" \
            "$REPO/pyproject.toml" \
            "$ROOT/work/" && cp -a "$REPO/scripts/arm64" "$ROOT/work/scripts/"
    phase_end $?
fi

# 3. where are we, and how slow is numba here -------------------------------------------------
phase_start "probe (uname, numba compile)"
in_root /usr/bin/uname -m
in_root /venv/bin/python /work/scripts/arm64/probe.py
phase_end $?

# 3b. a bundle exported on the host, validated on aarch64 (sha256 + outputs vs PyTorch's golden) --
HOST_BUNDLE="${EDGE_RUNTIME_ARM64_BUNDLE:-}"
if [[ -n "$HOST_BUNDLE" ]]; then
    phase_start "validate host bundle under qemu"
    rm -rf "$ROOT/work/bundle" && cp -a "$HOST_BUNDLE" "$ROOT/work/bundle" &&
        in_root /venv/bin/python -m edge_cli.main validate /work/bundle \
            --backends edge,edge-dense,onnxruntime,litert --no-progress
    phase_end $?
fi

# 4. same numbers on both machines ------------------------------------------------------------
if [[ "$COMPARE" != 0 ]]; then
    OUT="$CACHE/compare"
    mkdir -p "$OUT" "$ROOT/tmp/compare"
    phase_start "compare_outputs on host"
    (cd "$REPO" && "$HOST_PYTHON" scripts/arm64/compare_outputs.py run --out "$OUT/host.npz")
    phase_end $?
    phase_start "compare_outputs under qemu"
    EDGE_RUNTIME_ARM64_BUNDLE=${HOST_BUNDLE:+/work/bundle} \
        in_root /venv/bin/python /work/scripts/arm64/compare_outputs.py run --out /tmp/compare/arm64.npz
    phase_end $?
    phase_start "compare host vs arm64 (rtol 1e-4)"
    cp "$ROOT/tmp/compare/arm64.npz" "$OUT/arm64.npz" &&
        "$HOST_PYTHON" "$HERE/compare_outputs.py" compare "$OUT/host.npz" "$OUT/arm64.npz"
    phase_end $?
fi

# 5. the device-side tests --------------------------------------------------------------------
phase_start "pytest under qemu ($*)"
RUN_PREFIX=(timeout --kill-after=30 "$TIMEOUT")
in_root /venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
RUN_PREFIX=()
((status == 124)) && echo "arm64: pytest exceeded EDGE_RUNTIME_ARM64_TIMEOUT=${TIMEOUT}s" >&2
phase_end "$status"

summary
exit "$FAILED"
