"""Output files that are never lost: checked before any work, written atomically, honouring the umask.

Every command that writes a file (``--out``, ``--json``, ``--plot``, ``--report``) first calls
:func:`check_output`, so a bad path fails in a second rather than after minutes of measuring;
then it writes through :func:`write_atomic` or :func:`atomic_path` (a temporary sibling file
renamed over the target with ``os.replace``, so a reader never sees half a file and a crash
leaves the old file intact). Files come out with the usual ``0666 & ~umask`` mode, not the
``0600`` of :func:`tempfile.mkstemp`.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_atomic(check_output(d / "r.json", flag="--json", suffixes=(".json",)), "{}").name
    'r.json'
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from edge_runtime.errors import InvalidArgumentError


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666 & ~umask``."""
    mask = os.umask(0o022)  # read the umask (no getter exists); restored at once
    os.umask(mask)
    return 0o666 & ~mask


def check_output(path: str | os.PathLike[str], *, flag: str, suffixes: Sequence[str] = (),
                 overwrite: bool = False) -> Path:
    """Check that ``path`` can be written, before any work.

    Args:
        path: the output file.
        flag: the CLI flag that named it (used in the message), e.g. ``"--json"``.
        suffixes: accepted suffixes (lower case, with the dot); empty accepts any.
        overwrite: an existing file may be replaced.

    Returns:
        ``path`` as a :class:`Path` (``~`` expanded).

    Raises:
        InvalidArgumentError: wrong suffix, missing or read-only parent directory, an existing
            directory at ``path``, or an existing file without ``overwrite``.
    """
    out = Path(path).expanduser()
    if suffixes and out.suffix.lower() not in suffixes:
        raise InvalidArgumentError(f"{flag} {str(out)!r}: expected a file name ending in "
                                   f"{' or '.join(suffixes)}; rename it, e.g. {flag} {out.stem}{suffixes[0]}.")
    parent = out.parent
    if not parent.is_dir():
        raise InvalidArgumentError(f"{flag} {str(out)!r}: the folder {str(parent)!r} does not exist; "
                                   f"create it first (mkdir -p {parent}) or choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{flag} {str(out)!r}: the folder {str(parent)!r} is not writable; "
                                   f"choose a path in a folder you can write to.")
    if out.is_dir():
        raise InvalidArgumentError(f"{flag} {str(out)!r} is a directory; give a file name inside it, "
                                   f"e.g. {flag} {out / ('result' + (suffixes[0] if suffixes else ''))}.")
    if out.exists() and not overwrite:
        raise InvalidArgumentError(f"{flag} {str(out)!r} already exists; pass --overwrite to replace it "
                                   f"or choose another file name.")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces ``path`` atomically.

    For writers that want a file name (``savefig``, ``np.savez``). On an exception the
    temporary file is removed and ``path`` is left as it was.

    Raises:
        InvalidArgumentError: ``path`` exists and ``overwrite`` is False.
    """
    target = Path(path).expanduser()
    if target.exists() and not overwrite:
        raise InvalidArgumentError(f"{str(target)!r} already exists; pass --overwrite to replace it "
                                   f"or choose another file name.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".tmp",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, with the umask's mode.

    Args:
        path: the file to write; its folder must exist.
        data: text or bytes.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: ``path`` exists and ``overwrite`` is False.
        OSError: the folder is missing or not writable.
    """
    target = Path(path).expanduser()
    with atomic_path(target, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
    return target
