-- The log, its head, and the projections written in the same transaction as the events.
-- Same tables, columns and keys as the SQLite store; portable SQL (no stored procedures in
-- the write path, no advisory locks): see ARCHITECTURE.md, "PostgreSQL and its relatives".

CREATE TABLE ledgers (
    name          TEXT   PRIMARY KEY,
    seq           BIGINT NOT NULL,  -- the head: last committed seq (0: empty)
    hash          BYTEA  NOT NULL,  -- chain hash at seq (32 zero bytes: empty)
    created_at_us BIGINT NOT NULL
);

CREATE TABLE events (
    ledger         TEXT   NOT NULL,
    seq            BIGINT NOT NULL,
    transaction_id TEXT   NOT NULL,
    event_type     TEXT   NOT NULL,
    body           BYTEA  NOT NULL,  -- canonical v1 bytes (docs/log-format.md)
    hash           BYTEA  NOT NULL,  -- SHA-256(previous hash || SHA-256(body))
    PRIMARY KEY (ledger, seq)
);
CREATE UNIQUE INDEX events_by_transaction ON events (ledger, transaction_id);

CREATE TABLE accounts (
    ledger   TEXT   NOT NULL,
    account  TEXT   NOT NULL,  -- kind:owner:currency
    kind     TEXT   NOT NULL,
    owner    TEXT   NOT NULL,
    currency TEXT   NOT NULL,
    balance  BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (ledger, account)
);
CREATE INDEX accounts_by_owner ON accounts (ledger, kind, owner);

CREATE TABLE entries (
    ledger        TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    seq           BIGINT  NOT NULL,
    idx           INTEGER NOT NULL,  -- the posting's place in its event
    amount        BIGINT  NOT NULL,
    balance_after BIGINT  NOT NULL,
    order_id      TEXT,
    PRIMARY KEY (ledger, account, seq, idx)
);
CREATE INDEX entries_by_order ON entries (ledger, order_id) WHERE order_id IS NOT NULL;

CREATE TABLE orders (
    ledger      TEXT   NOT NULL,
    order_id    TEXT   NOT NULL,
    expense_id  TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    currency    TEXT   NOT NULL,
    merchant_id TEXT   NOT NULL,
    paid        BIGINT NOT NULL,
    refunded    BIGINT NOT NULL,
    PRIMARY KEY (ledger, order_id)
);

CREATE TABLE idempotency_keys (
    ledger          TEXT   NOT NULL,
    idempotency_key TEXT   NOT NULL,
    command_digest  TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (ledger, idempotency_key)
);

-- The log is insert-only. The role tally runs as is granted INSERT and SELECT on events and
-- nothing else (see docs/postgresql.md); this trigger refuses UPDATE, DELETE and TRUNCATE
-- even for the owner. Whoever drops it is still caught by the chain.
CREATE FUNCTION tally_refuse_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tally: events are insert-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_refuse_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tally_refuse_log_change();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tally_refuse_log_change();
