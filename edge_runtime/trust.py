"""Ed25519 signatures over a bundle's manifest, and which keys a device trusts.

The manifest lists every file's sha256 and size, so a signature over its exact bytes
covers the whole bundle. The exporter writes ``manifest.sig`` (JSON: algorithm, key id,
base64 signature); the device pins trusted public keys from three places, all used
together: ``--trusted-key FILE`` flags, the ``EDGE_RUNTIME_TRUSTED_KEYS`` environment
variable (files or directories, separated by ``os.pathsep``) and the config directory
``$XDG_CONFIG_HOME/edge-runtime/trusted_keys/`` (``*.pub``).

Policy (docs/trust.md):

- a signature by a pinned key must verify; a bad one is always refused;
- a signature by a key that is not pinned is refused (``allow_unsigned`` downgrades it
  to a warning, like an unsigned bundle);
- an unsigned bundle is refused once any key is pinned, unless ``allow_unsigned``;
  with no key pinned it is accepted with a warning (development).

The crypto is ``cryptography``'s Ed25519 (the ``signing`` extra), imported only when a
signature or a pinned key is involved.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge_runtime.errors import BundleError, InvalidArgumentError

log = logging.getLogger(__name__)

KEYS_ENV = "EDGE_RUNTIME_TRUSTED_KEYS"
ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_BYTES = 16384
_INSTALL = 'install it with: pip install "edge-runtime[signing]" (or pip install cryptography)'


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise BundleError(f"bundle signatures need the 'cryptography' package, which is not "
                          f"importable ({exc}); {_INSTALL}.") from exc
    return ed25519


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/edge-runtime/trusted_keys`` (``~/.config/...`` by default)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edge-runtime" / "trusted_keys"


def key_id(raw: bytes) -> str:
    """A key's id: the first 16 hex digits of the sha256 of its 32 raw public bytes."""
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A pinned Ed25519 public key: its id, raw bytes and the file it came from."""

    key_id: str
    raw: bytes
    source: str

    @classmethod
    def load(cls, path: str | os.PathLike) -> PublicKey:
        """Read a PEM public key written by ``edge-runtime keys generate``.

        Raises:
            BundleError: unreadable, not PEM, or not an Ed25519 key.
        """
        from cryptography.hazmat.primitives import serialization

        ed25519 = _crypto()
        path = Path(path).expanduser()
        try:
            data = path.read_bytes()[:MAX_KEY_BYTES]
            key = serialization.load_pem_public_key(data)
        except (OSError, ValueError, TypeError) as exc:
            raise BundleError(f"trusted key {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                              f"expected the PEM .pub file written by 'edge-runtime keys generate'.") from exc
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise BundleError(f"trusted key {str(path)!r} is a {type(key).__name__}; expected an Ed25519 "
                              f"public key ('edge-runtime keys generate').")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key_id(raw), raw, str(path))


def _key_files(entry: str | os.PathLike) -> list[Path]:
    path = Path(entry).expanduser()
    return sorted(path.glob("*.pub")) if path.is_dir() else [path]


@dataclass(frozen=True)
class TrustPolicy:
    """Which keys a device trusts and whether unsigned bundles are let through.

    Example:
        >>> TrustPolicy().keys, TrustPolicy(allow_unsigned=True).allow_unsigned
        ((), True)
    """

    keys: tuple[PublicKey, ...] = ()
    allow_unsigned: bool = False

    @classmethod
    def from_sources(cls, key_paths: Sequence[str | os.PathLike] = (), *, allow_unsigned: bool = False,
                     environ: Mapping[str, str] | None = None) -> TrustPolicy:
        """Pin the keys of ``key_paths`` (flags), the environment variable and the config dir.

        Args:
            key_paths: public key files or directories of ``*.pub`` (``--trusted-key``).
            allow_unsigned: accept unsigned bundles and unpinned signers with a warning.
            environ: the environment (default ``os.environ``).

        Returns:
            The policy.

        Raises:
            BundleError: a named key file is missing or not an Ed25519 public key.
        """
        env = os.environ if environ is None else environ
        entries: list[str | os.PathLike] = list(key_paths)
        entries += [p for p in env.get(KEYS_ENV, "").split(os.pathsep) if p]
        files = [f for e in entries for f in _key_files(e)]
        folder = config_dir(env)
        if folder.is_dir():
            files += sorted(folder.glob("*.pub"))
        keys: dict[str, PublicKey] = {}
        for file in files:
            key = PublicKey.load(file)
            keys.setdefault(key.key_id, key)
        return cls(tuple(keys.values()), allow_unsigned)


@dataclass(frozen=True)
class TrustResult:
    """How a bundle's manifest was authenticated: ``signer`` key id or None, and a warning."""

    signer: str | None
    warning: str | None = None


def add_trust_flags(parser: Any) -> None:
    """``--trusted-key`` / ``--allow-unsigned`` on an argparse parser: every command that opens a bundle
    (run, validate, warmup, profile) takes the same two, and :func:`policy_from_args` reads them."""
    parser.add_argument("--trusted-key", action="append", default=[], metavar="FILE",
                        help="Ed25519 public key (.pub, or a folder of them) whose signatures are trusted; "
                             "repeatable; adds to $EDGE_RUNTIME_TRUSTED_KEYS and "
                             "~/.config/edge-runtime/trusted_keys/")
    parser.add_argument("--allow-unsigned", action="store_true",
                        help="accept an unsigned bundle (or one signed by an unpinned key) with a warning")


def policy_from_args(args: Any) -> TrustPolicy:
    """The :class:`TrustPolicy` of :func:`add_trust_flags`' flags (plus the environment and config folder)."""
    return TrustPolicy.from_sources(args.trusted_key, allow_unsigned=args.allow_unsigned)


def verify_manifest(manifest: bytes, signature: bytes | None, policy: TrustPolicy, where: str) -> TrustResult:
    """Apply ``policy`` to a manifest's bytes and its ``manifest.sig`` (None: unsigned).

    Args:
        manifest: the exact bytes of manifest.json.
        signature: the bytes of manifest.sig, or None when the bundle has none.
        policy: the pinned keys.
        where: the bundle path, named in messages.

    Returns:
        The :class:`TrustResult` (a warning for an accepted unsigned bundle).

    Raises:
        BundleError: a bad signature, a signer that is not pinned, or an unsigned bundle
            while keys are pinned (unless ``allow_unsigned``).
    """
    pinned = ", ".join(f"{k.key_id} ({k.source})" for k in policy.keys) or "none"
    if signature is None:
        if policy.allow_unsigned or not policy.keys:
            why = "--allow-unsigned" if policy.allow_unsigned else "no trusted key is pinned (development)"
            return TrustResult(None, f"bundle {where} is NOT signed (no manifest.sig); accepted because "
                                     f"{why}. Sign it with 'edge-runtime export --sign-key KEY'.")
        raise BundleError(f"bundle {where} is not signed (no manifest.sig), but trusted keys are pinned "
                          f"[{pinned}]; re-export it with --sign-key, or pass --allow-unsigned to run it anyway.")
    algorithm, signer, sig = _parse_signature(signature, where)
    key = next((k for k in policy.keys if k.key_id == signer), None)
    if key is None:
        if policy.allow_unsigned:
            return TrustResult(None, f"bundle {where} is signed by key {signer}, which is not pinned; "
                                     f"accepted as unsigned because --allow-unsigned.")
        raise BundleError(f"{where}/manifest.sig: signed by key {signer}, which is not among the trusted keys "
                          f"[{pinned}]; pin the signer's public key with --trusted-key FILE, {KEYS_ENV} or "
                          f"{config_dir()}, or re-export with a trusted key.")
    from cryptography.exceptions import InvalidSignature

    public = _crypto().Ed25519PublicKey.from_public_bytes(key.raw)
    try:
        public.verify(sig, manifest)
    except InvalidSignature as exc:
        raise BundleError(f"{where}/manifest.json does not match its signature by trusted key {signer} "
                          f"({key.source}): the manifest was modified after signing. Copy the bundle "
                          f"again from the build machine or re-export it.") from exc
    return TrustResult(signer)


def _parse_signature(data: bytes, where: str) -> tuple[str, str, bytes]:
    try:
        doc = json.loads(data[:MAX_SIGNATURE_BYTES].decode("utf-8"))
        algorithm, signer = doc["algorithm"], doc["key_id"]
        sig = base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}/manifest.sig is malformed ({type(exc).__name__}: {exc}); expected "
                          f'{{"algorithm": "ed25519", "key_id": HEX, "signature": BASE64}}. '
                          f"Re-export the bundle with --sign-key.") from exc
    if algorithm != ALGORITHM or not isinstance(signer, str) or len(sig) != 64:
        raise BundleError(f"{where}/manifest.sig has algorithm={algorithm!r}, key_id={signer!r:.40} and a "
                          f"{len(sig)}-byte signature; expected ed25519 with 64 bytes. Re-export with --sign-key.")
    return algorithm, signer, sig


def sign_manifest(manifest: bytes, private_key: str | os.PathLike) -> bytes:
    """The ``manifest.sig`` content: an Ed25519 signature of ``manifest`` by ``private_key``.

    Raises:
        InvalidArgumentError: the key file is missing, unreadable or not an Ed25519 private key.
    """
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    path = Path(private_key).expanduser()
    try:
        key = serialization.load_pem_private_key(path.read_bytes()[:MAX_KEY_BYTES], password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"--sign-key {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                                   f"expected the private key written by 'edge-runtime keys generate'.") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidArgumentError(f"--sign-key {str(path)!r} is a {type(key).__name__}; expected an Ed25519 "
                                   f"private key ('edge-runtime keys generate --out DIR').")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    doc = {"algorithm": ALGORITHM, "key_id": key_id(raw),
           "signature": base64.b64encode(key.sign(manifest)).decode("ascii")}
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def generate_keys(out_dir: str | os.PathLike, name: str = "edge-runtime") -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``NAME.key`` (PEM, mode 0600) and ``NAME.pub`` (PEM).

    Args:
        out_dir: the directory (created if missing).
        name: the file stem.

    Returns:
        (private key path, public key path).

    Raises:
        InvalidArgumentError: either file already exists.
    """
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    folder = Path(out_dir).expanduser()
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise InvalidArgumentError(f"{str(path)!r} already exists; choose another --out directory or "
                                       f"--name (an existing key is never overwritten).")
    folder.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    secret = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public
