"""`tally checkpoint` and `tally signing-key create`: signed checkpoints of a ledger's head.

A checkpoint is kept outside the database (by finance, an auditor, a platform's archive):
`tally-audit FILE --public-key KEY.pub --checkpoint CP` then proves the log still holds the
events it names, unchanged (docs/log-format.md, "Signed checkpoints"). Registered into the
`tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter

from tally.api_keys import KeyRefused, check_ledger_name
from tally.bootstrap import open_engine
from tally.cli.new_ledger import is_new_database
from tally.cli.options import Common, Refusal, console, print_json, print_refusal, print_usage
from tally.verification import verify

signing_key_app = App(
    name="signing-key", help="Create the Ed25519 key that signs checkpoints (`tally checkpoint`)."
)


@signing_key_app.command(name="create")
def signing_key_create(path: str, /) -> int:
    """Write a new Ed25519 signing key to PATH (readable by its owner only) and its public
    key to PATH.pub. Give PATH to `tally checkpoint --signing-key`, PATH.pub to auditors
    (`tally-audit --public-key`). An existing file is never replaced."""
    # cryptography loads only for the commands that sign (25 ms every other command saves)
    from tally.audit.checkpoint import create_signing_key, load_signing_key, public_key_hex

    try:
        public = create_signing_key(Path(path))
    except FileExistsError as exists:
        return print_usage(f"{exists.filename or exists}: exists; a signing key is never replaced")
    except OSError as error:
        return print_usage(f"{path}: {error.strerror}")
    key = load_signing_key(Path(path))
    console.print(f"signing key {path}, public key {public} ({public_key_hex(key)})")
    return 0


def checkpoint(
    *,
    signing_key: Annotated[str, Parameter(env_var="TALLY_SIGNING_KEY")],
    out: str = "-",
    common: Common | None = None,
) -> int:
    """Verify the ledger as `tally verify` does, then sign its head: a checkpoint to keep
    outside the database, written to OUT (`-`: stdout; an existing file is never replaced).

    Exit status 0 signed, 1 not signed (no such ledger, or verification failed), 2 usage
    (a signing key that cannot be read, an OUT that exists), 4 not signed, verification
    inconclusive (written to faster than it could be verified: try again).
    """
    from tally.audit.checkpoint import SigningKeyError, load_signing_key, sign, statement

    common = common or Common()
    try:
        check_ledger_name(common.ledger)
        key = load_signing_key(Path(signing_key))
    except (KeyRefused, SigningKeyError) as refusal:
        return print_usage(str(refusal))
    if out != "-" and Path(out).exists():
        return print_usage(f"--out {out} exists: checkpoints are kept, never replaced")
    no_ledger = f"no ledger {common.ledger!r} in {common.db}"
    if is_new_database(common.db):  # a mistyped --db is not created to find that out
        return _not_signed(common, Refusal.LEDGER_UNKNOWN, "ledger", no_ledger)
    engine = open_engine(common.db)
    try:
        head = engine.store.head(common.ledger)
        if head is None:
            return _not_signed(common, Refusal.LEDGER_UNKNOWN, "ledger", no_ledger)
        if head.seq == 0:  # a checkpoint names an event (seq 1 or more): there is none
            detail = f"ledger {common.ledger!r} has no event yet"
            return _not_signed(common, Refusal.NOTHING_TO_SIGN, "ledger", detail)
        result = verify(engine, common.ledger)
    finally:
        engine.close()
        engine.store.close()
    if not result.ok:
        problem = f"verification failed: {result.problem or 'projections differ'}"
        _not_signed(common, Refusal.NOT_VERIFIED, "ledger", problem)
        return 4 if result.inconclusive else 1
    claim = statement(
        key,
        ledger=common.ledger,
        seq=result.events,  # the log verified from seq 1 without a gap: its head's seq
        hash_hex=result.head_hash,
        signed_at_us=time.time_ns() // 1_000,
    )
    document = json.dumps(sign(key, claim), indent=2, ensure_ascii=False) + "\n"
    if out == "-":
        sys.stdout.write(document)
        return 0
    try:
        _write_new(Path(out), document)
    except OSError as error:
        return print_usage(f"--out {out}: {error.strerror}")
    summary: dict[str, Any] = {**claim, "out": out}
    if common.json:
        print_json(summary)
    else:
        console.print(
            f"checkpoint of ledger {common.ledger}: seq {claim['seq']}, hash "
            f"{claim['hash'][:16]}…, signed by {claim['public_key'][:16]}… to {out}"
        )
    return 0


def _not_signed(common: Common, code: Refusal, field: str, problem: str) -> int:
    """Nothing was signed: one `{"error", "field", "detail"}` object with --json, as every
    refusal of the command line."""
    return print_refusal(code, field, f"not signed: {problem}", as_json=common.json)


def _write_new(path: Path, text: str) -> None:
    """Create `path` with `text`, failing if it exists (between the check and now, too)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)
