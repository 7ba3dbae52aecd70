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
from typing import IO, Any, ClassVar, Sequence

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.outputs import write_atomic

#: --out suffixes: .csv and .jsonl are appended per image; .json is written (atomically) at the end.
RESULT_SUFFIXES = (".csv", ".jsonl", ".json")
FIELDS = ("path", "label", "index", "score", "latency_ms", "error")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Outcome:
    """What every per-image result of ``run`` has (a dataclass with ``error``; ``FIELDS``, ``TALLY``)."""

    FIELDS: ClassVar[tuple[str, ...]]
    TALLY: ClassVar[str]
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the image was processed."""
        return self.error is None

    def record(self) -> dict[str, Any]:
        """The JSON form (one object per image)."""
        return asdict(self)  # type: ignore[call-overload]

    def rows(self) -> list[dict[str, Any]]:
        """The CSV rows (keys: ``FIELDS``); one per image, one per box for detection."""
        return [{k: v for k, v in self.record().items() if k in self.FIELDS}]


@dataclass(frozen=True)
class Result(Outcome):
    """One image's outcome: the top class, its softmax probability and the latency, or an error.

    Example:
        >>> Result("a.png", "ok", 0, 0.98, 1.2).ok
        True
    """

    FIELDS: ClassVar[tuple[str, ...]] = FIELDS
    TALLY: ClassVar[str] = "labels"  # what summary() counts: the tally() of each result

    path: str
    label: str | None = None
    index: int | None = None
    score: float | None = None
    latency_ms: float | None = None  # the batch's inference time / images in the batch
    error: str | None = None

    def tally(self) -> list[str]:
        """What :func:`summary` counts for this image."""
        return [self.label or ""]

    def line(self) -> str:
        """The text after the path in :func:`summary_line`."""
        return f"{printable(self.label or '')}\t{self.score:.4f}"


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


def _safe(value: Any) -> Any:
    """Strings made printable, inside lists and dicts too (a class name can come from the manifest)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


def format_results(results: Sequence[Any], fmt: str, fields: Sequence[str] | None = None) -> str:
    """Results as CSV (``fmt="csv"``), JSON (``"json"``) or JSON Lines (``"jsonl"``) text.

    ``fields``: the CSV columns (default: those of the first result's type, else :data:`FIELDS`).
    """
    if fmt in ("json", "jsonl"):
        records = [_safe(r.record()) for r in results]
        if fmt == "json":
            return json.dumps(records, indent=2) + "\n"
        return "".join(json.dumps(record) + "\n" for record in records)
    columns = fields or (type(results[0]).FIELDS if results else FIELDS)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: csv_cell(_safe(v)) for k, v in row.items()} for r in results for row in r.rows())
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
        fields: the CSV columns (default: classification's :data:`FIELDS`; a task's result
            type has its own, e.g. ``DetectionResult.FIELDS``).

    Raises:
        InvalidArgumentError: another suffix, or an existing file without ``overwrite``.

    Example:
        >>> with ResultWriter("results.csv") as out:  # doctest: +SKIP
        ...     out.add(Result("a.png", "ok", 0, 0.98, 1.2))
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, fields: Sequence[str] = FIELDS) -> None:
        self.path = Path(path)
        self.fmt = _suffix(self.path)[1:]
        self.fields = tuple(fields)
        self._rows: list[Any] = []
        self._handle: IO[str] | None = None
        header = format_results([], "csv", self.fields) if self.fmt == "csv" else ("[]\n" if self.fmt == "json" else "")
        write_atomic(self.path, header, overwrite=overwrite)
        if self.fmt != "json":
            self._handle = open(self.path, "a", encoding="utf-8", newline="")

    def add(self, result: Any) -> None:
        """Append one result (flushed) or keep it for the JSON array."""
        if self._handle is None:
            self._rows.append(result)
            return
        text = format_results([result], self.fmt, self.fields)
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


def summary_line(result: Any) -> str:
    """One printable line per image (the CLI prints it); names and labels escaped."""
    if result.error:
        return f"error: {printable(result.error)}"
    return f"{printable(result.path)}\t{result.line()}\t{result.latency_ms:.2f} ms"


def summary(results: Sequence[Any]) -> list[str]:
    """Lines summarising a run: counts per label, failures, median latency.

    Example:
        >>> summary([Result("a.png", "ok", 0, 0.9, 1.0), Result("b.png", error="b.png: bad")])[0]
        '2 image(s): 1 classified, 1 failed'
    """
    ok = [r for r in results if r.ok]
    done = "classified" if not results or isinstance(results[0], Result) else "processed"
    lines = [f"{len(results)} image(s): {len(ok)} {done}, {len(results) - len(ok)} failed"]
    counts: dict[str, int] = {}
    for r in ok:
        for key in r.tally():
            counts[printable(key)] = counts.get(printable(key), 0) + 1
    if counts:
        lines.append(f"{type(ok[0]).TALLY}: " + ", ".join(
            f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    latencies = sorted(r.latency_ms for r in ok if r.latency_ms is not None)
    if latencies:
        lines.append(f"latency per image: median {latencies[len(latencies) // 2]:.2f} ms, "
                     f"max {latencies[-1]:.2f} ms")
    return lines
