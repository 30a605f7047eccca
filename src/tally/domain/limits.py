"""Every bound tally enforces, in one place. Units last in names."""

from __future__ import annotations

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

amount_max = INT64_MAX  # a single amount, in minor units
timestamp_us_max = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z: what views can show
identifier_length_max = 128  # user, order, merchant, gateway and transaction ids
idempotency_key_length_max = 255
actor_length_max = 255  # who sent a command: an API key id, an operator, "cli"
orders_per_expense_max = 100
postings_per_transfer_max = 100  # as many legs as an expense of 50 orders
metadata_entries_max = 32
metadata_bytes_max = 4096  # UTF-8 bytes of all keys and values together
reason_bytes_max = 1024
batch_commands_max = 1000  # commands one writer decides and commits together


def printable_within(text: object, length_max: int) -> bool:
    """Whether `text` is 1 to `length_max` printable characters (keys and actors)."""
    return type(text) is str and 0 < len(text) <= length_max and text.isprintable()
