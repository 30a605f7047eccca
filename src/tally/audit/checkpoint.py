"""Signed checkpoints, format 1 (docs/log-format.md, "Signed checkpoints").

A checkpoint is a ledger's head, `(seq, hash)`, signed with the operator's Ed25519 key. Kept
outside the database, it lets an auditor prove that the log still holds those events
unchanged: the one thing the chain alone cannot show is a tail removed, or rewritten and
re-chained, together with the head row. tally signs; `tally_audit` checks, with its own code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.audit.canonical import dumps

CHECKPOINT_TYPE = "tally.checkpoint"
CHECKPOINT_VERSION = 1


class SigningKeyError(ValueError):
    """A signing key file that cannot be read, or holds no Ed25519 private key."""


def create_signing_key(path: Path) -> Path:
    """Write a new Ed25519 private key to `path` (PEM, PKCS #8, readable by its owner only)
    and its public key beside it (`path` + ".pub", PEM); returns the public key's path.
    Refuses to replace either file: a lost signing key cannot be recovered."""
    public_path = path.with_name(path.name + ".pub")
    if public_path.exists():
        raise FileExistsError(f"{public_path} exists")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(private)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file `path` (as `create_signing_key` or
    `openssl genpkey -algorithm ed25519` writes it)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SigningKeyError(f"cannot read {path}: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise SigningKeyError(f"{path} holds no unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def statement(
    key: Ed25519PrivateKey, *, ledger: str, seq: int, hash_hex: str, signed_at_us: int
) -> dict[str, Any]:
    """What a checkpoint asserts: `ledger` held `seq` events, the last chained to `hash_hex`."""
    return {
        "type": CHECKPOINT_TYPE,
        "v": CHECKPOINT_VERSION,
        "ledger": ledger,
        "seq": seq,
        "hash": hash_hex,
        "signed_at_us": signed_at_us,
        "public_key": public_key_hex(key),
    }


def sign(key: Ed25519PrivateKey, claim: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint file's object: the statement and the Ed25519 signature of its
    canonical bytes."""
    return {"checkpoint": claim, "signature": key.sign(dumps(claim)).hex()}
