"""File digests remembered by the file's signature (edge_runtime.stamps.file_digests): what a warm
session hashes instead of reading every kernel source and the model again."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_runtime import stamps


@pytest.fixture
def memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stamps, "_MEMOS", {})  # each test reads the memo from disk as a new process would
    monkeypatch.setattr(stamps, "RACY_NS", -1)  # files written by the test are memoized at once
    return tmp_path / "cache"


def _unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path) -> bytes:
        raise AssertionError(f"{self} read although its digest was remembered")

    monkeypatch.setattr(Path, "read_bytes", refuse)


def test_an_unchanged_file_is_hashed_once(memo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"weights" * 1000)
    (first,) = stamps.file_digests([f], memo)
    assert first == stamps.digest(b"weights" * 1000).hexdigest()
    assert (memo / stamps.MEMO_NAME).is_file()
    stamps._MEMOS.clear()
    with monkeypatch.context() as m:
        _unreadable(m)
        assert stamps.file_digests([f], memo) == [first]


def test_a_changed_file_is_hashed_again_even_with_its_size_and_mtime_put_back(memo: Path, tmp_path: Path) -> None:
    f = tmp_path / "kernel.py"
    f.write_bytes(b"x = 1\n")
    before = os.stat(f)
    (first,) = stamps.file_digests([f], memo)
    f.write_bytes(b"x = 2\n")  # same size
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))  # and mtime: the ctime still moves
    (second,) = stamps.file_digests([f], memo)
    assert second == stamps.digest(b"x = 2\n").hexdigest() != first


def test_bytes_the_caller_has_are_hashed_instead_of_reading(memo: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"abc")
    _unreadable(monkeypatch)
    assert stamps.file_digests([f], memo, [b"abc"]) == [stamps.digest(b"abc").hexdigest()]


def test_a_file_written_just_now_is_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stamps, "_MEMOS", {})
    f = tmp_path / "fresh.py"
    f.write_bytes(b"y = 1\n")  # it may change again within the clock's tick
    stamps.file_digests([f], tmp_path / "cache")
    assert not (tmp_path / "cache" / stamps.MEMO_NAME).exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
@pytest.mark.parametrize("damage", ["group-writable", "corrupt", "not a dict", "bad entry"])
def test_a_memo_others_can_write_or_a_damaged_one_is_ignored(memo: Path, tmp_path: Path, damage: str) -> None:
    f = tmp_path / "k.py"
    f.write_bytes(b"z = 3\n")
    stamps.file_digests([f], memo)
    book = memo / stamps.MEMO_NAME
    sig = stamps._signature(os.stat(f))
    lie = '{"%s": [%s, "%s"]}' % (os.path.abspath(f), ", ".join(map(str, sig)), "0" * 64)
    book.write_text({"group-writable": lie, "corrupt": "{", "not a dict": "[1, 2]",
                     "bad entry": '{"%s": 5}' % os.path.abspath(f)}[damage])
    if damage == "group-writable":
        book.chmod(0o664)
    stamps._MEMOS.clear()
    assert stamps.file_digests([f], memo) == [stamps.digest(b"z = 3\n").hexdigest()]


def test_the_package_stamp_is_the_same_with_and_without_the_memo(memo: Path) -> None:
    assert stamps.package_stamp(memo=memo) == stamps.package_stamp() == stamps.package_stamp(memo=memo)


def test_a_model_file_and_its_bytes_get_one_engine_cache_key(memo: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from edge_runtime.engine import plancache

    monkeypatch.setenv(plancache.ENV, str(memo))
    f = tmp_path / "m.onnx"
    f.write_bytes(b"model bytes")
    feeds = [{"x": np.zeros((1, 2), np.float32)}]
    assert plancache.key(b"model bytes", feeds, (1,), path=f) == plancache.key(b"model bytes", feeds, (1,))
    assert plancache.key(b"", feeds, (1,), path=f) == plancache.key(b"model bytes", feeds, (1,))  # read from the file


def test_numba_version_is_read_without_importing_numba_or_scanning_distributions() -> None:
    import subprocess
    import sys
    from importlib import metadata

    pytest.importorskip("numba")
    code = ("import sys; from edge_runtime.stamps import numba_version; v = numba_version(); "
            "print(v, 'numba' in sys.modules, 'importlib.metadata' in sys.modules and 'email' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    version, imported, _ = done.stdout.split()
    assert version == metadata.version("numba") and imported == "False", done.stderr
