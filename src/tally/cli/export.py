"""`tally export --out FILE`: a ledger's log as JSON Lines, for `tally-audit FILE` offline.

The first line is the head, `{"ledger": NAME, "head_seq": N, "head_hash": HEX}`; then one line
per event in `seq` order, `{"seq": N, "body": TEXT, "hash": HEX}`, where TEXT is the event's
canonical bytes decoded as UTF-8 (docs/log-format.md, "Exporting a log"). The log is read
page by page, never whole. Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tally.bootstrap import open_store
from tally.cli.new_ledger import is_new_database
from tally.cli.options import Common, Refusal, errors, print_refusal, print_usage
from tally.domain.limits import INT64_MIN
from tally.engine.ports import EventRow, Head, Store

page_events = 5_000


@dataclass(frozen=True, slots=True)
class Exported:
    ledger: str
    events: int
    head: Head


def head_line(ledger: str, head: Head) -> str:
    return _line({"ledger": ledger, "head_seq": head.seq, "head_hash": head.hash.hex()})


def event_line(row: EventRow) -> str:
    if type(row.body) is not bytes or type(row.hash) is not bytes:  # a SQLite column edited
        # No line the auditor reads as an event: it reports this seq
        return _line({"seq": row.seq, "not_stored_as_bytes": "body or hash"})
    try:
        body: dict[str, object] = {"body": row.body.decode("utf-8")}
    except UnicodeDecodeError:
        # Not the canonical encoding (which is UTF-8): carry the bytes exactly, so that the
        # auditor, not the exporter, is the one to report it.
        body = {"body_hex": row.body.hex()}
    return _line({"seq": row.seq, **body, "hash": row.hash.hex()})


def _line(value: dict[str, object]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def log_rows(store: Store, ledger: str, head: Head) -> Iterator[EventRow]:
    """Every event up to `head.seq`, page by page; and what lies beyond it, when no head does.

    The export is the log as of `head`: events committed while it runs (a later head covers
    them) are left out. Rows past the head that the current head row does not cover either
    were not put there by a commit, so they are exported for the auditor to see.
    """
    after = INT64_MIN  # every row: one slipped in below seq 1 is for the auditor to see
    beyond_checked = False
    while True:
        page = store.events(ledger, after_seq=after, limit=page_events)
        for row in page:
            if row.seq > head.seq and not beyond_checked:
                current = store.head(ledger)
                if current is not None and current.seq >= row.seq:
                    return  # appended by a writer since the export began
                beyond_checked = True
            yield row
        if len(page) < page_events:
            return
        after = page[-1].seq


def write_export(store: Store, ledger: str, out: IO[str]) -> Exported | None:
    """Write `ledger`'s export to `out`; None (nothing written) if there is no such ledger."""
    head = store.head(ledger)
    if head is None:
        return None
    out.write(head_line(ledger, head))
    events = 0
    for row in log_rows(store, ledger, head):
        out.write(event_line(row))
        events += 1
    return Exported(ledger, events, head)


def export(*, out: str, options: Common | None = None) -> int:
    """Write the ledger's log as JSON Lines to OUT (`--out=-`: stdout), for `tally-audit OUT`."""
    options = options or Common()
    if out != "-" and _is_the_database(Path(out), options.db):
        return print_usage(f"--out {out} is the ledger's own database: name another file")
    if is_new_database(options.db):  # no ledger in it: not created to find that out
        return _no_ledger_refused(options)
    store = open_store(options.db)
    try:
        if out == "-":
            exported = write_export(store, options.ledger, sys.stdout)
        else:
            exported = _export_to_file(store, options.ledger, Path(out))
    except OSError as error:  # --out names a place that cannot be written
        return print_usage(f"--out {out}: {error.strerror}")
    finally:
        store.close()
    if exported is None:
        return _no_ledger_refused(options)
    summary = {
        "ledger": exported.ledger,
        "events": exported.events,
        "head_seq": exported.head.seq,
        "head_hash": exported.head.hash.hex(),
        "out": out,
    }
    if options.json:
        # With `--out -` the export itself is on stdout: the summary goes to stderr.
        (sys.stderr if out == "-" else sys.stdout).write(json.dumps(summary, indent=2) + "\n")
    elif out != "-":
        errors.print(
            f"exported ledger {exported.ledger}: {exported.events} events, head seq "
            f"{exported.head.seq} ({exported.head.hash.hex()[:16]}…) to {out}"
        )
    return 0


def _no_ledger_refused(options: Common) -> int:
    detail = f"no ledger {options.ledger!r} in {options.db}"
    return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", detail, as_json=options.json)


def _is_the_database(out: Path, db: str) -> bool:
    """Whether writing `out` would replace the SQLite file `db` (or its WAL or index)."""
    if "://" in db:
        return False
    target = out.resolve()
    return any(target == Path(db + suffix).resolve() for suffix in ("", "-wal", "-shm", "-journal"))


def _export_to_file(store: Store, ledger: str, path: Path) -> Exported | None:
    """Write next to `path` and rename into place: never a half-written export under its name."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as stream:
            exported = write_export(store, ledger, stream)
        if exported is None:
            partial.unlink()
        else:
            os.replace(partial, path)
        return exported
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
