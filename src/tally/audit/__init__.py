"""Canonical bytes and the hash chain: the only code that serializes events for hashing."""
