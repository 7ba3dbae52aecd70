"""numba's kernel cache is stamped with every kernel source (edge_runtime.kernels.cache).

The end-to-end test builds a two-file package (a helper and a cached kernel that calls it), runs
the kernel in a fresh process, changes only the helper and runs again: with the stamp the second
run computes with the new helper; without it numba loads the stale machine code (the control).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.kernels import cache

REPO = Path(__file__).resolve().parents[3]

_KERNEL = """import numba
from {pkg}.helper import helper

@numba.njit(cache=True)
def kernel(x):
    return helper(x) + 1
"""
_RUN = """import sys
if sys.argv[1] == "stamped":
    from edge_runtime.kernels.cache import install
    install([sys.argv[2]])
from {pkg}.kernel import kernel
print(kernel(10))
"""


def _package(root: Path, name: str) -> Path:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("import numba\n\n@numba.njit(inline='always')\ndef helper(x):\n    return x * 2\n")
    (pkg / "kernel.py").write_text(_KERNEL.format(pkg=name))
    (root / f"run_{name}.py").write_text(_RUN.format(pkg=name))
    return pkg


def _run(root: Path, name: str, mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, str(root / f"run_{name}.py"), mode, str(root / name)], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return int(out.stdout.split()[-1])


def test_package_stamp_changes_with_any_source_file(tmp_path: Path) -> None:
    pkg = _package(tmp_path, "stamp_pkg")
    before = cache.package_stamp([pkg])
    assert cache.package_stamp([pkg]) == before
    (pkg / "helper.py").write_text((pkg / "helper.py").read_text().replace("x * 2", "x * 3"))
    assert cache.package_stamp([pkg]) != before
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.py").write_text("ignored")
    assert cache.package_stamp([pkg]) == cache.package_stamp([pkg])


def test_install_is_idempotent_and_covers_only_its_packages(tmp_path: Path) -> None:
    from numba.core import caching
    pkg = _package(tmp_path, "idem_pkg")
    n = len(caching.CacheImpl._locator_classes)
    cache.install([pkg])
    cache.install([pkg])
    try:
        assert len(caching.CacheImpl._locator_classes) == n + 3
        first = caching.CacheImpl._locator_classes[1]
        assert first.from_function(test_install_is_idempotent_and_covers_only_its_packages, __file__) is None
    finally:
        caching.CacheImpl._locator_classes = caching.CacheImpl._locator_classes[3:]
    assert len(caching.CacheImpl._locator_classes) == n


def test_edge_runtime_kernels_use_the_stamped_cache() -> None:
    from edge_runtime.kernels.sparse_common import compact
    stamp = compact._cache._impl.locator.get_source_stamp()
    assert stamp[1] == cache.package_stamp()


@pytest.mark.parametrize("mode, stale_expected", [("stamped", False), ("plain", True)])
def test_changed_helper_never_runs_stale(tmp_path: Path, mode: str, stale_expected: bool) -> None:
    name = f"pkg_{mode}"
    pkg = _package(tmp_path, name)
    assert _run(tmp_path, name, mode) == 21
    assert _run(tmp_path, name, mode) == 21  # from the cache
    helper = pkg / "helper.py"
    helper.write_text(helper.read_text().replace("x * 2", "x * 5"))
    got = _run(tmp_path, name, mode)
    if stale_expected:  # the control: numba alone keeps the old inlined helper
        assert got == 21, "numba now invalidates callers of a changed helper; the stamp may be unnecessary"
    else:
        assert got == 51
