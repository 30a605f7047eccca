"""`tally-audit FILE [--ledger NAME] [--public-key KEY --checkpoint CP ...]`: verify a tally
log offline. Exit 1 on a finding, 2 on a usage error (a file that cannot be read).

FILE is a tally SQLite file, or a JSON Lines export written by `tally export` (the way to audit
a PostgreSQL ledger offline); which one is told by the file's content. Each `--checkpoint` is
a signed checkpoint (`tally checkpoint`) kept outside the database: its signature must verify
with the trusted `--public-key`, and the log must still hold the events it names, unchanged,
which catches what the chain alone cannot (the tail removed or rewritten with its head row).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from tally_audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    Unreadable,
    check_checkpoint,
    load_public_key,
    read_checkpoint,
)
from tally_audit.export import NotAnExport, is_sqlite, verify_export
from tally_audit.verify import Finding, Report, verify_sqlite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tally-audit", description=__doc__)
    parser.add_argument("db", help="a tally SQLite file, or a `tally export` .jsonl file")
    parser.add_argument("--ledger", help="verify only this ledger")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="a signed checkpoint the log must still hold (repeatable; needs --public-key)",
    )
    parser.add_argument(
        "--public-key", metavar="FILE", help="the trusted Ed25519 public key (PEM or hex)"
    )
    args = parser.parse_args(argv)
    checkpoints = _checkpoints(parser, args) if args.checkpoint else []
    if checkpoints is None:
        return 1
    marks: dict[str, set[int]] = {}
    for checkpoint in checkpoints:
        marks.setdefault(checkpoint.ledger, set()).add(checkpoint.seq)
    try:
        sqlite = is_sqlite(args.db)
    except OSError as error:
        parser.error(f"cannot read {args.db}: {error.strerror}")
    try:
        reports = (verify_sqlite if sqlite else verify_export)(args.db, args.ledger, marks)
    except NotAnExport as error:
        print(f"FAIL {args.db}: neither a tally SQLite file nor a tally export ({error})")
        return 1
    except sqlite3.DatabaseError as error:  # no tally file, a damaged one, locked, I/O
        print(f"FAIL {args.db}: cannot be read as a tally SQLite file ({error})")
        return 1
    if checkpoints:
        by_ledger = {report.ledger: report for report in reports}
        for checkpoint in checkpoints:
            report = by_ledger.get(checkpoint.ledger)
            if report is None:  # the whole ledger is gone (or the export is of another)
                report = Report(checkpoint.ledger)
                report.finding = Finding(
                    checkpoint.ledger,
                    checkpoint.seq,
                    f"a signed checkpoint ({checkpoint.source}) names this ledger at seq "
                    f"{checkpoint.seq}; {args.db} holds no log of it",
                )
                by_ledger[checkpoint.ledger] = report
                reports.append(report)
            check_checkpoint(report, checkpoint)
    return _print(reports, checkpoints)


def _checkpoints(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[Checkpoint] | None:
    """The checkpoints of `--checkpoint`, their signatures verified; None (after printing
    why) when one does not verify. Unreadable files are usage errors."""
    if args.public_key is None:
        parser.error("--checkpoint needs --public-key: the key whose signatures are trusted")
    try:
        public_key = load_public_key(args.public_key)
    except CheckpointError as error:
        parser.error(str(error))
    checkpoints = []
    for path in args.checkpoint:
        try:
            checkpoint = read_checkpoint(path, public_key)
        except Unreadable as error:
            parser.error(str(error))
        except CheckpointError as error:  # forged, altered, or signed by another key
            print(f"FAIL checkpoint {error}")
            return None
        if args.ledger is not None and checkpoint.ledger != args.ledger:
            parser.error(f"{path} is a checkpoint of ledger {checkpoint.ledger!r}, not --ledger")
        checkpoints.append(checkpoint)
    return checkpoints


def _print(reports: list[Report], checkpoints: list[Checkpoint]) -> int:
    failed = False
    for report in reports:
        if report.finding is None:
            held = sum(checkpoint.ledger == report.ledger for checkpoint in checkpoints)
            signed = f", {held} signed checkpoint(s) hold" if held else ""
            print(
                f"ok {report.ledger}: {report.events} events, head {report.head_hash.hex()}{signed}"
            )
        else:
            failed = True
            where = "head" if report.finding.seq is None else f"seq {report.finding.seq}"
            print(f"FAIL {report.ledger} at {where}: {report.finding.problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
