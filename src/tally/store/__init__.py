"""Storage adapters implementing `tally.engine.ports.Store`."""

# For comparing stored accounts with a replay (the same SQL on every store): an account whose
# kind, owner or currency columns (what balance reads select by) disagree with its name shows
# as another account.
ACCOUNT_AS_NAMED = (
    "CASE WHEN a.account = a.kind || ':' || a.owner || ':' || a.currency THEN a.account "
    "ELSE a.account || ' (columns say ' || a.kind || ':' || a.owner || ':' || a.currency || ')' "
    "END"
)


def with_accounts_as_named(account_rows: str) -> str:
    """`account_rows` (a `SELECT a.account, …` of the accounts table) showing accounts by
    `ACCOUNT_AS_NAMED`."""
    projected = account_rows.replace("SELECT a.account,", f"SELECT {ACCOUNT_AS_NAMED},", 1)
    if projected == account_rows:
        raise ValueError("not a SELECT a.account, … query")
    return projected
