"""tally: an event-sourced, tamper-evident wallet ledger."""

__version__ = "0.1.0"
