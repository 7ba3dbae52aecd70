"""Fuzz targets for what arrives from outside: model bytes, manifest.json, golden.npz.

Each target takes bytes and must end in success (True) or one of the project's own errors
(False, caught)
:class:`~edge_runtime.errors.EdgeRuntimeError`; anything else (IndexError, protobuf's
DecodeError, zipfile.BadZipFile, RecursionError, ...) escaping is a finding. Used by
tests/edge_runtime/test_fuzz.py (hypothesis, a few seconds) and scripts/fuzz_bundle.py
(random or atheris mutations, as long as you like).
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from edge_runtime.errors import EdgeRuntimeError
from tests.edge_runtime.bundle_factory import classifier, make_bundle, write_manifest

_SEED: dict[str, Any] = {}


def _seed_bundle() -> Path:
    if "bundle" not in _SEED:
        _SEED["bundle"] = make_bundle(Path(tempfile.mkdtemp(prefix="fuzz-seed-")) / "bundle")
    return _SEED["bundle"]


def seeds() -> dict[str, bytes]:
    """A valid input per target, the starting point of mutations."""
    bundle = _seed_bundle()
    return {"model": classifier().SerializeToString(), "manifest": (bundle / "manifest.json").read_bytes(),
            "golden": (bundle / "golden.npz").read_bytes()}


def fuzz_model(data: bytes) -> bool:
    """Load model bytes into an InferenceSession (parse, checks, graph, plan); True when accepted."""
    import edge_runtime

    try:
        edge_runtime.InferenceSession(data)
    except EdgeRuntimeError:
        return False
    return True


def fuzz_manifest(data: bytes) -> bool:
    """A bundle whose manifest.json is ``data`` (digest resealed, so the parser sees it)."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        bundle = shutil.copytree(_seed_bundle(), folder / "bundle")
        try:
            doc = json.loads(data)
            if isinstance(doc, dict):
                write_manifest(bundle, doc)
            else:
                raise ValueError
        except (ValueError, UnicodeDecodeError, RecursionError):
            (bundle / "manifest.json").write_bytes(data)
        return _load_bundle(bundle)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _load_bundle(bundle: Path) -> bool:
    from edge_runtime.bundle import load_bundle
    from edge_runtime.trust import TrustPolicy

    try:
        load_bundle(bundle, trust=TrustPolicy())
    except EdgeRuntimeError:
        return False
    return True


def fuzz_golden(data: bytes) -> bool:
    """golden.npz bytes through the safe loader; True when accepted."""
    from edge_runtime.golden import load_golden

    with tempfile.NamedTemporaryFile(suffix=".npz") as handle:
        handle.write(data)
        handle.flush()
        try:
            load_golden(handle.name)
        except EdgeRuntimeError:
            return False
    return True


TARGETS: dict[str, Callable[[bytes], bool]] = {
    "model": fuzz_model, "manifest": fuzz_manifest, "golden": fuzz_golden}

_JSON_VALUES: list[Any] = [None, True, 0, -1, 1e308, float("nan"), "", "../x", "\x1b[2J", [], {}, [[]] * 3,
                           [0.5, "a"], {"sha256": "0" * 64, "bytes": -1}, 2 ** 70, "A" * 300]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation: bit flips, byte overwrite, insert, delete, truncate, splice, or a JSON value swap."""
    buf = bytearray(data)
    kind = rng.randrange(7)
    if not buf or kind == 0:
        return bytes(buf[:rng.randrange(len(buf) + 1)])
    pos = rng.randrange(len(buf))
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 2:
        buf[pos:pos + 4] = rng.randbytes(4)
    elif kind == 3:
        buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
    elif kind == 4:
        del buf[pos:pos + rng.randint(1, 64)]
    elif kind == 5:
        buf[pos:pos + 2] = bytes([0xFF, rng.randrange(256)])  # large varints / lengths
    else:
        return _swap_json_value(data, rng)
    return bytes(buf)


def _swap_json_value(data: bytes, rng: random.Random) -> bytes:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data
    node = doc
    while isinstance(node, dict) and node:
        key = rng.choice(sorted(node, key=str))
        if rng.random() < 0.5 or not isinstance(node[key], (dict, list)):
            node[key] = rng.choice(_JSON_VALUES)
            break
        child = node[key]
        node = child if isinstance(child, dict) else (child[0] if child and isinstance(child[0], dict) else {})
    return json.dumps(doc).encode()
