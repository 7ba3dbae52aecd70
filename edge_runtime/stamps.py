"""What the kernels' compiled code depends on, as one digest (numba-free, so a session that never
loads numba can still tell whether machine code built earlier is current).

numba's on-disk cache (:mod:`edge_runtime.kernels.cache`) and the kernels compiled ahead of time
(:mod:`edge_runtime.engine.aot`) are both keyed by :func:`package_stamp`: a kernel inlines helpers
from other files, so any change to any kernel or op source, or another numba, makes them stale.
Also here: :func:`digest`, the hash of every key on the session path, and :func:`file_digests`,
which remembers a file's digest by its signature so warm sessions do not read the files again.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

_ROOT = Path(__file__).resolve().parent
#: Packages whose numba functions inline each other: a change to any file invalidates them all.
PACKAGE_DIRS: tuple[Path, ...] = (_ROOT / "kernels", _ROOT / "ops")
#: numba-free modules whose values the kernels inline (the activation codes): part of the stamp.
SHARED_FILES: tuple[Path, ...] = (_ROOT / "act_codes.py",)


def digest(data: bytes = b"") -> Any:
    """A BLAKE2b-256 hash object (``update`` / ``digest`` / ``hexdigest``), for every key the session
    path computes: the kernels' stamp, the compiled module's key, the engine cache's keys.

    CPython's own BLAKE2 rather than ``hashlib.sha256``: importing :mod:`hashlib` loads OpenSSL's
    libcrypto, 3.4 MB of a warm session on a small CNN whose whole onnxruntime process is 75 MB. It
    hashes ~0.75 GB/s here (OpenSSL's SHA-256 1.7 GB/s): 10 ms for an 8 MB model.

    Example:
        >>> len(digest(b"model").hexdigest())
        64
    """
    try:
        from _blake2 import blake2b  # what hashlib.blake2b is, without importing hashlib
    except ImportError:  # an interpreter without the builtin module
        from hashlib import blake2b
    return blake2b(data, digest_size=32)


def numba_version() -> str:
    """The installed numba's version (numba is not imported); "" without one.

    Read from numba's own ``_version.py`` (versioneer's JSON), else its distribution metadata:
    ``importlib.metadata`` scans every installed distribution and took 1-40 ms of a session."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("numba")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return ""
    if spec.origin:
        try:
            text = (Path(spec.origin).parent / "_version.py").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        found = re.search(r'"version":\s*"([^"]+)"', text)
        if found:
            return found[1]
    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:
        return ""


def package_stamp(dirs: Iterable[Path] = PACKAGE_DIRS, files: Iterable[Path] = SHARED_FILES,
                  numba: str | None = None, memo: Path | None = None) -> str:
    """:func:`digest` of numba's version and of every ``.py`` file under ``dirs`` and of ``files`` (relative
    path and content digest, :func:`file_digests`).

    Args:
        dirs: package directories (searched recursively, ``__pycache__`` skipped).
        files: single modules the kernels inline values from.
        numba: numba's version (default: :func:`numba_version`).
        memo: the folder of :func:`file_digests`' memo (None: every file is read).

    Returns:
        The hex digest.

    Example:
        >>> len(package_stamp())
        64
    """
    h = digest((numba_version() if numba is None else numba).encode())
    named: list[tuple[str, str]] = []
    # plain strings and os.walk: pathlib objects, relpath and abspath per file were 0.7 of the 1 ms this
    # took in every warm session (the value is the same as with pathlib's relative names)
    for d in dirs:
        top = os.path.abspath(d)
        cut = len(os.path.dirname(top)) + 1
        found = []
        for root, subdirs, names in os.walk(top):
            subdirs[:] = [x for x in subdirs if x != "__pycache__"]
            found += [f"{root}{os.sep}{n}" for n in names if n.endswith(".py")]
        named += sorted((f[cut:], f) for f in found)
    named += [(os.path.basename(f), os.path.abspath(f)) for f in files]
    for (name, _), content in zip(named, file_digests([f for _, f in named], memo)):
        h.update(name.encode() + b"\0" + content.encode() + b"\0")
    return h.hexdigest()


#: The memo of :func:`file_digests` in its folder (the engine cache, whose own entries are its
#: ``*.json`` files): path -> signature + digest.
MEMO_NAME = "stamps/file-digests.json"
#: Entries kept in the memo (the package's ~110 sources and a few hundred models).
MEMO_ENTRIES = 1024
#: A file changed this recently (ns) is not memoized: it may change again within the clock's tick.
RACY_NS = 2_000_000_000
_MEMOS: dict[str, dict[str, list[Any]]] = {}


def _signature(st: os.stat_result) -> list[int]:
    """What changes when a file's content may have: size, mtime, ctime (set by every write and rename,
    and no tool can set it back), inode and device (git's index compares the same)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def file_digests(paths: Sequence[Path | str], memo: Path | None = None,
                 contents: Sequence[bytes | None] | None = None) -> list[str]:
    """Each file's :func:`digest` (hex), read and hashed only where the memo in folder ``memo`` has no
    entry for the file with its current :func:`_signature`.

    A warm session keys the kernels compiled ahead of time by their ~110 source files and the engine
    cache by the model: reading and hashing them was 20 ms of a 60 ms session on a small CNN (and
    ~100 ms for an 80 MB model). The memo holds no file's content; an entry whose file changed in
    any way is hashed again. A memo another user could write is ignored (:func:`private_file`).

    Args:
        paths: the files.
        memo: the memo's folder; None: hash every file.
        contents: each file's bytes where the caller has read them already (None: read it).
    """
    book = _memo(memo) if memo is not None else {}
    now, out, changed = time.time_ns(), [], False
    for i, path in enumerate(paths):
        key = os.path.abspath(path)
        st = os.stat(key)
        sig = _signature(st)
        entry = book.get(key)
        if isinstance(entry, list) and entry[:-1] == sig and isinstance(entry[-1], str):
            out.append(entry[-1])
            continue
        data = contents[i] if contents is not None and contents[i] is not None else Path(key).read_bytes()
        out.append(digest(data).hexdigest())
        if memo is not None and now - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            book.pop(key, None)
            book[key] = [*sig, out[-1]]
            changed = True
    if changed:
        _store_memo(Path(memo), book)
    return out


def _memo(folder: Path) -> dict[str, list[Any]]:
    key = str(folder)
    if key not in _MEMOS:
        path = Path(folder) / MEMO_NAME
        book: Any = {}
        if private_file(path):
            try:
                book = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                book = {}
        _MEMOS[key] = book if isinstance(book, dict) else {}
    return _MEMOS[key]


def _store_memo(folder: Path, book: dict[str, list[Any]]) -> None:
    """Write the memo atomically (the newest :data:`MEMO_ENTRIES`); a failure only costs hashing again."""
    while len(book) > MEMO_ENTRIES:
        book.pop(next(iter(book)))
    try:
        write_private_json(folder / MEMO_NAME, book)
    except OSError:
        pass


def write_private_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` atomically, readable and writable by this user alone (the
    engine cache's entries and memo: :func:`private_file`), creating its folder.

    Raises:
        OSError: the folder cannot be made or written (the temporary file is removed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_file(path: Path) -> bool:
    """Whether ``path`` is a regular file, owned by this user (or root), that no one else can write,
    in a folder no one else can write (what the engine cache's machine code and memo must be)."""
    try:
        st, parent = os.lstat(path), os.stat(Path(path).parent)
    except OSError:
        return False
    uid = os.getuid() if hasattr(os, "getuid") else None

    def mine(s: os.stat_result) -> bool:
        return uid is None or s.st_uid in (uid, 0)
    return stat.S_ISREG(st.st_mode) and mine(st) and mine(parent) \
        and not (st.st_mode | parent.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
