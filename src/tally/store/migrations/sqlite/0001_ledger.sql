-- The log, its head, and the projections written in the same transaction as the events.

CREATE TABLE ledgers (
    name          TEXT    PRIMARY KEY,
    seq           INTEGER NOT NULL,  -- the head: last committed seq (0: empty)
    hash          BLOB    NOT NULL,  -- chain hash at seq (32 zero bytes: empty)
    created_at_us INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    ledger         TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    transaction_id TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    body           BLOB    NOT NULL,  -- canonical v1 bytes (docs/log-format.md)
    hash           BLOB    NOT NULL,  -- SHA-256(previous hash || SHA-256(body))
    PRIMARY KEY (ledger, seq)
);
CREATE UNIQUE INDEX events_by_transaction ON events (ledger, transaction_id);

-- The log is insert-only. Whoever drops these triggers is still caught by the chain.
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'tally: events are insert-only'); END;
CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'tally: events are insert-only'); END;

CREATE TABLE accounts (
    ledger   TEXT    NOT NULL,
    account  TEXT    NOT NULL,  -- kind:owner:currency
    kind     TEXT    NOT NULL,
    owner    TEXT    NOT NULL,
    currency TEXT    NOT NULL,
    balance  INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (ledger, account)
) WITHOUT ROWID;
CREATE INDEX accounts_by_owner ON accounts (ledger, kind, owner);

CREATE TABLE entries (
    ledger        TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    idx           INTEGER NOT NULL,  -- the posting's place in its event
    amount        INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    order_id      TEXT,
    PRIMARY KEY (ledger, account, seq, idx)
) WITHOUT ROWID;
CREATE INDEX entries_by_order ON entries (ledger, order_id) WHERE order_id IS NOT NULL;

CREATE TABLE orders (
    ledger      TEXT    NOT NULL,
    order_id    TEXT    NOT NULL,
    expense_id  TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    currency    TEXT    NOT NULL,
    merchant_id TEXT    NOT NULL,
    paid        INTEGER NOT NULL,
    refunded    INTEGER NOT NULL,
    PRIMARY KEY (ledger, order_id)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    ledger          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    command_digest  TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (ledger, idempotency_key)
) WITHOUT ROWID;
