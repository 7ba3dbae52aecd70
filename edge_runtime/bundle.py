"""Load a deployment bundle on the device: read the manifest, verify every file, locate models.

The bundle format is documented in docs/bundle.md. :func:`load_bundle` checks the
manifest's ``format_version`` and the sha256 of every file it lists *before* anything
runs, so a truncated or swapped model is reported as such and never executed.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import BundleError

log = logging.getLogger(__name__)

SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class FileProblem:
    """One listed file that is missing or whose sha256 differs from the manifest's."""

    name: str
    expected_sha256: str
    actual_sha256: str | None  # None: the file is missing
    expected_bytes: int | None
    actual_bytes: int | None

    def message(self, bundle: Path) -> str:
        """A sentence naming the file, the hashes and the fix."""
        if self.actual_sha256 is None:
            return (f"{self.name} is listed in {bundle / MANIFEST} but missing from the bundle; "
                    f"copy the whole bundle directory again or re-export it.")
        size = ""
        if self.expected_bytes is not None and self.actual_bytes != self.expected_bytes:
            size = f" (size {self.actual_bytes} bytes, expected {self.expected_bytes})"
        return (f"{self.name} fails its checksum{size}: sha256 {self.actual_sha256}, the manifest "
                f"expects {self.expected_sha256}. The file was modified or truncated after export "
                f"(an interrupted copy?); copy the bundle again or re-export it.")


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle directory whose manifest was read and whose files were checked.

    Example:
        >>> b = load_bundle("out/bundle")  # doctest: +SKIP
        >>> b.onnx_path, b.labels, b.preprocessing["input_size"]  # doctest: +SKIP
        (PosixPath('out/bundle/model.onnx'), ['ok', 'defect'], [32, 32])
    """

    path: Path
    manifest: dict[str, Any]
    verified: bool

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
        """``golden.npz`` (x, y, y_0..., output_names) when the bundle has one."""
        return self._file("golden.npz")

    @property
    def labels(self) -> list[str]:
        """Class names from the manifest (empty when none were given at export)."""
        return [str(v) for v in self.manifest.get("labels") or []]

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        """The manifest's preprocessing dict (docs/bundle.md), or None."""
        return self.manifest.get("preprocessing")

    @property
    def name(self) -> str:
        """The model name from the manifest (the directory name when absent)."""
        return str(self.manifest.get("name") or self.path.name)

    def require_onnx(self) -> Path:
        """``model.onnx``, or a BundleError saying the bundle has none."""
        path = self.onnx_path
        if path is None:
            raise BundleError(f"Bundle {str(self.path)!r} has no model.onnx (files: "
                              f"{sorted(self.manifest.get('files', {}))}); re-export it with "
                              f"formats including 'onnx'.")
        return path

    def _file(self, name: str) -> Path | None:
        path = self.path / name
        return path if name in self.manifest.get("files", {}) and path.is_file() else None


def read_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` (format version, ``files`` entries).

    Args:
        bundle_dir: the bundle directory.

    Returns:
        The manifest as a dict.

    Raises:
        BundleError: no directory, no/unreadable manifest, an unsupported
            ``format_version`` or a malformed ``files`` table.
    """
    path = Path(bundle_dir).expanduser()
    if not path.is_dir():
        raise BundleError(f"Bundle {str(path)!r} is not a directory; pass the directory written "
                          f"by 'edge-runtime export' (with manifest.json inside).")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"Bundle {str(path)!r} has no {MANIFEST} (files: "
                          f"{sorted(p.name for p in path.iterdir())}); pass a bundle made by "
                          f"'edge-runtime export'.") from exc
    except (OSError, ValueError) as exc:
        raise BundleError(f"Cannot read {str(path / MANIFEST)!r}: {exc}. Copy the bundle again "
                          f"or re-export it.") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{str(path / MANIFEST)!r} holds a {type(manifest).__name__}, expected a "
                          f"JSON object; re-export the bundle.")
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(f"{str(path / MANIFEST)!r} has format_version={version!r}; this "
                          f"edge-runtime reads {list(SUPPORTED_FORMAT_VERSIONS)}. Upgrade "
                          f"edge-runtime on the device or re-export with a matching version.")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
        raise BundleError(f"{str(path / MANIFEST)!r}: 'files' must map each file name to "
                          f"{{'sha256': ..., 'bytes': ...}}; got {files!r:.200}. Re-export the bundle.")
    return manifest


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(bundle_dir: str | Path, manifest: dict[str, Any]) -> list[FileProblem]:
    """Hash every file the manifest lists; return the missing or mismatching ones.

    Args:
        bundle_dir: the bundle directory.
        manifest: its manifest (from :func:`read_manifest`).

    Returns:
        One :class:`FileProblem` per bad file, empty when all match.
    """
    path = Path(bundle_dir)
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        file = path / name
        expected_bytes = entry.get("bytes")
        if not file.is_file():
            problems.append(FileProblem(name, entry["sha256"], None, expected_bytes, None))
            continue
        actual = sha256_of(file)
        if actual != entry["sha256"].lower():
            problems.append(FileProblem(name, entry["sha256"], actual, expected_bytes,
                                        file.stat().st_size))
        else:
            log.debug("%s: sha256 ok", file)
    return problems


def load_bundle(bundle_dir: str | Path, *, verify: bool = True) -> LoadedBundle:
    """Read a bundle's manifest and (by default) verify every file's sha256.

    Args:
        bundle_dir: the bundle directory.
        verify: hash the files; False only for callers that report problems themselves
            (they should call :func:`check_files`).

    Returns:
        The :class:`LoadedBundle`.

    Raises:
        BundleError: a bad manifest, or a missing / modified / truncated file; the message
            names each file with its expected and actual sha256 and the fix.
    """
    path = Path(bundle_dir).expanduser()
    manifest = read_manifest(path)
    if verify:
        problems = check_files(path, manifest)
        if problems:
            raise BundleError(f"Bundle {str(path)!r} failed verification: "
                              + " ".join(p.message(path) for p in problems))
    return LoadedBundle(path=path, manifest=manifest, verified=verify)
