"""Options every `tally` command shares, flattened into each command's flags."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Annotated, Any

from cyclopts import Parameter
from rich.console import Console


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
