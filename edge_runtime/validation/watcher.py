"""``run --watch``: process images as other software writes them into a folder, and keep going.

A file is read once it is complete: its size and modification time unchanged over one poll
interval (a camera writing a frame changes both). A read that still fails (a truncated file
whose writer paused) is read again on later polls, each time once stable, for
:data:`RETRY_SECONDS` (at least two polls) before it is recorded as an error. Files present at start are processed too (``include_existing``), except
those already done (``done``). Symbolic links in the folder are not followed: a link is
skipped, so nothing outside the watched folder is opened through it. Every image's failure
is recorded and the loop goes on; Ctrl-C ends it cleanly.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.preprocessing import IMAGE_SUFFIXES
from edge_runtime.validation.results import Result, printable

if TYPE_CHECKING:
    from edge_runtime.validation.run import BundleRunner

log = logging.getLogger(__name__)

MIN_POLL, MAX_POLL = 0.05, 10.0  # seconds; the watch loop's interval is clamped to this range
RETRY_SECONDS = 2.0  # a file that failed to decode is read again (once stable) for this long: its writer may pause


def watch(directory: str | Path, runner: BundleRunner, *, batch: int = 1, poll_interval: float = 0.5,
          max_files: int | None = None, timeout: float | None = None, include_existing: bool = False,
          done: Iterable[str | Path] = (), on_result: Callable[[Result], None] | None = None,
          stop: threading.Event | None = None) -> list[Result]:
    """Process image files as they appear in ``directory`` until stopped.

    Args:
        directory: the folder to watch (recursively; symbolic links are not followed).
        runner: the opened bundle.
        batch: images per inference call (files found ready in one poll are batched).
        poll_interval: seconds between scans, clamped to [0.05, 10]; a file must be unchanged
            over one interval to be read.
        max_files: stop after this many files (None: no limit).
        timeout: stop after this many seconds (None: no limit).
        include_existing: also process files present at start (the CLI's default).
        done: files already processed (e.g. given as INPUTS too): never processed again.
        on_result: called with each final Result as soon as it exists.
        stop: an Event that ends the loop when set.

    Returns:
        The Results, in processing order.

    Raises:
        InvalidArgumentError: ``directory`` is not a directory.
    """
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise InvalidArgumentError(f"--watch {str(folder)!r} is not a directory; pass an existing folder.")
    interval = min(max(float(poll_interval), MIN_POLL), MAX_POLL)
    seen: set[Path] = {Path(p) for p in done} | (set() if include_existing else set(scan(folder)))
    state = _State(max(RETRY_SECONDS, 2 * interval))
    results: list[Result] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not _done(results, max_files, deadline, stop):
            ready = state.ready(scan(folder), seen)
            if max_files is not None:
                ready = ready[:max_files - len(results)]
            for path, result in zip(ready, runner.run_files(ready, batch) if ready else []):
                if not result.ok and state.retry(path):
                    log.info("watch: %s failed (%s); will read it again", printable(str(path)), result.error)
                    continue
                seen.add(path)
                results.append(result)
                if on_result is not None:
                    on_result(result)
            if not _done(results, max_files, deadline, stop):
                (stop or threading.Event()).wait(interval)
    except KeyboardInterrupt:
        log.info("watch: interrupted after %d file(s)", len(results))
    return results


class _State:
    """Per-file stability (size, mtime) between polls, and when a file first failed."""

    def __init__(self, retry_seconds: float) -> None:
        self.retry_seconds = retry_seconds
        self.last: dict[Path, tuple[int, int]] = {}
        self.first_failure: dict[Path, float] = {}

    def ready(self, paths: list[Path], seen: set[Path]) -> list[Path]:
        """Unseen files whose size and mtime are the same as at the previous poll."""
        out = []
        for path in paths:
            if path in seen:
                continue
            try:
                info = path.stat(follow_symlinks=False)
            except OSError:  # deleted between scan and stat
                self.last.pop(path, None)
                continue
            key = (info.st_size, info.st_mtime_ns)
            if info.st_size > 0 and self.last.get(path) == key:
                out.append(path)
            else:
                self.last[path] = key
        return out

    def retry(self, path: Path) -> bool:
        """True when ``path`` should be read again later (it must then be stable once more)."""
        first = self.first_failure.setdefault(path, time.monotonic())
        self.last.pop(path, None)
        return time.monotonic() - first < self.retry_seconds


def _done(results: list[Result], max_files: int | None, deadline: float | None,
          stop: threading.Event | None) -> bool:
    return ((max_files is not None and len(results) >= max_files)
            or (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()))


def scan(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted; symbolic links (files or folders) and hidden files skipped."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(root, name)
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink():
                log.debug("watch: not following the symbolic link %s", printable(str(path)))
                continue
            found.append(path)
    return sorted(found)
