"""API keys: who may touch which ledger, and how.

A key is bound to exactly one ledger and holds one or more scopes. `read` lets it query,
`write` lets it record recharges, expenses, refunds and batches, `admin` lets it do
everything, manual adjustments included. The secret is shown once, when the key is made;
only its SHA-256 is stored (secrets are 256 random bits, so a slow hash adds nothing).

Secrets look like `tally_<key id>_<43 url-safe characters>`; the key id (`key_<16 hex>`) is
what the log records as the `actor` of every event the key writes.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

ledger_name_length_max = 64
secret_length_max = 128  # longer Authorization values are refused unhashed

_LEDGER_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{ledger_name_length_max - 1}}}")


class Scope(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """A key as the server knows it (never the secret)."""

    key_id: str
    ledger: str
    scopes: frozenset[Scope]
    created_at_us: int
    revoked_at_us: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at_us is not None

    def allows(self, scope: Scope) -> bool:
        """`admin` implies every scope; `read` and `write` are separate grants."""
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedKey:
    """A freshly made key and its secret, which exists only here."""

    key: ApiKey
    secret: str


class KeyRefused(Exception):
    """A key operation refused: unknown ledger, bad name, unknown key."""


def check_ledger_name(name: str) -> None:
    if _LEDGER_NAME.fullmatch(name) is None:
        raise KeyRefused(
            f"ledger names are 1 to {ledger_name_length_max} characters of a-z, 0-9, _ and -, "
            f"starting with a letter or digit; got {name!r}"
        )


def new_secret() -> tuple[str, str]:
    """A fresh `(key_id, secret)`."""
    key_id = f"key_{secrets.token_hex(8)}"
    return key_id, f"tally_{key_id}_{secrets.token_urlsafe(32)}"


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(values: list[str] | tuple[str, ...]) -> frozenset[Scope]:
    if not values:
        raise KeyRefused("a key needs at least one scope: read, write or admin")
    try:
        return frozenset(Scope(value) for value in values)
    except ValueError:
        raise KeyRefused(f"scopes are read, write and admin; got {list(values)}") from None


def scopes_text(scopes: frozenset[Scope]) -> str:
    """How a key store keeps scopes: space-separated and sorted, "admin read write"."""
    return " ".join(sorted(scope.value for scope in scopes))


def key_from_row(row: tuple[object, ...]) -> ApiKey:
    """An `ApiKey` from a stored row `(key_id, ledger, scopes, created_at_us, revoked_at_us)`."""
    key_id, ledger, scopes, created_at_us, revoked_at_us = row
    return ApiKey(
        key_id=str(key_id),
        ledger=str(ledger),
        scopes=frozenset(Scope(s) for s in str(scopes).split()),
        created_at_us=int(str(created_at_us)),
        revoked_at_us=None if revoked_at_us is None else int(str(revoked_at_us)),
    )


class KeyStore(Protocol):
    """Where keys live. Implementations: store/sqlite_keys.py, store/postgres_keys.py."""

    def ledger_exists(self, ledger: str) -> bool: ...

    def create(self, ledger: str, scopes: frozenset[Scope]) -> IssuedKey:
        """Make a key for an existing ledger; raises `KeyRefused` when it does not exist."""
        ...

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent); raises `KeyRefused` when there is no such key."""
        ...

    def keys(self, ledger: str) -> list[ApiKey]: ...

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key whose secret this is, or None (unknown or revoked)."""
        ...

    def close(self) -> None: ...
