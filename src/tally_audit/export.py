"""Read a JSON Lines export (`tally export`, docs/log-format.md "Exporting a log"), streaming.

Line 1 is the head, `{"ledger": NAME, "head_seq": N, "head_hash": HEX}`; every further line
is one event, `{"seq": N, "body": TEXT, "hash": HEX}` (or `"body_hex"` for bytes that are not
UTF-8). The file is read one line at a time, so an export of any size is checked in constant
memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from typing import IO

from tally_audit.verify import MalformedRow, Report, verify_events

SQLITE_MAGIC = b"SQLite format 3\x00"
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_HEAD_KEYS = frozenset({"ledger", "head_seq", "head_hash"})


class NotAnExport(ValueError):
    """The file's first line is not an export's head line."""


def is_sqlite(path: str) -> bool:
    with open(path, "rb") as stream:
        return stream.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def verify_export(
    path: str, ledger: str | None = None, marks: Mapping[str, Collection[int]] | None = None
) -> list[Report]:
    """Verify the ledger held by the export at `path` (checked against `ledger` if given);
    `marks` as for `verify_sqlite`."""
    with open(path, "rb") as stream:
        name, head = read_head(stream)
        if ledger is not None and ledger != name:
            return [verify_events(ledger, (), None)]  # "the ledger has no head row"
        return [verify_events(name, read_events(stream), head, (marks or {}).get(name, ()))]


def read_head(stream: IO[bytes]) -> tuple[str, tuple[int, bytes]]:
    """The ledger's name and head from the first line."""
    line = stream.readline()
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to read
        raise NotAnExport("the first line is not JSON") from None
    if not isinstance(value, dict) or set(value) != _HEAD_KEYS:
        raise NotAnExport('the first line is not {"ledger", "head_seq", "head_hash"}')
    name, seq, hash_hex = value["ledger"], value["head_seq"], value["head_hash"]
    if not isinstance(name, str) or type(seq) is not int or seq < 0:
        raise NotAnExport("the head line's ledger or head_seq is malformed")
    if not isinstance(hash_hex, str) or not _HEX_HASH.fullmatch(hash_hex):
        raise NotAnExport("the head line's head_hash is not 64 lowercase hex digits")
    return name, (seq, bytes.fromhex(hash_hex))


def read_events(stream: IO[bytes]) -> Iterator[tuple[int, bytes, bytes]]:
    """`(seq, body, hash)` per line after the head; `MalformedRow` for a line that is not one."""
    for number, line in enumerate(stream, start=2):
        yield _event(number, line)


def _event(number: int, line: bytes) -> tuple[int, bytes, bytes]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
        raise MalformedRow(f"line {number} is not JSON: {error!r}") from None
    if not isinstance(value, dict):
        raise MalformedRow(f"line {number} is not a JSON object")
    seq = value.get("seq")
    if type(seq) is not int:
        raise MalformedRow(f"line {number} has no integer seq")
    keys = set(value)
    if keys == {"seq", "body", "hash"} and isinstance(value["body"], str):
        try:
            body = value["body"].encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedRow(f"line {number}: body is not valid Unicode text", seq) from None
    elif keys == {"seq", "body_hex", "hash"} and isinstance(value["body_hex"], str):
        try:
            body = bytes.fromhex(value["body_hex"])
        except ValueError:
            raise MalformedRow(f"line {number}: body_hex is not hex", seq) from None
    else:
        raise MalformedRow(f'line {number} is not {{"seq", "body", "hash"}}', seq)
    hash_hex = value["hash"]
    if not isinstance(hash_hex, str) or not _HEX_HASH.fullmatch(hash_hex):
        raise MalformedRow(f"line {number}: hash is not 64 lowercase hex digits", seq)
    return seq, body, bytes.fromhex(hash_hex)
