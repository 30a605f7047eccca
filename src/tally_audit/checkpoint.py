"""Signed checkpoints against a log (docs/log-format.md, "Signed checkpoints").

Written from the format, like the rest of the auditor. Ed25519 is not in the standard
library: this module, and only this one, needs the `cryptography` package.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tally_audit.verify import Finding, Report, canonical

STATEMENT_KEYS = frozenset({"type", "v", "ledger", "seq", "hash", "signed_at_us", "public_key"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")


class CheckpointError(ValueError):
    """A checkpoint or public key file that does not hold what the format says."""


class Unreadable(CheckpointError):
    """A file that could not be read at all (missing, a directory, no permission)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint whose signature verified: `ledger` held `seq` events chained to `hash`."""

    source: str  # where it was read from, for the report
    ledger: str
    seq: int
    hash: bytes
    signed_at_us: int


def load_public_key(path: str) -> bytes:
    """The raw 32-byte Ed25519 public key in `path`: PEM (SubjectPublicKeyInfo, as `tally
    signing-key create` and `openssl pkey -pubout` write it) or 64 hex digits."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise Unreadable(f"cannot read {path}: {error.strerror}") from None
    text = data.strip().decode("ascii", errors="replace")
    if _HEX64.fullmatch(text):
        return bytes.fromhex(text)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CheckpointError(f"{path} holds no PEM public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def read_checkpoint(path: str, public_key: bytes) -> Checkpoint:
    """The checkpoint in `path`, once its signature verified with `public_key` (the key the
    auditor trusts: the one named inside the statement must be the same)."""
    try:
        document = json.loads(Path(path).read_bytes())
    except OSError as error:
        raise Unreadable(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} is not JSON ({error})") from None
    if not isinstance(document, dict) or document.keys() != {"checkpoint", "signature"}:
        raise CheckpointError(f"{path}: not a checkpoint (keys checkpoint and signature)")
    claim, signature = document["checkpoint"], document["signature"]
    if not isinstance(claim, dict) or claim.keys() != STATEMENT_KEYS:
        raise CheckpointError(f"{path}: the statement's keys are not the format's")
    if claim["type"] != "tally.checkpoint" or type(claim["v"]) is not int or claim["v"] != 1:
        raise CheckpointError(f"{path}: not a version 1 tally checkpoint")
    ledger, seq, hash_hex, signed_at_us = (
        claim["ledger"],
        claim["seq"],
        claim["hash"],
        claim["signed_at_us"],
    )
    if (
        not isinstance(ledger, str)
        or type(seq) is not int
        or seq < 1
        or not isinstance(hash_hex, str)
        or not _HEX64.fullmatch(hash_hex)
        or type(signed_at_us) is not int
        or not isinstance(claim["public_key"], str)
        or not isinstance(signature, str)
        or not _HEX128.fullmatch(signature)
    ):
        raise CheckpointError(f"{path}: malformed statement or signature")
    if claim["public_key"] != public_key.hex():
        raise CheckpointError(f"{path}: signed by another key than the trusted public key")
    try:
        signed = canonical(claim)
    except ValueError:  # text with no UTF-8 form (a lone surrogate escaped in the JSON)
        raise CheckpointError(f"{path}: the statement holds text that is not Unicode") from None
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(binascii.unhexlify(signature), signed)
    except InvalidSignature:
        raise CheckpointError(f"{path}: the signature does not verify") from None
    return Checkpoint(path, ledger, seq, bytes.fromhex(hash_hex), signed_at_us)


def check_checkpoint(report: Report, checkpoint: Checkpoint) -> None:
    """Record as the report's finding that the log no longer holds what `checkpoint` signed.

    `report` must come from a verification that marked `checkpoint.seq` (its `chain_at`);
    a finding made before is kept: it comes first in the log."""
    if report.finding is not None:
        return
    seq = checkpoint.seq
    if seq > report.head_seq:
        report.finding = Finding(
            report.ledger,
            seq,
            f"the log ends at seq {report.head_seq}, a signed checkpoint ({checkpoint.source}) "
            f"names seq {seq}: events were removed",
        )
    elif report.chain_at.get(seq) != checkpoint.hash:
        report.finding = Finding(
            report.ledger,
            seq,
            f"the chain differs from a signed checkpoint ({checkpoint.source}): events up to "
            "this seq were rewritten",
        )
