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
-- A user's open holds (`settled=false`) without reading their settled ones.
CREATE INDEX open_holds_by_user ON holds (ledger, user_id, seq) WHERE settled_by IS NULL;

-- Whoever may write orders may write holds: an application role granted the projections'
-- privileges before this table existed (docs/postgresql.md) would otherwise fail each
-- batch that places or settles a hold. Copied: each table privilege a role holds on
-- `orders` (with its grant option), UPDATE of `refunded` alone as UPDATE of `settled_by`
-- (a hold's only changing column, as `refunded` is an order's). The owner of `orders`
-- becomes the owner of `holds` at the end of this file.
DO $$
DECLARE
    granted record;
BEGIN
    FOR granted IN
        SELECT a.grantee, a.privilege_type, a.is_grantable, NULL AS column_name
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'orders'::regclass
        UNION ALL
        SELECT a.grantee, a.privilege_type, a.is_grantable, 'settled_by'
        FROM pg_attribute t, aclexplode(t.attacl) a
        WHERE t.attrelid = 'orders'::regclass AND t.attname = 'refunded'
            AND a.privilege_type = 'UPDATE'
    LOOP
        CONTINUE WHEN granted.grantee = (SELECT oid FROM pg_roles WHERE rolname = current_user);
        EXECUTE format(
            'GRANT %s%s ON holds TO %s%s', granted.privilege_type,
            CASE WHEN granted.column_name IS NULL THEN ''
                ELSE format(' (%I)', granted.column_name) END,
            CASE WHEN granted.grantee = 0 THEN 'PUBLIC'
                ELSE quote_ident(pg_get_userbyid(granted.grantee)) END,
            CASE WHEN granted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
        );
    END LOOP;
END
$$;

-- The holds a ledger written before this migration already has, from its log (canonical
-- JSON in UTF-8). `tally verify` compares the rows with a replay of the log, as it does
-- every projection. jsonb refuses the escape \u0000, which a metadata value or a reason may
-- hold: those six characters become \u0001 before the cast (E'\\u0000' is them whatever
-- standard_conforming_strings says), which changes no key read here (identifiers, a
-- currency, integers: no backslash).
INSERT INTO holds
SELECT ledger, b ->> 'hold_id', transaction_id, seq, b ->> 'user_id', b ->> 'currency',
    (b ->> 'amount')::bigint, (b ->> 'expires_at_us')::bigint, NULL
FROM (
    SELECT *, replace(convert_from(body, 'UTF8'), E'\\u0000', E'\\u0001')::jsonb AS b
    FROM events WHERE event_type = 'hold'
) e;
UPDATE holds SET settled_by = settled.transaction_id
FROM (
    SELECT ledger,
        replace(convert_from(body, 'UTF8'), E'\\u0000', E'\\u0001')::jsonb ->> 'hold_id' AS hold_id,
        transaction_id
    FROM events WHERE event_type IN ('capture', 'release')
) AS settled
WHERE holds.ledger = settled.ledger AND holds.hold_id = settled.hold_id;

-- Should another role run this migration (a superuser, say), `holds` goes to the owner of
-- `orders`, as every table of the schema: that role grants on it (docs/postgresql.md's
-- grant list) and runs the migrations after this one. Last, so that the rows above were
-- written as the role that created the table. A migrating role that may not give a table
-- away (not a member of the owner's role) gives the owner every privilege on it, grant
-- option included, instead.
DO $$
DECLARE
    orders_owner text := (
        SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'orders'::regclass
    );
BEGIN
    IF orders_owner <> current_user THEN
        BEGIN
            EXECUTE format('ALTER TABLE holds OWNER TO %I', orders_owner);
        EXCEPTION WHEN insufficient_privilege THEN
            EXECUTE format('GRANT ALL ON holds TO %I WITH GRANT OPTION', orders_owner);
        END;
    END IF;
END
$$;
