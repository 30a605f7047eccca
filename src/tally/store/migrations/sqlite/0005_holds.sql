-- The holds projection (DESIGN.md decision 5): each hold as the ledger's state keeps it, so
-- that a user's holds (open, or all) are found without reading their statement. Rows mirror
-- `HoldState`; `settled_by` is the capture's or release's transaction id, NULL while open.
CREATE TABLE holds (
    ledger         TEXT    NOT NULL,
    hold_id        TEXT    NOT NULL,
    transaction_id TEXT    NOT NULL,  -- the hold's placement
    seq            INTEGER NOT NULL,  -- the placement's
    user_id        TEXT    NOT NULL,
    currency       TEXT    NOT NULL,
    amount         INTEGER NOT NULL,
    expires_at_us  INTEGER,
    settled_by     TEXT,
    PRIMARY KEY (ledger, hold_id)
) WITHOUT ROWID;
CREATE INDEX holds_by_user ON holds (ledger, user_id, seq);
-- A user's open holds (`settled=false`) without reading their settled ones.
CREATE INDEX open_holds_by_user ON holds (ledger, user_id, seq) WHERE settled_by IS NULL;

-- The holds a ledger written before this migration already has, from its log. (The body
-- column is a BLOB of canonical JSON text: read as text, never as SQLite's binary JSONB.)
-- `tally verify` compares the rows with a replay of the log, as it does every projection.
INSERT INTO holds
SELECT ledger, CAST(body AS TEXT) ->> '$.hold_id', transaction_id, seq,
    CAST(body AS TEXT) ->> '$.user_id', CAST(body AS TEXT) ->> '$.currency',
    CAST(body AS TEXT) ->> '$.amount', CAST(body AS TEXT) ->> '$.expires_at_us', NULL
FROM events WHERE event_type = 'hold';
UPDATE holds SET settled_by = settled.transaction_id
FROM (
    SELECT ledger, CAST(body AS TEXT) ->> '$.hold_id' AS hold_id, transaction_id
    FROM events WHERE event_type IN ('capture', 'release')
) AS settled
WHERE holds.ledger = settled.ledger AND holds.hold_id = settled.hold_id;
