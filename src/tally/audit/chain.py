"""The hash chain: `hash_n = SHA-256(hash_{n-1} || SHA-256(bytes_n))`, from 32 zero bytes."""

from __future__ import annotations

import hashlib

GENESIS_HASH = bytes(32)


def link(previous_hash: bytes, event_bytes: bytes) -> bytes:
    """The chain hash of an event whose canonical bytes are `event_bytes`."""
    return hashlib.sha256(previous_hash + hashlib.sha256(event_bytes).digest()).digest()
