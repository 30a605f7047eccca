"""`tally-audit FILE [--ledger NAME]`: verify a tally log offline. Exit 1 on a finding.

FILE is a tally SQLite file, or a JSON Lines export written by `tally export` (the way to audit
a PostgreSQL ledger offline); which one is told by the file's content.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from tally_audit.export import NotAnExport, is_sqlite, verify_export
from tally_audit.verify import Report, verify_sqlite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tally-audit", description=__doc__)
    parser.add_argument("db", help="a tally SQLite file, or a `tally export` .jsonl file")
    parser.add_argument("--ledger", help="verify only this ledger")
    args = parser.parse_args(argv)
    try:
        sqlite = is_sqlite(args.db)
    except OSError as error:
        parser.error(f"cannot read {args.db}: {error.strerror}")
    try:
        reports = (verify_sqlite if sqlite else verify_export)(args.db, args.ledger)
    except NotAnExport as error:
        print(f"FAIL {args.db}: neither a tally SQLite file nor a tally export ({error})")
        return 1
    except sqlite3.DatabaseError as error:  # no tally file, a damaged one, locked, I/O
        print(f"FAIL {args.db}: cannot be read as a tally SQLite file ({error})")
        return 1
    return _print(reports)


def _print(reports: list[Report]) -> int:
    failed = False
    for report in reports:
        if report.finding is None:
            print(f"ok {report.ledger}: {report.events} events, head {report.head_hash.hex()}")
        else:
            failed = True
            where = "head" if report.finding.seq is None else f"seq {report.finding.seq}"
            print(f"FAIL {report.ledger} at {where}: {report.finding.problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
