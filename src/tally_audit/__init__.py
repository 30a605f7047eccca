"""tally's offline auditor: checks a ledger's log against docs/log-format.md alone.

It imports nothing from `tally` on purpose: it is written against the published format, so
a bug in the server cannot hide itself by agreeing with itself. Standard library only.
"""

from tally_audit.verify import Finding, Report, verify_events, verify_sqlite

__all__ = ["Finding", "Report", "verify_events", "verify_sqlite"]
