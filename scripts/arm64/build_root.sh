#!/usr/bin/env bash
# Build (once) and cache an arm64 Debian bookworm root with a Python venv holding the
# device-side stack, so the device side can be tested under qemu-user emulation.
#
# Usage: scripts/arm64/build_root.sh [--force]
#   Prints the root's path on the last line of stdout. Exits non-zero, saying what is
#   missing and how to fix it, when this machine cannot build or emulate an arm64 root.
#
# Environment:
#   EDGE_RUNTIME_ARM64_CACHE   cache dir (default /var/cache/edge-runtime/arm64); outside
#                              the repository so that fresh CI clones reuse it.
#   EDGE_RUNTIME_ARM64_MIRROR  Debian mirror (default: the one this host's apt uses).
#   EDGE_RUNTIME_ARM64_COMPILER  1: also build (once) and print root-compiler/, a copy of the root
#                              with gcc, g++ and Python's headers, where the kernels compiled ahead
#                              of time (edge-runtime warmup) are built and tested (about 1 min more).
#
# Steps follow docs/references.md section 6 (verified on the build machine):
# debootstrap --arch=arm64 --variant=minbase, qemu-aarch64-static copied into the root,
# host CA certificates installed in the root before pip, pip wheels only.
# The root is rebuilt only when the stamp (hash of the build spec + requirements.txt)
# is missing or differs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${EDGE_RUNTIME_ARM64_CACHE:-/var/cache/edge-runtime/arm64}"
ROOT="$CACHE/root"
STAMP="$CACHE/stamp"
SUITE=bookworm
# python3-venv brings ensurepip; ca-certificates provides update-ca-certificates.
DEB_PACKAGES="python3,python3-venv,python3-pip,ca-certificates"
REQUIREMENTS="$HERE/requirements.txt"
# With EDGE_RUNTIME_ARM64_COMPILER=1: what numba.pycc needs to compile the kernels ahead of time
# (edge_runtime.engine.aot), added to a copy of the root (root-compiler/; the base root and CI are unchanged).
COMPILER_PACKAGES="gcc g++ libc6-dev python3-dev"
# Bump to force a rebuild when the build steps below change meaningfully.
BUILD_VERSION=1
# qemu's default CPU ("max") makes numpy raise false floating-point warnings
# (references.md section 6); a Pi 4 core is also the oldest target we support.
export QEMU_CPU=cortex-a72

log() { printf '[arm64 build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf '\nERROR (scripts/arm64/build_root.sh): %s\n\n' "$*" >&2
    exit 1
}

host_mirror() {
    # The first Debian "URIs:" (deb822) or "deb" line that apt on this host uses.
    local m=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        m="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)"
    fi
    if [[ -z "$m" && -f /etc/apt/sources.list ]]; then
        m="$(awk '$1=="deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list || true)"
    fi
    printf '%s' "${m:-http://deb.debian.org/debian}"
}
MIRROR="${EDGE_RUNTIME_ARM64_MIRROR:-$(host_mirror)}"

spec_hash() {
    {
        printf 'version=%s suite=%s mirror=%s debs=%s\n' \
            "$BUILD_VERSION" "$SUITE" "$MIRROR" "$DEB_PACKAGES"
        grep -vE '^\s*(#|$)' "$REQUIREMENTS"
    } | sha256sum | cut -d' ' -f1
}

check_host() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap, chroot and mount need it).
  Fix: sudo $0"
    local missing=()
    for cmd in debootstrap chroot unshare mount sha256sum flock; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [[ -x /usr/bin/qemu-aarch64-static ]] || missing+=("qemu-aarch64-static")
    if ((${#missing[@]})) && command -v apt-get >/dev/null; then
        log "installing host packages for: ${missing[*]}"
        apt-get install -y -o Acquire::Retries=3 debootstrap qemu-user-static util-linux \
            >&2 || { apt-get update -o Acquire::Retries=3 >&2 &&
            apt-get install -y -o Acquire::Retries=3 debootstrap qemu-user-static \
            util-linux >&2; } || true
        missing=()
        for cmd in debootstrap chroot unshare; do
            command -v "$cmd" >/dev/null || missing+=("$cmd")
        done
        [[ -x /usr/bin/qemu-aarch64-static ]] || missing+=("qemu-aarch64-static")
    fi
    ((${#missing[@]} == 0)) || die "missing on this host: ${missing[*]}.
  Fix: apt-get install debootstrap qemu-user-static util-linux (Debian/Ubuntu host)."
}

ensure_binfmt() {
    # debootstrap's second stage and dpkg run arm64 programs that start further arm64
    # programs; only the kernel's binfmt_misc hook can put qemu under each of those.
    # Boot-time systemd-binfmt normally does this; minimal VMs and containers may not.
    local dir=/proc/sys/fs/binfmt_misc
    if [[ ! -e "$dir/register" ]]; then
        mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || die "binfmt_misc is not \
mounted at $dir and mounting it failed, so arm64 programs cannot run under qemu.
  Fix: on the host (not in an unprivileged container) run
    mount -t binfmt_misc binfmt_misc $dir
  or run CI in a privileged container / VM with binfmt_misc available."
    fi
    if [[ ! -e "$dir/qemu-aarch64" ]]; then
        local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
        [[ -f "$conf" ]] || die "no $conf to register qemu for arm64 binaries.
  Fix: apt-get install qemu-user-static (it ships the binfmt rule)."
        log "registering qemu-aarch64 with binfmt_misc from $conf"
        # Another job may register it at the same moment; EEXIST is fine.
        cat "$conf" >"$dir/register" 2>/dev/null || [[ -e "$dir/qemu-aarch64" ]] ||
            die "writing $conf to $dir/register failed.
  Fix: run as root on a kernel with CONFIG_BINFMT_MISC, e.g. 'update-binfmts --enable'."
    fi
    grep -q '^enabled' "$dir/qemu-aarch64" || die "binfmt rule qemu-aarch64 is disabled.
  Fix: echo 1 > $dir/qemu-aarch64"
}

in_root() {
    # Run a command inside ROOT with only /proc mounted (with the host's /sys mounted,
    # onnxruntime segfaults under qemu: references.md section 6).
    # A clean environment: the host's PIP_* settings (find-links, local indexes) do not
    # exist inside the root; proxies and the CPU model do.
    local root="$1"; shift
    local -a envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                   HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" DEBIAN_FRONTEND=noninteractive)
    local var
    for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [[ -n "${!var:-}" ]] && envs+=("$var=${!var}")
    done
    env -i "${envs[@]}" unshare -m -- sh -c \
        'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$root" "$@"
}

debootstrap_with_retries() {
    local target="$1" attempt
    mkdir -p "$CACHE/debs"
    for attempt in 1 2 3; do
        rm -rf "$target"
        log "debootstrap attempt $attempt/3: $SUITE arm64 minbase from $MIRROR"
        if debootstrap --arch=arm64 --variant=minbase --include="$DEB_PACKAGES" \
            --cache-dir="$CACHE/debs" "$SUITE" "$target" "$MIRROR" >&2; then
            return 0
        fi
        log "debootstrap failed (log: $target/debootstrap/debootstrap.log)"
        [[ -f "$target/debootstrap/debootstrap.log" ]] &&
            tail -n 20 "$target/debootstrap/debootstrap.log" >&2
        sleep $((attempt * 10))
    done
    die "debootstrap failed 3 times (mirror $MIRROR).
  Fix: check network access to the mirror, or set EDGE_RUNTIME_ARM64_MIRROR."
}

install_certs_and_network() {
    local target="$1"
    cp /usr/bin/qemu-aarch64-static "$target/usr/bin/"
    cp -L /etc/resolv.conf "$target/etc/resolv.conf" 2>/dev/null || true
    # Host-specific CAs (e.g. an egress proxy's) so pip in the root trusts the network.
    if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
        mkdir -p "$target/usr/local/share/ca-certificates"
        cp -a /usr/local/share/ca-certificates/. "$target/usr/local/share/ca-certificates/"
    fi
    in_root "$target" /usr/sbin/update-ca-certificates >&2
    # pip in a venv ships its own certifi; point it at the system bundle instead.
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$target/etc/pip.conf"
}

install_venv() {
    local target="$1"
    log "creating /venv and installing $(grep -cvE '^\s*(#|$)' "$REQUIREMENTS") pinned wheels"
    in_root "$target" /usr/bin/python3 -m venv /venv >&2
    cp "$REQUIREMENTS" "$target/tmp/requirements.txt"
    local attempt
    for attempt in 1 2 3; do
        if in_root "$target" /usr/bin/env PIP_DISABLE_PIP_VERSION_CHECK=1 \
            PIP_DEFAULT_TIMEOUT=120 /venv/bin/python -m pip install --retries 5 --timeout 120 --only-binary=:all: \
            --no-cache-dir -r /tmp/requirements.txt >&2; then
            return 0
        fi
        log "pip install failed (attempt $attempt/3)"
        sleep $((attempt * 10))
    done
    die "pip install into the arm64 venv failed 3 times.
  Fix: check PyPI access; every requirement needs a cp311 manylinux aarch64 wheel."
}

smoke_test() {
    local target="$1"
    log "smoke test inside the root"
    in_root "$target" /venv/bin/python -c '
import platform, numpy, onnx, numba, onnxruntime, ai_edge_litert
assert platform.machine() == "aarch64", platform.machine()
print("machine", platform.machine(), "numpy", numpy.__version__, "numba", numba.__version__,
      "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)
' >&2 || die "the freshly built root failed its smoke test (imports above)."
}

main() {
    local force=0
    [[ "${1:-}" == "--force" ]] && force=1
    check_host
    mkdir -p "$CACHE"
    # One builder at a time (parallel CI jobs share the cache).
    exec 9>"$CACHE/.lock"
    flock 9
    ensure_binfmt
    local want
    want="$(spec_hash)"
    if ((force == 0)) && [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" &&
        -x "$ROOT/venv/bin/python" ]]; then
        log "cached root is up to date: $ROOT (stamp $want)"
        finish "$want"
        return 0
    fi
    local t0=$SECONDS tmp="$CACHE/root.new"
    log "building arm64 root in $tmp (stamp ${want:0:12})"
    debootstrap_with_retries "$tmp"
    log "debootstrap done in $((SECONDS - t0)) s"
    local t1=$SECONDS
    install_certs_and_network "$tmp"
    install_venv "$tmp"
    log "venv done in $((SECONDS - t1)) s"
    smoke_test "$tmp"
    rm -rf "$CACHE/root.old"
    [[ -d "$ROOT" ]] && mv "$ROOT" "$CACHE/root.old"
    mv "$tmp" "$ROOT"
    rm -rf "$CACHE/root.old"
    printf '%s\n' "$want" >"$STAMP"
    log "arm64 root ready in $((SECONDS - t0)) s: $ROOT"
    finish "$want"
}

finish() {
    # Print the root to use: the base root, or with EDGE_RUNTIME_ARM64_COMPILER=1 its copy with
    # C/C++ compilers and Python's headers (rebuilt from the base root when that changed).
    local base_stamp="$1"
    if [[ "${EDGE_RUNTIME_ARM64_COMPILER:-0}" != 1 ]]; then
        printf '%s\n' "$ROOT"
        return 0
    fi
    local want="$base_stamp+$COMPILER_PACKAGES" croot="$CACHE/root-compiler"
    if [[ -f "$CACHE/stamp-compiler" && "$(cat "$CACHE/stamp-compiler")" == "$want" &&
        -x "$croot/venv/bin/python" ]]; then
        log "cached compiler root is up to date: $croot"
        printf '%s\n' "$croot"
        return 0
    fi
    local t0=$SECONDS tmp="$CACHE/root-compiler.new"
    log "building the compiler root: a copy of $ROOT + $COMPILER_PACKAGES"
    rm -rf "$tmp"
    cp -a "$ROOT" "$tmp"
    local attempt ok=0
    for attempt in 1 2 3; do
        if in_root "$tmp" /bin/sh -c "apt-get update -o Acquire::Retries=3 && apt-get install -y \
            --no-install-recommends -o Acquire::Retries=3 $COMPILER_PACKAGES" >&2; then
            ok=1
            break
        fi
        log "apt-get install in the compiler root failed (attempt $attempt/3)"
        sleep $((attempt * 10))
    done
    ((ok)) || die "installing $COMPILER_PACKAGES into the arm64 root failed 3 times.
  Fix: check network access to the mirror, or set EDGE_RUNTIME_ARM64_MIRROR."
    rm -rf "$croot"
    mv "$tmp" "$croot"
    printf '%s\n' "$want" >"$CACHE/stamp-compiler"
    log "compiler root ready in $((SECONDS - t0)) s: $croot"
    printf '%s\n' "$croot"
}

main "$@"
