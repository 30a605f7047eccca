"""Options every `tally` command shares, flattened into each command's flags, and the way
every command prints its answer or its refusal."""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass
from typing import Annotated, Any

from cyclopts import Parameter
from rich.console import Console
from rich.text import Text

from tally import views


@Parameter(name="*")
@dataclass(kw_only=True)
class Database:
    """`--db` and `--json`: for commands that act on a whole database (ledgers, keys, serve)."""

    db: Annotated[str, Parameter(env_var="TALLY_DB")] = "tally.db"
    "A SQLite file (created if missing) or a postgresql:// URL."
    json: bool = False
    "Print JSON instead of text."


@Parameter(name="*")
@dataclass(kw_only=True)
class Common(Database):
    """`--db`, `--ledger` and `--json`: for commands that act on one ledger."""

    ledger: str = "default"
    "The ledger (a tenant's book)."


# The command's answer, and everything else. User values print as typed: no Rich markup or
# emoji codes read in them (styled words are `rich.text.Text`).
console = Console(markup=False, emoji=False)
errors = Console(stderr=True, markup=False, emoji=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


class Refusal(enum.StrEnum):
    """The command line's own refusal codes, beside the ledger's (`Rejection`): what a
    command refuses before any ledger rule could look at it (exit status 1)."""

    LEDGER_UNKNOWN = "ledger_unknown"  # read, exported or keyed: a ledger nobody created
    LEDGER_INVALID = "ledger_invalid"  # `ledger create` with a name that cannot be one
    SCOPE_INVALID = "scope_invalid"
    KEY_UNKNOWN = "key_unknown"
    NOTHING_TO_SIGN = "nothing_to_sign"  # `checkpoint` of a ledger with no event yet
    NOT_VERIFIED = "not_verified"  # `checkpoint` of a ledger that does not verify


def print_usage(problem: str) -> int:
    """Say that the command was given wrongly (one line on stderr); returns the exit
    status, 2."""
    errors.print(Text.assemble(("usage", "red"), f" {problem}"))
    return 2


def period_us(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """`--since` and `--until` (RFC 3339 with a zone; until exclusive) in microseconds since
    the Unix epoch, either None when not given; ValueError saying what is wrong."""
    try:
        since_us = None if since is None else views.instant_us(since)
        until_us = None if until is None else views.instant_us(until)
    except ValueError as error:
        raise ValueError(f"--since/--until: {error}") from None
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise ValueError("--since must come before --until")
    return since_us, until_us


def print_refusal(code: str, field: str, detail: str, *, as_json: bool) -> int:
    """Say that the command was refused: with `--json`, one object on stdout,
    `{"error": CODE, "field": FIELD, "detail": TEXT}`; else one line on stderr. Returns the
    exit status, 1."""
    if as_json:
        print_json({"error": code, "field": field, "detail": detail})
    else:
        errors.print(Text.assemble(("refused", "red"), f" {code}: {detail} ({field})"))
    return 1
