"""Per-image results of ``run``: the :class:`Result` record, safe text forms, and an appending writer.

Everything that leaves the process is made safe first: a file name that is not valid UTF-8 is
written with backslash escapes (never an encoding error that loses the CSV); control
characters become escapes (no forged console lines); a CSV cell a spreadsheet would run as a
formula (starting with ``= + - @``, tab or CR) gets a leading apostrophe (the OWASP advice).
Results are appended as they come (CSV, JSON Lines) instead of rewriting the file per image.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Sequence

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.outputs import write_atomic

#: --out suffixes: .csv and .jsonl are appended per image; .json is written (atomically) at the end.
RESULT_SUFFIXES = (".csv", ".jsonl", ".json")
FIELDS = ("path", "label", "index", "score", "latency_ms", "error")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Result:
    """One image's outcome: the top class, its softmax probability and the latency, or an error.

    Example:
        >>> Result("a.png", "ok", 0, 0.98, 1.2).ok
        True
    """

    path: str
    label: str | None = None
    index: int | None = None
    score: float | None = None
    latency_ms: float | None = None  # the batch's inference time / images in the batch
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image was classified."""
        return self.error is None


def printable(text: str | os.PathLike[str]) -> str:
    """``text`` safe to print or store: undecodable bytes and control characters as escapes.

    Example:
        >>> printable("a\\nb")
        'a\\\\nb'
    """
    decoded = os.fsencode(text).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), decoded)


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a leading ``'`` before ``= + - @`` (not numbers)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _row(result: Result) -> dict[str, Any]:
    return {k: printable(v) if isinstance(v, str) else v for k, v in asdict(result).items()}


def format_results(results: Sequence[Result], fmt: str) -> str:
    """Results as CSV (``fmt="csv"``), JSON (``"json"``) or JSON Lines (``"jsonl"``) text."""
    rows = [_row(r) for r in results]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in RESULT_SUFFIXES:
        raise InvalidArgumentError(f"--out {str(path)!r}: expected a file name ending in "
                                   f"{', '.join(RESULT_SUFFIXES)}; e.g. --out {path.stem}.csv.")
    return suffix


def write_results(results: Sequence[Result], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write results atomically as .csv, .jsonl or .json (by suffix).

    Raises:
        InvalidArgumentError: another suffix, or an existing file without ``overwrite``.
    """
    target = Path(path)
    return write_atomic(target, format_results(results, _suffix(target)[1:]), overwrite=overwrite)


class ResultWriter:
    """Write results as they come: CSV and JSON Lines appended per result, JSON at :meth:`close`.

    The file is created (atomically, header only) when the writer opens, so a bad path fails
    before any image is read; each appended row is flushed, so a killed watcher keeps its rows.

    Args:
        path: the ``--out`` file (.csv, .jsonl or .json).
        overwrite: replace an existing file.

    Raises:
        InvalidArgumentError: another suffix, or an existing file without ``overwrite``.

    Example:
        >>> with ResultWriter("results.csv") as out:  # doctest: +SKIP
        ...     out.add(Result("a.png", "ok", 0, 0.98, 1.2))
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.fmt = _suffix(self.path)[1:]
        self._rows: list[Result] = []
        self._handle: IO[str] | None = None
        header = format_results([], "csv") if self.fmt == "csv" else ("[]\n" if self.fmt == "json" else "")
        write_atomic(self.path, header, overwrite=overwrite)
        if self.fmt != "json":
            self._handle = open(self.path, "a", encoding="utf-8", newline="")

    def add(self, result: Result) -> None:
        """Append one result (flushed) or keep it for the JSON array."""
        if self._handle is None:
            self._rows.append(result)
            return
        text = format_results([result], self.fmt)
        self._handle.write(text.split("\n", 1)[1] if self.fmt == "csv" else text)  # CSV: without the header
        self._handle.flush()

    def close(self) -> Path:
        """Finish the file (JSON: write the array atomically); returns its path."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        elif self.fmt == "json":
            write_atomic(self.path, format_results(self._rows, "json"), overwrite=True)
        return self.path

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summary_line(result: Result) -> str:
    """One printable line per image (the CLI prints it); names and labels escaped."""
    if result.error:
        return f"error: {printable(result.error)}"
    return f"{printable(result.path)}\t{printable(result.label or '')}\t{result.score:.4f}\t{result.latency_ms:.2f} ms"


def summary(results: Sequence[Result]) -> list[str]:
    """Lines summarising a run: counts per label, failures, median latency.

    Example:
        >>> summary([Result("a.png", "ok", 0, 0.9, 1.0), Result("b.png", error="b.png: bad")])[0]
        '2 image(s): 1 classified, 1 failed'
    """
    ok = [r for r in results if r.ok]
    lines = [f"{len(results)} image(s): {len(ok)} classified, {len(results) - len(ok)} failed"]
    counts: dict[str, int] = {}
    for r in ok:
        counts[printable(r.label or "")] = counts.get(printable(r.label or ""), 0) + 1
    if counts:
        lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    latencies = sorted(r.latency_ms for r in ok if r.latency_ms is not None)
    if latencies:
        lines.append(f"latency per image: median {latencies[len(latencies) // 2]:.2f} ms, "
                     f"max {latencies[-1]:.2f} ms")
    return lines
