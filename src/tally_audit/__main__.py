"""`tally-audit FILE [--ledger NAME]`: verify a tally SQLite file offline. Exit 1 on a finding."""

from __future__ import annotations

import argparse
import sys

from tally_audit.verify import verify_sqlite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tally-audit", description=__doc__)
    parser.add_argument("db", help="path to a tally SQLite file")
    parser.add_argument("--ledger", help="verify only this ledger")
    args = parser.parse_args(argv)
    failed = False
    for report in verify_sqlite(args.db, args.ledger):
        if report.finding is None:
            print(f"ok {report.ledger}: {report.events} events, head {report.head_hash.hex()}")
        else:
            failed = True
            where = "head" if report.finding.seq is None else f"seq {report.finding.seq}"
            print(f"FAIL {report.ledger} at {where}: {report.finding.problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
