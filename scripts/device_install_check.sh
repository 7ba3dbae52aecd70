#!/usr/bin/env bash
# The README's device-side install, checked on this machine: build the wheel as on the host,
# install ONLY it with the device-side dependencies and the [tools] extra into a clean venv
# (no --system-site-packages: no torch, no onnxruntime, not the editable checkout), then run
# `edge-runtime validate` and `edge-runtime run` on a bundle from outside the checkout.
# Usage: scripts/device_install_check.sh BUNDLE_DIR IMAGES_DIR   (pip reuses its wheel cache)
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=$(realpath "${1:?bundle directory}") images=$(realpath "${2:?image directory}")
work=$(mktemp -d "${TMPDIR:-/tmp}/edge-device-venv.XXXXXX")
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

python -m pip wheel --no-deps -q . -w "$work/dist"
wheel=$(ls "$work"/dist/edge_runtime-*.whl)
python -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel[tools]"
# the device side must not have (or need) the host-side packages
"$work/venv/bin/python" - <<'PY'
import importlib.util, sys
present = [m for m in ("torch", "onnxruntime", "onnxscript") if importlib.util.find_spec(m)]
sys.exit(f"the device venv has host-side packages: {present}" if present else 0)
PY
cd "$work"  # away from the checkout: only the installed wheel can be imported
"$work/venv/bin/edge-runtime" validate "$bundle" --no-progress
"$work/venv/bin/edge-runtime" run "$bundle" "$images" --out "$work/results.csv" > /dev/null
test "$(wc -l < "$work/results.csv")" -gt 1
echo "device-side install OK: $(basename "$wheel") + [tools] in a clean venv ($(du -sh "$work/venv" | cut -f1)); validate and run passed"
