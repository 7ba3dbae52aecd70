"""``edge-runtime keys generate --out DIR``: make an Ed25519 key pair for signing bundles.

The private key (``NAME.key``, mode 0600) stays on the build machine and is passed to
``edge-runtime export --sign-key``; the public key (``NAME.pub``) goes to the devices
(``--trusted-key``, ``$EDGE_RUNTIME_TRUSTED_KEYS`` or ``~/.config/edge-runtime/trusted_keys/``).
See docs/trust.md.
"""
from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``keys generate``; sets ``func``."""
    keys = subparsers.add_parser(
        "keys", help="make the Ed25519 key pair that signs bundles", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  edge-runtime keys generate --out ~/.edge-keys\n"
               "  edge-runtime export mypkg.models:make_model ... --sign-key ~/.edge-keys/edge-runtime.key\n"
               "  edge-runtime run bundle/ images/ --trusted-key edge-runtime.pub   # on the device")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="write NAME.key (private, 0600) and NAME.pub into --out",
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             epilog="example:\n  edge-runtime keys generate --out ~/.edge-keys")
    gen.add_argument("--out", required=True, help="directory for the key pair (created if missing)")
    gen.add_argument("--name", default="edge-runtime", help="file stem (default edge-runtime)")
    gen.set_defaults(func=cmd_generate)
    return keys


def cmd_generate(args: argparse.Namespace) -> int:
    """Write the key pair and print both paths and the key id; returns 0."""
    from edge_runtime.trust import PublicKey, generate_keys

    private, public = generate_keys(args.out, args.name)
    print(f"wrote {private} (private: keep it on the build machine; export --sign-key {private})")
    print(f"wrote {public} (public, key id {PublicKey.load(public).key_id}: copy to devices, "
          f"--trusted-key {public})")
    return 0
