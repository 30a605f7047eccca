"""tally's offline auditor: checks a ledger's log against docs/log-format.md alone.

It imports nothing from `tally` on purpose: it is written against the published format, so
a bug in the server cannot hide itself by agreeing with itself. Standard library only, but
for the Ed25519 signatures of checkpoints (`tally_audit.checkpoint`, with `cryptography`). It
reads a tally SQLite file, or a JSON Lines export (`tally export`) of any store's ledger.
"""

from tally_audit.export import verify_export
from tally_audit.verify import Finding, MalformedRow, Report, verify_events, verify_sqlite

__all__ = ["Finding", "MalformedRow", "Report", "verify_events", "verify_export", "verify_sqlite"]
