"""Load a deployment bundle on the device: authenticate the manifest, verify every file.

The bundle format is documented in docs/bundle.md, the signing policy in docs/trust.md.
:func:`load_bundle` does, before anything runs:

1. read ``manifest.json`` (a regular file, never through a symlink, at most 16 MiB) and
   check it against the typed contract (:class:`edge_runtime.contract.Manifest`);
2. authenticate its exact bytes: ``manifest.sig`` (Ed25519, :mod:`edge_runtime.trust`)
   and/or ``manifest.sha256`` (catches edits and corruption of an unsigned bundle);
3. check every listed file: a regular file with one link, opened without following
   symlinks, its size equal to the declared one *before* hashing (an 8 GB sparse file is
   refused at once), then its sha256; files in the directory that the manifest does not
   list are refused too. Nothing outside the bundle directory is ever opened.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.contract import (MANIFEST, MANIFEST_DIGEST, RESERVED_NAMES, SIGNATURE,
                                   SUPPORTED_FORMAT_VERSIONS, FileEntry, Manifest)
from edge_runtime.errors import BundleError
from edge_runtime.trust import TrustPolicy, TrustResult, verify_manifest

if TYPE_CHECKING:
    from edge_runtime.onnx_io import HandedBytes

log = logging.getLogger(__name__)

__all__ = ["MANIFEST", "SUPPORTED_FORMAT_VERSIONS", "FileProblem", "LoadedBundle", "read_manifest",
           "check_bundle", "check_files", "load_bundle", "sha256_of", "manifest_digest"]

MAX_MANIFEST_BYTES = 16 << 20
_CHUNK = 1 << 20
_FIX = "copy the whole bundle directory again or re-export it"


@dataclass(frozen=True)
class FileProblem:
    """One bundle file that is missing, unsafe, unlisted, or differs from the manifest."""

    name: str
    text: str

    def message(self, bundle: Path | None = None) -> str:
        """A sentence naming the file, what is wrong and the fix."""
        return self.text


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle directory whose manifest was read (and, when ``verified``, checked).

    ``manifest`` is the raw JSON document, ``spec`` its typed form.

    Example:
        >>> b = load_bundle("out/bundle")  # doctest: +SKIP
        >>> b.onnx_path, b.labels, b.spec.preprocessing.input_size  # doctest: +SKIP
        (PosixPath('out/bundle/model.onnx'), ['ok', 'defect'], (32, 32))
    """

    path: Path
    manifest: dict[str, Any]
    verified: bool
    spec: Manifest = field(default=None, compare=False)  # type: ignore[assignment]
    trust: TrustResult | None = None

    def __post_init__(self) -> None:
        if self.spec is None:
            object.__setattr__(self, "spec", Manifest.from_json(self.manifest, str(self.path / MANIFEST)))

    @property
    def onnx_path(self) -> Path | None:
        """``model.onnx`` when the bundle has one."""
        return self._file("model.onnx")

    @property
    def tflite_path(self) -> Path | None:
        """``model.tflite`` when the bundle has one."""
        return self._file("model.tflite")

    @property
    def golden_path(self) -> Path | None:
        """``golden.npz`` (x, y, y_0..., output_names); every valid bundle has one."""
        return self._file("golden.npz")

    @property
    def int8_path(self) -> Path | None:
        """The int8 model (``manifest["int8"]["model"]``) when the bundle has one."""
        return self._file(self.spec.int8.model) if self.spec.int8 else None

    @property
    def int8_golden_path(self) -> Path | None:
        """onnxruntime's outputs of the int8 model on golden.npz's inputs, when the bundle has them."""
        return self._file(self.spec.int8.golden) if self.spec.int8 else None

    @property
    def int8_tflite_path(self) -> Path | None:
        """The int8 TFLite model (``manifest["int8"]["tflite"]["model"]``) when the bundle has one."""
        spec = self.spec.int8.tflite if self.spec.int8 else None
        return self._file(spec.model) if spec else None

    @property
    def int8_tflite_golden_path(self) -> Path | None:
        """LiteRT's outputs of the int8 TFLite model on golden.npz's inputs, when the bundle has them."""
        spec = self.spec.int8.tflite if self.spec.int8 else None
        return self._file(spec.golden) if spec else None

    @property
    def labels(self) -> list[str]:
        """Class names from the manifest (printable; empty when none were given at export)."""
        return list(self.spec.labels)

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        """The manifest's preprocessing (checked and bounded), as a dict, or None."""
        pre = self.spec.preprocessing
        return None if pre is None else pre.to_dict()

    @property
    def name(self) -> str:
        """The model name from the manifest (the directory name when absent)."""
        return self.spec.name or self.path.name

    def require_onnx(self) -> Path:
        """``model.onnx``, or a BundleError saying the bundle has none."""
        path = self.onnx_path
        if path is None:
            raise BundleError(f"Bundle {str(self.path)!r} has no model.onnx (files: "
                              f"{[f.name for f in self.spec.files]}); re-export it with "
                              f"formats including 'onnx'.")
        return path

    def read_checked(self, path: Path) -> bytes:
        """The bytes of the bundle's file ``path``, read once more and, in a checked bundle, checked
        as read against the manifest's size and sha256: a file replaced after :func:`load_bundle`
        checked it (a race by anyone who can write the directory) is refused, and what the caller
        uses is what was authenticated. Models are also refused above 2 GiB or beyond the memory
        this process can hold twice, before they are read.

        Raises:
            BundleError: the file is not the one the manifest lists (any more).
            InvalidModelError: a model too large to read here.
        """
        from edge_runtime.onnx_io import check_model_size

        entry = self.spec.file(path.name)
        checked = self.verified and entry is not None
        fd = _open_regular(path, "bundle file")
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if checked and size != entry.bytes:
                raise BundleError(f"{path.name} has {size} bytes, the manifest declares {entry.bytes}: it was "
                                  f"replaced after the bundle was checked; {_FIX}.")
            if path.suffix == ".onnx":
                check_model_size(size, repr(str(path)))
            data = handle.read()
        if checked and (actual := hashlib.sha256(data).hexdigest()) != entry.sha256:
            raise BundleError(f"{path.name} changed after the bundle was checked: sha256 {actual}, the "
                              f"manifest expects {entry.sha256}; {_FIX}.")
        return data

    def read_model(self, path: Path) -> HandedBytes:
        """:meth:`read_checked` of a model file (:meth:`require_onnx`, :attr:`int8_path`), handed to
        ``InferenceSession`` to own: nothing opens the model by its path again, onnxruntime
        included, so the model that runs is the one the checks authenticated."""
        from edge_runtime.onnx_io import HandedBytes

        return HandedBytes.read(self.read_checked, path)

    def warmup_feeds(self) -> list[dict[str, np.ndarray]] | None:
        """The first golden inputs (up to ``session.MAX_WARMUP_FEEDS``) as one-image feeds, for
        ``InferenceSession(warmup_feed=...)``.

        The engine measures layer densities on them at session creation (their median) and times
        its plans over all of them: the bundle's own data, not noise, and not one image. ``run``,
        ``warmup`` and ``profile`` pass the same feeds, so the engine's decision cache
        (:mod:`edge_runtime.engine.plancache`) filled by ``warmup`` serves the line. None when the
        bundle has no golden set or no declared input.
        """
        from edge_runtime.golden import warmup_feeds
        from edge_runtime.session import MAX_WARMUP_FEEDS

        path = self.golden_path
        if path is None or not self.spec.inputs:
            return None
        return warmup_feeds(path, self.spec.inputs[0].name, MAX_WARMUP_FEEDS, self.read_checked(path))

    def _file(self, name: str) -> Path | None:
        if self.spec.file(name) is None:
            return None
        path = self.path / name
        return path if self.verified or path.is_file() else None


def _open_regular(path: Path, what: str) -> int:
    """Open a regular, singly linked file without following symlinks; return its fd."""
    info = os.lstat(path)  # FileNotFoundError: the caller reports a missing file
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise BundleError(f"{what} {str(path)!r} is {kind}; a bundle holds only regular files. {_FIX}.")
    if info.st_nlink != 1:
        raise BundleError(f"{what} {str(path)!r} has {info.st_nlink} hard links; a bundle file must "
                          f"have exactly one (a hard link can alias a file outside the bundle). {_FIX}.")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    opened = os.fstat(fd)
    if (opened.st_ino, opened.st_dev) != (info.st_ino, info.st_dev) or not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise BundleError(f"{what} {str(path)!r} changed while it was opened; {_FIX}.")
    return fd


def _read_small(path: Path, limit: int, what: str) -> bytes:
    fd = _open_regular(path, what)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{what} {str(path)!r} is larger than {limit} bytes; {_FIX}.")
    return data


def _read_manifest_bytes(path: Path) -> bytes:
    if not path.is_dir():
        raise BundleError(f"Bundle {str(path)!r} is not a directory; pass the directory written "
                          f"by 'edge-runtime export' (with manifest.json inside).")
    try:
        return _read_small(path / MANIFEST, MAX_MANIFEST_BYTES, "manifest")
    except FileNotFoundError as exc:
        names = sorted(os.listdir(path))[:20]
        raise BundleError(f"Bundle {str(path)!r} has no {MANIFEST} (files: {names}); pass a bundle "
                          f"made by 'edge-runtime export'.") from exc
    except OSError as exc:
        raise BundleError(f"Cannot read {str(path / MANIFEST)!r}: {exc}. {_FIX}.") from exc


def _parse(data: bytes, source: str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"Cannot read {source!r}: {exc}. Copy the bundle again or re-export it.") from exc
    Manifest.from_json(doc, source)
    return doc


def read_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` and check it against the contract (not its digest or signature).

    Args:
        bundle_dir: the bundle directory.

    Returns:
        The manifest as a dict (its typed form: ``Manifest.from_json(result)``).

    Raises:
        BundleError: no directory, no/unreadable manifest, or any value the contract rejects.
    """
    path = Path(bundle_dir).expanduser()
    return _parse(_read_manifest_bytes(path), str(path / MANIFEST))


def manifest_digest(data: bytes) -> str:
    """The content of ``manifest.sha256``: the hex sha256 of the manifest's bytes and a newline."""
    return hashlib.sha256(data).hexdigest() + "\n"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_entry(folder: Path, entry: FileEntry) -> FileProblem | None:
    file = folder / entry.name
    try:
        fd = _open_regular(file, "bundle file")
    except FileNotFoundError:
        return FileProblem(entry.name, f"{entry.name} is listed in {folder / MANIFEST} but missing from "
                                       f"the bundle; {_FIX}.")
    except BundleError as exc:
        return FileProblem(entry.name, str(exc))
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > entry.bytes:  # never hash what cannot match: an 8 GB sparse file costs nothing
            return FileProblem(entry.name, f"{entry.name} has {size} bytes, the manifest declares "
                                           f"{entry.bytes}: it was replaced after export; {_FIX}.")
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual == entry.sha256 and size == entry.bytes:
        log.debug("%s: sha256 ok", file)
        return None
    sized = f" (size {size} bytes, expected {entry.bytes})" if size != entry.bytes else ""
    return FileProblem(entry.name, f"{entry.name} fails its checksum{sized}: sha256 {actual}, the manifest "
                                   f"expects {entry.sha256}. The file was modified or truncated after export "
                                   f"(an interrupted copy?); {_FIX}.")


def check_files(bundle_dir: str | Path, manifest: dict[str, Any] | Manifest) -> list[FileProblem]:
    """Check every listed file (type, links, size, sha256) and refuse unlisted ones.

    Args:
        bundle_dir: the bundle directory.
        manifest: its manifest (dict from :func:`read_manifest` or a :class:`Manifest`).

    Returns:
        One :class:`FileProblem` per bad, missing or unlisted file; empty when all match.
    """
    folder = Path(bundle_dir)
    spec = manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest, str(folder / MANIFEST))
    problems = [p for p in (_check_entry(folder, e) for e in spec.files) if p is not None]
    listed = {e.name for e in spec.files} | RESERVED_NAMES
    for name in sorted(os.listdir(folder)):
        if name not in listed:
            problems.append(FileProblem(name, f"{name!r} is in the bundle directory but not listed in "
                                              f"{MANIFEST}; a bundle holds only the files it lists. Remove "
                                              f"it, or {_FIX}."))
    return problems


def _manifest_problem(folder: Path, data: bytes, signed: bool) -> FileProblem | None:
    """Compare the manifest's bytes with ``manifest.sha256`` (required when unsigned)."""
    sidecar = folder / MANIFEST_DIGEST
    try:
        recorded = _read_small(sidecar, 256, "manifest digest").decode("ascii", "replace").strip()
    except FileNotFoundError:
        if signed:
            return None
        return FileProblem(MANIFEST_DIGEST, f"{MANIFEST_DIGEST} is missing: the manifest of an unsigned "
                                            f"bundle cannot be checked without it; {_FIX}.")
    except BundleError as exc:
        return FileProblem(MANIFEST_DIGEST, str(exc))
    actual = manifest_digest(data).strip()
    if recorded != actual:
        return FileProblem(MANIFEST, f"{MANIFEST} fails its checksum: sha256 {actual}, {MANIFEST_DIGEST} "
                                     f"expects {recorded[:64]!r}. The manifest (labels, preprocessing, file "
                                     f"digests) was modified after export; {_FIX}.")
    return None


def check_bundle(bundle_dir: str | Path, *, trust: TrustPolicy | None = None
                 ) -> tuple[LoadedBundle, list[FileProblem]]:
    """Read, authenticate and check a bundle; file problems are returned, not raised.

    Args:
        bundle_dir: the bundle directory.
        trust: the pinned keys (default: ``TrustPolicy.from_sources()``, i.e. the
            environment variable and the config directory).

    Returns:
        (the bundle, verified when there are no problems; the problems).

    Raises:
        BundleError: no directory, an unreadable or invalid manifest, or a signature that
            the policy refuses (bad, missing while keys are pinned, or by an unpinned key).
    """
    folder = Path(bundle_dir).expanduser()
    data = _read_manifest_bytes(folder)
    try:
        signature = _read_small(folder / SIGNATURE, 4096, "signature")
    except FileNotFoundError:
        signature = None
    policy = TrustPolicy.from_sources() if trust is None else trust
    result = verify_manifest(data, signature, policy, str(folder))  # the bytes, before parsing them
    if result.warning:
        log.warning("%s", result.warning)
    digest = _manifest_problem(folder, data, result.signer is not None)
    try:
        manifest = _parse(data, str(folder / MANIFEST))
    except BundleError:
        if digest is not None:  # a corrupted manifest: say so rather than why it does not parse
            raise BundleError(f"Bundle {str(folder)!r} failed verification: {digest.message()}") from None
        raise
    spec = Manifest.from_json(manifest, str(folder / MANIFEST))
    problems = [digest] if digest is not None else []
    problems += check_files(folder, spec)
    return LoadedBundle(folder, manifest, verified=not problems, spec=spec, trust=result), problems


def load_bundle(bundle_dir: str | Path, *, verify: bool = True, trust: TrustPolicy | None = None) -> LoadedBundle:
    """Read a bundle's manifest and (by default) authenticate it and verify every file.

    Args:
        bundle_dir: the bundle directory.
        verify: check signature, digests and files; False only for callers that report
            problems themselves (they should call :func:`check_bundle`).
        trust: the pinned keys (default: from the environment and the config directory).

    Returns:
        The :class:`LoadedBundle`.

    Raises:
        BundleError: a bad manifest, a refused signature, or a missing / modified /
            unsafe / unlisted file; the message names each file and the fix.
    """
    path = Path(bundle_dir).expanduser()
    if not verify:
        return LoadedBundle(path=path, manifest=read_manifest(path), verified=False)
    bundle, problems = check_bundle(path, trust=trust)
    if problems:
        raise BundleError(f"Bundle {str(path)!r} failed verification: "
                          + " ".join(p.message(path) for p in problems))
    return bundle
