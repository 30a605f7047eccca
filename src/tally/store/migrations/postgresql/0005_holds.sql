-- The holds projection (DESIGN.md decision 5): each hold as the ledger's state keeps it, so
-- that a user's holds (open, or all) are found without reading their statement. Rows mirror
-- `HoldState`; `settled_by` is the capture's or release's transaction id, NULL while open.
CREATE TABLE holds (
    ledger         text   NOT NULL,
    hold_id        text   NOT NULL,
    transaction_id text   NOT NULL,  -- the hold's placement
    seq            bigint NOT NULL,  -- the placement's
    user_id        text   NOT NULL,
    currency       text   NOT NULL,
    amount         bigint NOT NULL,
    expires_at_us  bigint,
    settled_by     text,
    PRIMARY KEY (ledger, hold_id)
);
CREATE INDEX holds_by_user ON holds (ledger, user_id, seq);

-- The holds a ledger written before this migration already has, from its log (canonical
-- JSON in UTF-8). `tally verify` compares the rows with a replay of the log, as it does
-- every projection.
INSERT INTO holds
SELECT ledger, b ->> 'hold_id', transaction_id, seq, b ->> 'user_id', b ->> 'currency',
    (b ->> 'amount')::bigint, (b ->> 'expires_at_us')::bigint, NULL
FROM (SELECT *, convert_from(body, 'UTF8')::jsonb AS b FROM events WHERE event_type = 'hold') e;
UPDATE holds SET settled_by = settled.transaction_id
FROM (
    SELECT ledger, convert_from(body, 'UTF8')::jsonb ->> 'hold_id' AS hold_id, transaction_id
    FROM events WHERE event_type IN ('capture', 'release')
) AS settled
WHERE holds.ledger = settled.ledger AND holds.hold_id = settled.hold_id;
