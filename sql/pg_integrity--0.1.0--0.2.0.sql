-- pg_integrity 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_integrity UPDATE TO '0.2.0').
--
-- Every change to the extension's SQL objects in 0.2.0 is repeated here, so
-- that an updated database ends with the same objects as a fresh install;
-- pgrx-tests/extension_update.sh compares the two.  Last, every registered
-- guard is registered again, so that the guarded tables get 0.2.0's triggers.
\echo Use "ALTER EXTENSION pg_integrity UPDATE TO '0.2.0'" to load this file. \quit

-- A qualified relation name, as regclass::text writes it, looked up in the
-- catalogs: unlike to_regclass(), without a USAGE check on the schema, so
-- that the event triggers work for roles that cannot see every guarded
-- table.  NULL when there is no such relation.
CREATE FUNCTION integrity._relation(qualified_name text)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN cardinality(i) = 2
                THEN (SELECT c.oid::regclass
                        FROM pg_catalog.pg_class c
                        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = i[1] AND c.relname = i[2])
                ELSE pg_catalog.to_regclass(qualified_name) END
      FROM pg_catalog.parse_ident(qualified_name) AS i
$$;

------------------------------------------------------------------------------
-- Holds (sql/holds.sql): recorded, idempotent, expiring reservations.  Early:
-- the event triggers replaced below delete the holds of dropped tables.

-- Holds: reservations that are rows.  A hold raises a stock row's reserved
-- quantity (through reserve_stock, the one implementation of a reservation)
-- or an account's used credit, and integrity.hold_records says who holds
-- what, since when and until when.  A hold is settled exactly once: committed,
-- released or expired.
--
-- Locks are always taken in one order, hold records before the stock or
-- account row they hold, so that settling, placing and expiring never
-- deadlock each other.
--
-- The functions run with the caller's rights.  Row-level security lets a role
-- see the holds of the tables it may read, and place or settle holds only on
-- the tables it may update (which is what moving the reserved quantity needs
-- anyway); a settled hold cannot be updated at all, and only the holds of a
-- dropped table can be deleted (by the sql_drop event trigger, which runs as
-- whoever drops the table).  The policies also say
-- which values a hold may take: CHECK constraints would cost every placement
-- more than the reservation itself (PostgreSQL reads them from the catalog's
-- text form for each statement), and only the functions below write here.

CREATE SEQUENCE integrity.hold_records_hold_id_seq;

CREATE TABLE integrity.hold_records (
    hold_id            bigint      NOT NULL DEFAULT pg_catalog.nextval('integrity.hold_records_hold_id_seq')
                                   PRIMARY KEY,
    table_name         regclass    NOT NULL,
    kind               text        NOT NULL,   -- 'stock' or 'credit'
    -- The held row: the primary key value of a stock row (a jsonb scalar),
    -- the key columns of an account ({"retailer_id": 7}).
    row_id             jsonb       NOT NULL,
    -- The position in a multi-row placement (1 for a single row).
    line               integer     NOT NULL DEFAULT 1,
    quantity           numeric     NOT NULL,
    -- 'pending', then once 'committed', 'released' or 'expired'.
    status             text        NOT NULL DEFAULT 'pending',
    committed_quantity numeric,
    idempotency_key    text,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at         timestamptz,
    settled_at         timestamptz,
    txid               xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    actor              name        NOT NULL DEFAULT CURRENT_USER
);
ALTER SEQUENCE integrity.hold_records_hold_id_seq OWNED BY integrity.hold_records.hold_id;
COMMENT ON TABLE integrity.hold_records IS
    'pg_integrity holds: one row per hold placed with place_hold() or place_credit_hold(); read it through the integrity.holds view.';
-- One index serves every search by status: a row's overdue holds (placing a
-- hold expires them first), all overdue holds (expire_holds), a table's
-- pending holds (violations) and all of a dropped table's holds.
CREATE INDEX hold_records_status ON integrity.hold_records (status, table_name, row_id, expires_at);
CREATE UNIQUE INDEX hold_records_idempotency ON integrity.hold_records (table_name, idempotency_key, line)
    WHERE idempotency_key IS NOT NULL;

ALTER TABLE integrity.hold_records ENABLE ROW LEVEL SECURITY;
-- The holds of a dropped table (the privilege is NULL then) are visible to
-- whoever drops it, so that the sql_drop event trigger can delete them.
CREATE POLICY hold_records_read ON integrity.hold_records FOR SELECT
    USING (pg_catalog.has_any_column_privilege(table_name, 'SELECT') IS NOT FALSE);
CREATE POLICY hold_records_place ON integrity.hold_records FOR INSERT
    WITH CHECK (status = 'pending' AND settled_at IS NULL AND committed_quantity IS NULL
                AND kind IN ('stock', 'credit') AND quantity > 0 AND actor = CURRENT_USER
                AND pg_catalog.has_any_column_privilege(table_name, 'UPDATE'));
CREATE POLICY hold_records_settle ON integrity.hold_records FOR UPDATE
    USING (status = 'pending' AND pg_catalog.has_any_column_privilege(table_name, 'UPDATE'))
    WITH CHECK (status IN ('committed', 'released', 'expired') AND settled_at IS NOT NULL
                AND (committed_quantity IS NULL) = (status <> 'committed')
                AND committed_quantity > 0 IS NOT FALSE AND committed_quantity <= quantity IS NOT FALSE
                AND pg_catalog.has_any_column_privilege(table_name, 'UPDATE'));
CREATE POLICY hold_records_forget ON integrity.hold_records FOR DELETE
    USING (NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = table_name));
REVOKE ALL ON integrity.hold_records, integrity.hold_records_hold_id_seq FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON integrity.hold_records TO PUBLIC;
GRANT UPDATE (status, committed_quantity, settled_at) ON integrity.hold_records TO PUBLIC;
GRANT USAGE ON SEQUENCE integrity.hold_records_hold_id_seq TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('integrity.hold_records', '');
SELECT pg_catalog.pg_extension_config_dump('integrity.hold_records_hold_id_seq', '');

-- A hold past its expiry no longer counts: it shows as expired, and cannot
-- be settled, even before expire_holds() (or a new hold on its row) gives its
-- quantity back.
CREATE VIEW integrity.holds AS
SELECT h.hold_id, h.table_name,
       CASE WHEN h.kind = 'stock'
            THEN pg_catalog.jsonb_build_object(coalesce(k.attname::text, 'key'), h.row_id)
            ELSE h.row_id END AS row_key,
       h.quantity,
       CASE WHEN h.status = 'pending' AND h.expires_at <= pg_catalog.now() THEN 'expired' ELSE h.status END AS status,
       h.idempotency_key, h.created_at, h.expires_at, h.settled_at, h.txid, h.actor, h.committed_quantity
  FROM integrity.hold_records h
  -- A stock row's key column: its table's single-column primary key (joined,
  -- not looked up per hold).
  LEFT JOIN (SELECT i.indrelid, a.attname
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indisprimary AND i.indnkeyatts = 1) AS k ON k.indrelid = h.table_name
 -- A view reads as its owner, whom row-level security does not restrict.
 WHERE pg_catalog.has_any_column_privilege(h.table_name, 'SELECT');
COMMENT ON VIEW integrity.holds IS
    'Holds on stock and credit: pending until committed, released or expired; committed_quantity is what a commit consumed.';
GRANT SELECT ON integrity.holds TO PUBLIC;

-- The arguments every placement checks before it touches anything.
CREATE FUNCTION integrity._check_hold_arguments(tbl regclass, ttl interval, caller text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    IF ttl <= interval '0' THEN
        RAISE EXCEPTION '%: ttl must be positive, not %', caller, ttl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for a hold that never expires.';
    END IF;
END;
$$;

-- The holds an earlier placement with this idempotency key recorded, by line,
-- or NULL when there is none.  A key that was used for other rows or
-- quantities is refused (23505): the caller is not retrying the same request.
CREATE FUNCTION integrity._holds_of_key(tbl regclass, idempotency_key text, row_ids jsonb[], quantities numeric[])
RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    placed record;
BEGIN
    SELECT array_agg(h.hold_id ORDER BY h.line) AS ids,
           array_agg(h.row_id ORDER BY h.line) AS row_ids,
           array_agg(h.quantity ORDER BY h.line) AS quantities
      INTO placed
      FROM integrity.hold_records h
     WHERE h.table_name = tbl AND h.idempotency_key = _holds_of_key.idempotency_key;
    IF placed.ids IS NULL THEN
        RETURN NULL;
    END IF;
    IF placed.row_ids IS DISTINCT FROM row_ids OR placed.quantities IS DISTINCT FROM quantities THEN
        RAISE EXCEPTION 'idempotency key % was already used on table "%" for another hold', idempotency_key, tbl
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('Holds %s hold %s of %s.', placed.ids, placed.quantities, placed.row_ids),
                  HINT = 'Use a new idempotency key for a new request.',
                  CONSTRAINT = 'hold_records_idempotency', SCHEMA = 'integrity', TABLE = 'hold_records';
    END IF;
    RETURN placed.ids;
END;
$$;

-- The accounts table of a ledger credit guard: its key, limit and used columns.
CREATE FUNCTION integrity._credit_hold_target(accounts regclass, caller text,
                                              OUT keys text[], OUT limit_column text, OUT used_column text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(accounts, 'accounts', caller);
    SELECT r.columns, r.options ->> 'limit_column', r.options ->> 'used_column'
      INTO keys, limit_column, used_column
      FROM integrity.guard_registry r
     WHERE r.guard = 'ledger_credit' AND integrity._relation(r.options ->> 'accounts') = accounts
     ORDER BY r.table_name::oid
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table "%" is not the accounts table of a ledger credit guard', caller, accounts
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register the ledger first: SELECT integrity.guard_ledger_credit(ledger, accounts, key_columns);';
    END IF;
END;
$$;

-- Moves an account's used credit by delta (a hold placed: positive; given
-- back: negative).  A placement asks for the limit (at_most_limit) and gets
-- false when the credit is not there; a give-back always applies.
CREATE FUNCTION integrity._move_held_credit(accounts regclass, row_id jsonb, delta numeric, at_most_limit boolean,
                                            caller text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record := integrity._credit_hold_target(accounts, caller);
    key_list text := (SELECT string_agg(format('%I', k), ', ') FROM unnest(t.keys) k);
    moved integer;
BEGIN
    EXECUTE format('UPDATE %1$s a SET %2$I = a.%2$I + $2'
                   '  FROM pg_catalog.jsonb_populate_record(NULL::%1$s, $1) k'
                   ' WHERE (%3$s) = (%4$s)%5$s',
                   accounts, t.used_column,
                   (SELECT string_agg(format('a.%I', k), ', ') FROM unnest(t.keys) k),
                   (SELECT string_agg(format('k.%I', k), ', ') FROM unnest(t.keys) k),
                   CASE WHEN at_most_limit THEN format(' AND a.%I + $2 <= a.%I', t.used_column, t.limit_column) ELSE '' END)
        USING row_id, delta;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved = 1 THEN
        RETURN true;
    END IF;
    EXECUTE format('SELECT count(*) FROM %1$s a, pg_catalog.jsonb_populate_record(NULL::%1$s, $1) k WHERE (%2$s) = (%3$s)',
                   accounts,
                   (SELECT string_agg(format('a.%I', k), ', ') FROM unnest(t.keys) k),
                   (SELECT string_agg(format('k.%I', k), ', ') FROM unnest(t.keys) k))
        INTO moved USING row_id;
    IF moved = 0 THEN
        RAISE EXCEPTION '%: table "%" has no row with (%) = %', caller, accounts, key_list, row_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF at_most_limit AND NOT integrity._may_skip_updates(accounts) THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION '%: a trigger on table "%" skipped the update of account %', caller, accounts, row_id
        USING ERRCODE = 'triggered_data_change_violation',
              DETAIL = 'Nothing was held or given back.',
              HINT = format('Check the BEFORE UPDATE triggers of %s that can return NULL.', accounts);
END;
$$;

-- Gives back what pending holds held: the stock row's reservation or the
-- account's used credit.
CREATE FUNCTION integrity._give_back(kind text, tbl regclass, row_id jsonb, quantity numeric, caller text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF kind = 'stock' THEN
        PERFORM integrity.release_stock(tbl, row_id #>> '{}', quantity);
    ELSE
        PERFORM integrity._move_held_credit(tbl, row_id, -quantity, false, caller);
    END IF;
END;
$$;

-- Locks the stock rows of tbl with the given keys, in key order.
CREATE FUNCTION integrity._lock_stock_rows(tbl regclass, row_ids jsonb[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record := integrity._stock_target(tbl, 'place_hold');
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT FROM %1$s r WHERE r.%2$I = ANY (SELECT (k #>> ''{}'')::%3$s FROM unnest($1) k)'
                   ' ORDER BY r.%2$I FOR UPDATE) l', tbl, t.key_column, t.key_type)
        USING row_ids;
END;
$$;

-- Expires the overdue pending holds of the given rows of tbl: the hold
-- records first, then the rows, in key order.  A placement on several rows
-- locks all of them (lock_all) before it gives anything back: locking only
-- the rows that had overdue holds, and the others later, would take them out
-- of key order, and two such placements could deadlock.
CREATE FUNCTION integrity._expire_overdue(tbl regclass, row_ids jsonb[], lock_all boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    due record;
    expired bigint := 0;
BEGIN
    FOR due IN
        WITH settled AS (
            UPDATE integrity.hold_records h SET status = 'expired', settled_at = pg_catalog.now()
             WHERE h.table_name = tbl AND h.row_id = ANY (row_ids)
               AND h.status = 'pending' AND h.expires_at <= pg_catalog.now()
            RETURNING h.kind, h.row_id, h.quantity)
        SELECT s.kind, s.row_id, sum(s.quantity) AS quantity, count(*) AS holds
          FROM settled s GROUP BY s.kind, s.row_id ORDER BY s.row_id
    LOOP
        IF lock_all AND expired = 0 THEN
            PERFORM integrity._lock_stock_rows(tbl, row_ids);
        END IF;
        PERFORM integrity._give_back(due.kind, tbl, due.row_id, due.quantity, 'expire_holds');
        expired := expired + due.holds;
    END LOOP;
    RETURN expired;
END;
$$;

CREATE FUNCTION integrity.place_hold(tbl regclass, id anyelement, qty numeric, ttl interval DEFAULT NULL,
                                     idempotency_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    held_row jsonb := to_jsonb(id);
    hold bigint;
BEGIN
    IF tbl IS NULL OR ttl <= interval '0' THEN   -- the checks, only when they fail
        PERFORM integrity._check_hold_arguments(tbl, ttl, 'place_hold');
    END IF;
    IF idempotency_key IS NOT NULL THEN
        hold := (integrity._holds_of_key(tbl, idempotency_key, ARRAY[held_row], ARRAY[qty]))[1];
        IF hold IS NOT NULL THEN
            RETURN hold;
        END IF;
    END IF;
    IF EXISTS (SELECT FROM integrity.hold_records h
                WHERE h.table_name = tbl AND h.status = 'pending' AND h.row_id = held_row
                  AND h.expires_at <= pg_catalog.now()) THEN
        PERFORM integrity._expire_overdue(tbl, ARRAY[held_row]);
    END IF;
    IF NOT integrity.reserve_stock(tbl, id, qty) THEN
        RETURN NULL;
    END IF;
    INSERT INTO integrity.hold_records AS h (table_name, kind, row_id, quantity, idempotency_key, expires_at)
    VALUES (tbl, 'stock', held_row, qty, idempotency_key, pg_catalog.now() + ttl)
    ON CONFLICT (table_name, idempotency_key, line) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING h.hold_id INTO hold;
    IF hold IS NULL THEN
        -- A concurrent placement with this key committed first: it holds the
        -- stock, this one gives back what it reserved.
        PERFORM integrity.release_stock(tbl, id, qty);
        hold := (integrity._holds_of_key(tbl, idempotency_key, ARRAY[held_row], ARRAY[qty]))[1];
    END IF;
    RETURN hold;
END;
$$;
COMMENT ON FUNCTION integrity.place_hold(regclass, anyelement, numeric, interval, text) IS
    'Reserves qty of the row as reserve_stock does and records the hold: its id, or NULL when not enough is available. The same idempotency key returns the same hold.';

CREATE FUNCTION integrity.place_hold(tbl regclass, ids anyarray, qtys numeric[], ttl interval DEFAULT NULL,
                                     idempotency_key text DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    held_rows jsonb[];
    holds bigint[];
BEGIN
    PERFORM integrity._check_hold_arguments(tbl, ttl, 'place_hold');
    held_rows := ARRAY(SELECT to_jsonb(i) FROM unnest(ids) WITH ORDINALITY AS u(i, n) ORDER BY u.n);
    IF idempotency_key IS NOT NULL THEN
        holds := integrity._holds_of_key(tbl, idempotency_key, held_rows, qtys);
        IF holds IS NOT NULL THEN
            RETURN holds;
        END IF;
    END IF;
    PERFORM integrity._expire_overdue(tbl, held_rows, lock_all => true);
    -- Checks the arguments, locks the rows in key order: all or nothing.
    IF NOT integrity.reserve_stock(tbl, ids, qtys) THEN
        RETURN NULL;
    END IF;
    WITH placed AS (
        INSERT INTO integrity.hold_records AS h (table_name, kind, row_id, line, quantity, idempotency_key, expires_at)
        SELECT tbl, 'stock', l.row_id, l.line, l.quantity, idempotency_key, pg_catalog.now() + ttl
          FROM unnest(held_rows, qtys) WITH ORDINALITY AS l(row_id, quantity, line)
        ON CONFLICT (table_name, idempotency_key, line) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING h.hold_id, h.line)
    SELECT array_agg(p.hold_id ORDER BY p.line) INTO holds FROM placed p;
    IF cardinality(holds) = cardinality(held_rows) THEN
        RETURN holds;
    END IF;
    IF holds IS NOT NULL THEN
        RAISE EXCEPTION 'place_hold: another placement with idempotency key % ran at the same time', idempotency_key
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry the transaction: the retry returns the holds that were placed.';
    END IF;
    -- A concurrent placement with this key committed first.
    PERFORM integrity.release_stock(tbl, l.id, l.quantity) FROM unnest(ids, qtys) AS l(id, quantity);
    RETURN integrity._holds_of_key(tbl, idempotency_key, held_rows, qtys);
END;
$$;
COMMENT ON FUNCTION integrity.place_hold(regclass, anyarray, numeric[], interval, text) IS
    'One hold per row, all or nothing (rows locked in key order): their ids in the order of ids, or NULL when any row lacks stock.';

CREATE FUNCTION integrity.place_credit_hold(accounts regclass, account_key jsonb, amount numeric,
                                            ttl interval DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    t record;
    held_row jsonb;
    hold bigint;
BEGIN
    PERFORM integrity._check_hold_arguments(accounts, ttl, 'place_credit_hold');
    t := integrity._credit_hold_target(accounts, 'place_credit_hold');
    PERFORM integrity._require_argument(account_key, 'account_key', 'place_credit_hold');
    IF jsonb_typeof(account_key) <> 'object'
       OR ARRAY(SELECT k FROM jsonb_object_keys(account_key) k ORDER BY k)
          <> ARRAY(SELECT k FROM unnest(t.keys) k ORDER BY k) THEN
        RAISE EXCEPTION 'place_credit_hold: account_key must be an object with exactly the key columns of "%", not %',
                        accounts, account_key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass {%s}.', (SELECT string_agg(format('"%s": …', k), ', ') FROM unnest(t.keys) k));
    END IF;
    IF amount IS NULL OR amount <= 0 OR amount = 'NaN' THEN
        RAISE EXCEPTION 'place_credit_hold: amount must be positive, not %', coalesce(amount::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The key as the account's own columns make it: {"id": "7"} and {"id": 7}
    -- name the same account, and its holds.
    EXECUTE format('SELECT pg_catalog.jsonb_build_object(%s) FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) k',
                   (SELECT string_agg(format('%L, k.%I', k, k), ', ') FROM unnest(t.keys) k), accounts)
        INTO held_row USING account_key;
    IF idempotency_key IS NOT NULL THEN
        hold := (integrity._holds_of_key(accounts, idempotency_key, ARRAY[held_row], ARRAY[amount]))[1];
        IF hold IS NOT NULL THEN
            RETURN hold;
        END IF;
    END IF;
    PERFORM integrity._expire_overdue(accounts, ARRAY[held_row]);
    IF NOT integrity._move_held_credit(accounts, held_row, amount, true, 'place_credit_hold') THEN
        RETURN NULL;
    END IF;
    INSERT INTO integrity.hold_records AS h (table_name, kind, row_id, quantity, idempotency_key, expires_at)
    VALUES (accounts, 'credit', held_row, amount, idempotency_key, pg_catalog.now() + ttl)
    ON CONFLICT (table_name, idempotency_key, line) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING h.hold_id INTO hold;
    IF hold IS NULL THEN
        PERFORM integrity._move_held_credit(accounts, held_row, -amount, false, 'place_credit_hold');
        hold := (integrity._holds_of_key(accounts, idempotency_key, ARRAY[held_row], ARRAY[amount]))[1];
    END IF;
    RETURN hold;
END;
$$;
COMMENT ON FUNCTION integrity.place_credit_hold(regclass, jsonb, numeric, interval, text) IS
    'Holds amount of the account''s credit (used credit goes up, within the limit) and records the hold: its id, or NULL when the limit does not allow it.';

-- Why a hold could not be settled: raises for an unknown (P0002), expired
-- (55000) or foreign (42501) hold and for a quantity it cannot take (22023);
-- otherwise returns the status the hold was already settled with.
CREATE FUNCTION integrity._settled_status(hold bigint, qty numeric, caller text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
BEGIN
    SELECT r.status, r.expires_at, r.quantity, r.table_name INTO h
      FROM integrity.hold_records r WHERE r.hold_id = hold;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: there is no hold %', caller, hold
            USING ERRCODE = 'no_data_found';
    END IF;
    IF h.status = 'expired' OR (h.status = 'pending' AND h.expires_at <= pg_catalog.now()) THEN
        RAISE EXCEPTION '%: hold % has expired', caller, hold
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It expired at %s: it no longer holds anything, and cannot be settled.',
                                  h.expires_at),
                  HINT = 'Place a new hold.';
    END IF;
    IF h.status <> 'pending' THEN
        RETURN h.status;
    END IF;
    IF qty IS NOT NULL AND NOT (qty > 0 AND qty <= h.quantity) THEN
        RAISE EXCEPTION '%: quantity must be positive and at most the hold''s %, not %', caller, h.quantity, qty
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RAISE EXCEPTION '%: permission denied to settle hold % on table "%"', caller, hold, h.table_name
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Settling a hold needs the UPDATE privilege on its table.';
END;
$$;

CREATE FUNCTION integrity.commit_hold(hold_id bigint, qty numeric DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
BEGIN
    IF hold_id IS NULL THEN
        PERFORM integrity._require_argument(hold_id, 'hold_id', 'commit_hold');
    END IF;
    UPDATE integrity.hold_records r
       SET status = 'committed', settled_at = pg_catalog.now(), committed_quantity = coalesce(qty, r.quantity)
     WHERE r.hold_id = commit_hold.hold_id AND r.status = 'pending'
       AND (r.expires_at IS NULL OR r.expires_at > pg_catalog.now())
       AND (qty IS NULL OR (qty > 0 AND qty <= r.quantity))
    RETURNING r.kind, r.table_name, r.row_id, r.quantity, r.committed_quantity INTO h;
    IF NOT FOUND THEN
        RETURN integrity._settled_status(hold_id, qty, 'commit_hold');
    END IF;
    IF h.kind = 'stock' THEN
        PERFORM integrity.commit_stock(h.table_name, h.row_id #>> '{}', h.committed_quantity);
        IF h.committed_quantity < h.quantity THEN
            PERFORM integrity.release_stock(h.table_name, h.row_id #>> '{}', h.quantity - h.committed_quantity);
        END IF;
    ELSE
        -- The DEBIT entry the caller inserts next takes the credit over: it is
        -- counted once, by the ledger.
        PERFORM integrity._give_back(h.kind, h.table_name, h.row_id, h.quantity, 'commit_hold');
    END IF;
    RETURN 'committed';
END;
$$;
COMMENT ON FUNCTION integrity.commit_hold(bigint, numeric) IS
    'Consumes a pending hold (all of it, or qty and releases the rest); returns the hold''s status. A credit hold hands its amount to the DEBIT entry inserted next in the same transaction.';

CREATE FUNCTION integrity.release_hold(hold_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
BEGIN
    IF hold_id IS NULL THEN
        PERFORM integrity._require_argument(hold_id, 'hold_id', 'release_hold');
    END IF;
    UPDATE integrity.hold_records r SET status = 'released', settled_at = pg_catalog.now()
     WHERE r.hold_id = release_hold.hold_id AND r.status = 'pending'
       AND (r.expires_at IS NULL OR r.expires_at > pg_catalog.now())
    RETURNING r.kind, r.table_name, r.row_id, r.quantity INTO h;
    IF NOT FOUND THEN
        RETURN integrity._settled_status(hold_id, NULL, 'release_hold');
    END IF;
    PERFORM integrity._give_back(h.kind, h.table_name, h.row_id, h.quantity, 'release_hold');
    RETURN 'released';
END;
$$;
COMMENT ON FUNCTION integrity.release_hold(bigint) IS
    'Gives a pending hold back; returns the hold''s status.';

CREATE FUNCTION integrity.expire_holds()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    batch record;
    expired bigint := 0;
    done bigint;
BEGIN
    -- A batch is the overdue holds of up to 1,000 rows, table by table and
    -- in key order.  Holds the caller may not update (row-level security)
    -- stay: run it as a role that may update every held table.
    LOOP
        done := 0;
        FOR batch IN
            SELECT d.table_name, array_agg(d.row_id ORDER BY d.row_id) AS row_ids
              FROM (SELECT DISTINCT h.table_name, h.row_id
                      FROM integrity.hold_records h
                     WHERE h.status = 'pending' AND h.expires_at <= pg_catalog.now()
                     ORDER BY h.table_name, h.row_id
                     LIMIT 1000) d
             GROUP BY d.table_name
             ORDER BY d.table_name
        LOOP
            done := done + integrity._expire_overdue(batch.table_name, batch.row_ids);
        END LOOP;
        EXIT WHEN done = 0;
        expired := expired + done;
    END LOOP;
    RETURN expired;
END;
$$;
COMMENT ON FUNCTION integrity.expire_holds() IS
    'Expires every pending hold past its expiry and gives back what it held; returns how many. Schedule it (pg_cron).';

-- violations(): the rows of a stock table whose reserved quantity is below
-- what their pending holds hold (a reservation released or consumed behind
-- the holds' back), and pending holds of rows that are gone.  NULL when the
-- table has no single-column primary key or the column is gone.  $1 is tbl.
CREATE FUNCTION integrity._hold_shortfall_sql(tbl regclass, reserved_column text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT ''stock'', $1, pg_catalog.jsonb_build_object(%1$L, h.row_id),'
                  ' CASE WHEN t.%1$I IS NULL'
                  '  THEN ''the row is gone, but pending holds hold '' || h.held::text'
                  '  ELSE ''column "%2$s" is '' || COALESCE(t.%2$I::text, ''NULL'') || '', below the '''
                  '       || h.held::text || '' its pending holds hold'' END'
                  ' FROM (SELECT h.row_id, sum(h.quantity) AS held FROM integrity.hold_records h'
                  '        WHERE h.table_name = $1 AND h.kind = ''stock'' AND h.status = ''pending'''
                  '        GROUP BY h.row_id) h'
                  ' LEFT JOIN %3$s t ON t.%1$I = (h.row_id #>> ''{}'')::%4$s'
                  ' WHERE t.%1$I IS NULL OR NOT t.%2$I >= h.held OR t.%2$I IS NULL',
                  k.col, reserved_column, tbl, k.typ)
      FROM (SELECT a.attname AS col, format_type(a.atttypid, a.atttypmod) AS typ
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = tbl AND i.indisprimary AND i.indnkeyatts = 1) k
     WHERE integrity._has_columns(tbl, ARRAY[reserved_column])
$$;

------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION integrity._trigger_args(trigger_name name, columns text[], options jsonb)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(convert_to(arg, pg_catalog.getdatabaseencoding()) || '\x00'::bytea, ''::bytea
                               ORDER BY n), ''::bytea)
      FROM unnest(CASE
               WHEN trigger_name IN ('integrity_immutable', 'integrity_immutable_recheck',
                                     'integrity_write_once', 'integrity_write_once_recheck',
                                     'integrity_soft_delete') THEN columns
               WHEN trigger_name = 'integrity_version_bump' THEN
                   ARRAY[columns[1], CASE WHEN coalesce((options ->> 'strict')::boolean, true)
                                          THEN 'strict' ELSE 'lenient' END]
               WHEN trigger_name = 'integrity_version_check' THEN columns[1:1]
               WHEN trigger_name IN ('integrity_stock', 'integrity_stock_recheck',
                                     'integrity_credit', 'integrity_credit_recheck') THEN columns[1:2]
               WHEN trigger_name = 'integrity_ledger_credit' THEN
                   ARRAY[(SELECT format('%I.%I', n.nspname, c.relname)
                            FROM pg_catalog.pg_class c
                            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.oid = integrity._relation(options ->> 'accounts')),
                         options ->> 'amount_column', options ->> 'entry_type_column',
                         options ->> 'debit_value', options ->> 'credit_value',
                         options ->> 'limit_column', options ->> 'used_column'] || columns
               WHEN trigger_name = 'integrity_hash_chain' THEN
                   ARRAY[options ->> 'seq_column', options ->> 'hash_column'] || columns
               ELSE '{}'::text[] END) WITH ORDINALITY AS a(arg, n)
$$;

-- The registry refuses rows for OIDs that are no table (yet): they would guard
-- the next table created with that OID.
CREATE OR REPLACE FUNCTION integrity._guard_registry_owner_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM integrity._require_owner(OLD.table_name, 'change its pg_integrity guards');
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        -- A row for an OID that is no table yet would guard whatever table is
        -- created with that OID next, by whoever creates it.
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = NEW.table_name) THEN
            RAISE EXCEPTION 'relation with OID % does not exist', NEW.table_name::oid
                USING ERRCODE = 'undefined_table',
                      HINT = 'Register guards on existing tables with the integrity.protect_*, enable_* and guard_* functions.';
        END IF;
        PERFORM integrity._require_owner(NEW.table_name, 'change its pg_integrity guards');
        RETURN NEW;
    END IF;
    RETURN OLD;
END;
$$;

-- A debit or credit value that is no value of an enum entry type column is
-- refused at registration (22P02); violations() reports such a guard instead
-- of failing, and health() reports it.
CREATE FUNCTION integrity._entry_value_problem(ledger regclass, entry_type_column text, value text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype := (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = ledger AND a.attname = entry_type_column AND a.attnum > 0
                       AND NOT a.attisdropped);
BEGIN
    IF typ IS NOT NULL THEN
        EXECUTE format('SELECT %L::%s', value, typ);
    END IF;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END;
$$;

CREATE OR REPLACE FUNCTION integrity.violations(tbl regclass DEFAULT NULL)
RETURNS TABLE (guard text, table_name regclass, row_key jsonb, detail text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    target record;
    query text;
BEGIN
    -- Row rules: one query (one scan) per table.  Without tbl, every guarded
    -- table; with tbl, its own guards and those of its partitioned ancestors.
    FOR target IN
        SELECT t.rel, t.owners
          FROM (SELECT tbl AS rel,
                       ARRAY(SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a) AS owners
                 WHERE tbl IS NOT NULL
                UNION ALL
                SELECT DISTINCT r.table_name, ARRAY[r.table_name]
                  FROM integrity.guard_registry r
                 WHERE tbl IS NULL) t
         WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.rel)
         ORDER BY t.rel::text COLLATE "C"
    LOOP
        query := integrity._violations_sql(target.rel, target.owners);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Ledger credit: drift between each account and its ledger.
    FOR target IN
        SELECT r.table_name AS ledger, integrity._relation(r.options ->> 'accounts') AS accounts, r.columns, r.options
          FROM integrity.guard_registry r
         WHERE r.guard = 'ledger_credit'
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
           AND (tbl IS NULL OR r.table_name = tbl OR integrity._relation(r.options ->> 'accounts') = tbl)
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        RETURN QUERY
            SELECT 'ledger_credit', target.ledger, NULL::jsonb,
                   format('the guard is broken, its ledger is not checked: %s %L is no value of column "%s" (%s);'
                          ' see integrity.health()', v.argument, v.value, target.options ->> 'entry_type_column',
                          v.problem)
              FROM (VALUES ('debit_value', target.options ->> 'debit_value'),
                           ('credit_value', target.options ->> 'credit_value')) AS v0(argument, value)
             CROSS JOIN LATERAL (SELECT v0.argument, v0.value,
                                        integrity._entry_value_problem(target.ledger, target.options ->> 'entry_type_column',
                                                                       v0.value) AS problem) v
             WHERE v.problem IS NOT NULL;
        IF FOUND THEN
            CONTINUE;
        END IF;
        query := integrity._ledger_drift_sql(target.ledger, target.accounts, target.columns, target.options);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.accounts;
        END IF;
    END LOOP;

    -- Holds: stock rows that reserve less than their pending holds hold.
    FOR target IN
        SELECT r.table_name AS rel, r.columns[2] AS reserved_column
          FROM integrity.guard_registry r
         WHERE r.guard = 'stock' AND (tbl IS NULL OR r.table_name = tbl)
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
           AND EXISTS (SELECT FROM integrity.hold_records h WHERE h.table_name = r.table_name AND h.status = 'pending')
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        query := integrity._hold_shortfall_sql(target.rel, target.reserved_column);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Soft delete: live rows that reference a soft-deleted row.
    FOR target IN
        SELECT k.parent, k.parent_columns, s.deleted_column, k.child, k.child_columns
          FROM integrity._foreign_keys() k
         CROSS JOIN LATERAL integrity._soft_delete_of(k.parent) s
         WHERE s.registered = k.parent
           AND (tbl IS NULL OR k.child = tbl OR k.parent = tbl)
         ORDER BY k.child::text COLLATE "C", k.parent::text COLLATE "C", k.child_columns
    LOOP
        query := integrity._deleted_parent_sql(target.parent, target.parent_columns, target.deleted_column,
                                               target.child, target.child_columns);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query;
        END IF;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION integrity.violations(regclass) IS
    'Existing rows that break a registered guard (of tbl, or of every guarded table): NULL immutable columns, versions NULL or below 1, stock and credit rules, accounts whose used credit differs from their ledger and pending credit holds, stock rows reserving less than their pending holds, live rows referencing a soft-deleted row. One scan per table.';

-- Guard triggers are known by function, events, arguments and WHEN clause,
-- not by name alone: a look-alike planted under a guard trigger's name is
-- replaced by the registration, and replacing a guard trigger with other
-- arguments or another WHEN clause is refused (55000) or reported by health().
DROP FUNCTION integrity._guard_triggers(text);
CREATE OR REPLACE FUNCTION integrity._guard_triggers(guard text)
RETURNS TABLE (trigger_name name, function_name name, tgtype smallint, mode "char", per_partition boolean,
               guard text, has_when boolean, recheck boolean)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.trigger_name::name, t.function_name::name, t.tgtype::smallint, t.mode::"char", t.per_partition,
           t.guard, t.has_when, t.recheck
      FROM (VALUES -- tgtype: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32
            ('append_only',   'integrity_append_only',             'append_only_guard',          27, 'A', false, false, false),
            ('append_only',   'integrity_append_only_truncate',    'append_only_truncate_guard', 34, 'A', true,  false, false),
            ('immutable',     'integrity_immutable',               'immutable_guard',            19, 'A', false, false, false),
            ('immutable',     'integrity_immutable_recheck',       'immutable_guard',            17, 'A', false, true,  true),
            ('write_once',    'integrity_write_once',              'write_once_guard',           19, 'A', false, false, false),
            ('write_once',    'integrity_write_once_recheck',      'write_once_guard',           17, 'A', false, true,  true),
            ('versioning',    'integrity_version_bump',            'version_bump',               19, 'O', false, false, false),
            ('versioning',    'integrity_version_check',           'version_check',              17, 'O', false, true,  true),
            ('stock',         'integrity_stock',                   'stock_guard',                23, 'A', false, false, false),
            ('stock',         'integrity_stock_recheck',           'stock_guard',                21, 'A', false, true,  true),
            ('credit',        'integrity_credit',                  'credit_guard',               23, 'A', false, false, false),
            ('credit',        'integrity_credit_recheck',          'credit_guard',               21, 'A', false, true,  true),
            ('ledger_credit', 'integrity_ledger_credit',           'ledger_credit_guard',        29, 'O', false, false, false),
            ('hash_chain',    'integrity_hash_chain',              'hash_chain_guard',            7, 'O', false, false, false),
            ('soft_delete',   'integrity_soft_delete',             'soft_delete_guard',          11, 'O', false, false, false),
            -- AFTER … FOR EACH STATEMENT with transition tables, one event each
            ('lifecycle',     'integrity_lifecycle_insert',        'lifecycle_guard',             4, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_update',        'lifecycle_guard',            16, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_delete',        'lifecycle_guard',             8, 'O', true,  false, false)
           ) AS t(guard, trigger_name, function_name, tgtype, mode, per_partition, has_when, recheck)
     WHERE $1 IS NULL OR t.guard = $1
$$;

-- Immutable, write-once, versioning, stock and credit guards check in their
-- BEFORE trigger; the AFTER … WHEN recheck of the final row is installed only
-- while another BEFORE trigger fires after the guard's.  The row-movement
-- triggers of partitioned tables go: the BEFORE trigger sees a moved row.
-- Whether the guard's BEFORE trigger on tbl needs its recheck: some other
-- BEFORE row trigger for the same events (UPDATE; for stock and credit also
-- INSERT) on tbl or one of its partitions fires after it (triggers fire in name
-- order) and could change NEW after the guard looked at it.  Another guard's trigger counts too unless that guard is registered on
-- the table (then it is the extension's own, which writes only its column).
-- Disabled triggers count: enabling one is no DDL the event triggers see.
CREATE FUNCTION integrity._needs_recheck(tbl regclass, guard text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT
          FROM integrity._guard_triggers(guard) own
          JOIN pg_catalog.pg_trigger t
            ON t.tgrelid IN (SELECT integrity._partition_tree(tbl))
           AND t.tgtype & 67 = 3 AND t.tgtype & own.tgtype & 20 <> 0  -- ROW, BEFORE, INSERT or UPDATE (not INSTEAD OF)
           AND t.tgname COLLATE "C" > own.trigger_name COLLATE "C"
         WHERE own.tgtype & 67 = 3 AND EXISTS (SELECT FROM integrity._guard_triggers(guard) r WHERE r.recheck)
           AND NOT EXISTS (SELECT
                             FROM integrity._guard_triggers(NULL) g
                             JOIN integrity.guard_registry reg ON reg.table_name = tbl AND reg.guard = g.guard
                            WHERE g.trigger_name = t.tgname
                              AND t.tgfoid = pg_catalog.to_regprocedure(format('integrity.%I()', g.function_name))))
$$;

-- Creates the guard's recheck trigger with statement create_sql when the table
-- needs it, and drops it otherwise.  The recheck goes first: the event trigger
-- that sees the guard's BEFORE trigger created then finds the table complete.
CREATE FUNCTION integrity._place_recheck(tbl regclass, guard text, create_sql text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF integrity._needs_recheck(tbl, guard) THEN
        EXECUTE create_sql;
    ELSE
        PERFORM integrity._drop_triggers(tbl, g.guard, g.trigger_name)
           FROM integrity._guard_triggers(_place_recheck.guard) g
          WHERE g.recheck;
    END IF;
END;
$$;

-- immutable and write_once differ only in their condition and function.
CREATE OR REPLACE FUNCTION integrity._protect_columns(tbl regclass, columns text[], guard text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := CASE guard WHEN 'immutable' THEN 'protect_immutable' ELSE 'protect_write_once' END;
    checked text[];
    condition text;
    arguments text;
    trigger_name text := 'integrity_' || guard;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    checked := integrity._check_columns(tbl, columns, caller);
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY[guard], caller);
    SELECT string_agg(CASE guard
                          WHEN 'immutable' THEN integrity._changed_sql(tbl, col)
                          ELSE format('(OLD.%I IS NOT NULL AND %s)', col, integrity._changed_sql(tbl, col))
                      END, ' OR '),
           string_agg(quote_literal(col), ', ')
      INTO condition, arguments
      FROM unnest(checked) AS col;

    PERFORM integrity._record_guard(tbl, guard, checked, '{}');
    PERFORM integrity._place_recheck(tbl, guard,
        format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW WHEN (%s)'
               ' EXECUTE FUNCTION integrity.%I(%s)',
               trigger_name || '_recheck', tbl, condition, guard || '_guard', arguments));
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION integrity.%I(%s)',
                   trigger_name, tbl, guard || '_guard', arguments);
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

-- The registered guard (on the table or on a partitioned ancestor) that needs
-- trigger trigger_name on tbl, if any.
CREATE OR REPLACE FUNCTION integrity._guard_needing(tbl regclass, trigger_name name)
RETURNS TABLE (guarded_table regclass, guard text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name, r.guard
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
     WHERE (r.table_name = tbl OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(tbl)))
       AND g.trigger_name = $2
       AND NOT (g.trigger_name = 'integrity_append_only_truncate'
                AND coalesce((r.options ->> 'allow_truncate')::boolean, false))
       AND NOT (g.recheck AND NOT integrity._needs_recheck(r.table_name, r.guard))
     LIMIT 1
$$;

-- After a BEFORE UPDATE trigger on tbl was created, renamed or dropped, or a
-- partition with triggers of its own attached: the guards of tbl (or of its
-- partitioned ancestors) whose recheck trigger is missing although now needed,
-- or there although no longer needed, are registered again, which places or
-- removes it.  The recheck is the guard's own trigger, so only the table's
-- owner may have it added.
CREATE FUNCTION integrity._sync_rechecks(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stale record;
BEGIN
    FOR stale IN
        SELECT r.table_name, r.guard, r.columns, r.options, g.trigger_name, needed
          FROM integrity.guard_registry r
          JOIN integrity._guard_triggers(NULL) g ON g.guard = r.guard AND g.recheck
         CROSS JOIN LATERAL integrity._needs_recheck(r.table_name, r.guard) needed
         WHERE (r.table_name = tbl OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(tbl)))
           AND needed <> EXISTS (SELECT FROM pg_catalog.pg_trigger t
                                  WHERE t.tgrelid = r.table_name AND t.tgname = g.trigger_name)
         ORDER BY r.table_name, r.guard
    LOOP
        IF stale.needed THEN
            PERFORM integrity._require_owner(stale.table_name,
                format('add a BEFORE UPDATE trigger that fires after the trigger of its %s guard (the guard then'
                       ' checks the final row again, with trigger %s)', stale.guard, stale.trigger_name));
        END IF;
        EXECUTE integrity._registration_sql(stale.table_name, stale.guard, stale.columns, stale.options);
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION integrity._check_trigger_ddl(trigger_oid oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trg record;
    expected record;
BEGIN
    SELECT t.tgrelid::regclass AS rel, t.tgname, t.tgtype, t.tgargs, t.tgqual IS NOT NULL AS has_when,
           p.proname, n.nspname = 'integrity' AS ours
      INTO trg
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE t.oid = trigger_oid;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A guard trigger is known by its function, events, arguments and whether
    -- it has a WHEN clause, not by its name alone.
    FOR expected IN
        SELECT needed.guarded_table, needed.guard, g.function_name, g.tgtype, g.has_when,
               integrity._trigger_args(g.trigger_name, r.columns, r.options) AS tgargs
          FROM integrity._guard_needing(trg.rel, trg.tgname) needed
          JOIN integrity._guard_triggers(needed.guard) g ON g.trigger_name = trg.tgname
          JOIN integrity.guard_registry r ON r.table_name = needed.guarded_table AND r.guard = needed.guard
    LOOP
        PERFORM integrity._require_owner(trg.rel, format('create or replace its guard trigger "%s"', trg.tgname));
        IF NOT trg.ours OR trg.proname <> expected.function_name OR trg.tgtype <> expected.tgtype
           OR trg.tgargs <> expected.tgargs OR trg.has_when <> expected.has_when THEN
            PERFORM integrity._refuse_guard_ddl('replace', trg.tgname, trg.rel, expected.guarded_table, expected.guard);
        END IF;
    END LOOP;
    -- A guard function under a foreign name on a guarded table: a renamed guard trigger.
    IF trg.ours AND trg.tgname NOT IN (SELECT k.trigger_name FROM integrity._guard_triggers(NULL) k) THEN
        FOR expected IN
            SELECT needed.guarded_table, needed.guard, g.trigger_name
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
             CROSS JOIN LATERAL integrity._guard_needing(trg.rel, g.trigger_name) needed
             WHERE g.function_name = trg.proname
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid = trg.rel AND t.tgname = g.trigger_name)
        LOOP
            PERFORM integrity._refuse_guard_ddl('rename', expected.trigger_name, trg.rel,
                                                expected.guarded_table, expected.guard);
        END LOOP;
    END IF;
END;
$$;

-- Immutable and write-once columns of type bpchar are compared by image:
-- bpchar's equality ignores trailing spaces.
CREATE OR REPLACE FUNCTION integrity._changed_sql(tbl regclass, col text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN EXISTS (
               SELECT
                 FROM pg_catalog.pg_attribute a
                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                 JOIN pg_catalog.pg_opclass c
                   ON c.opcdefault
                  AND c.opcmethod = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree')
                  AND c.opcintype = CASE t.typtype WHEN 'd' THEN t.typbasetype ELSE t.oid END
                 JOIN pg_catalog.pg_amproc p
                   ON p.amprocfamily = c.opcfamily
                  AND p.amproclefttype = c.opcintype
                  AND p.amprocrighttype = c.opcintype
                  AND p.amprocnum = 4
                 LEFT JOIN pg_catalog.pg_collation coll ON coll.oid = a.attcollation
                WHERE a.attrelid = tbl AND a.attname = col
                  -- bpchar's equality ignores trailing spaces, which an
                  -- unconstrained bpchar keeps: 'a' = 'a   '.
                  AND c.opcintype <> 'pg_catalog.bpchar'::pg_catalog.regtype
                  AND (p.amproc = 'pg_catalog.btequalimage'::regproc
                       OR (p.amproc = 'pg_catalog.btvarstrequalimage'::regproc
                           AND coalesce(coll.collisdeterministic, true))))
           THEN format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', col)
           ELSE format('pg_catalog.record_image_ne(ROW(OLD.%1$I), ROW(NEW.%1$I))', col)
           END
$$;

-- Registration refuses columns that can never work: a generated column the
-- guard writes (428C9), a char(n) entry type column (42804).
CREATE FUNCTION integrity._refuse_generated(tbl regclass, col text, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_attribute
                WHERE attrelid = tbl AND attname = col AND attnum > 0 AND attgenerated <> '') THEN
        RAISE EXCEPTION '%: column "%" of table "%" is a generated column', caller, col, tbl
            USING ERRCODE = 'generated_always',
                  DETAIL = 'The guard writes this column, and a generated column cannot be written.';
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION integrity.enable_versioning(tbl regclass, version_column name DEFAULT 'version',
                                            strict boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
BEGIN
    PERFORM integrity._check_table(tbl, 'enable_versioning');
    PERFORM integrity._require_argument(version_column, 'version_column', 'enable_versioning');
    PERFORM integrity._require_argument(strict, 'strict', 'enable_versioning');
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['versioning'], 'enable_versioning');
    PERFORM integrity._refuse_generated(tbl, version_column, 'enable_versioning');
    typ := integrity._column_type(tbl, version_column);
    IF typ NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'version column "%" of table "%" must be smallint, integer or bigint, not %',
                        version_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;

    PERFORM integrity._record_guard(tbl, 'versioning', ARRAY[version_column::text],
                                    jsonb_build_object('strict', strict));
    PERFORM integrity._place_recheck(tbl, 'versioning',
        format('CREATE OR REPLACE TRIGGER integrity_version_check AFTER UPDATE ON %s FOR EACH ROW'
               ' WHEN (NEW.%2$I IS DISTINCT FROM COALESCE(OLD.%2$I + 1, 1))'
               ' EXECUTE FUNCTION integrity.version_check(%3$L)',
               tbl, version_column, version_column));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_version_bump BEFORE UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.version_bump(%L, %L)',
                   tbl, version_column, CASE WHEN strict THEN 'strict' ELSE 'lenient' END);
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.enable_versioning(regclass, name, boolean) IS
    'Every UPDATE leaves version = OLD.version + 1; strict mode refuses stale versions with 40001.';

CREATE OR REPLACE FUNCTION integrity.guard_ledger_credit(ledger regclass, accounts regclass, key_columns text[],
                                              amount_column name DEFAULT 'amount',
                                              entry_type_column name DEFAULT 'entry_type',
                                              debit_value text DEFAULT 'DEBIT',
                                              credit_value text DEFAULT 'CREDIT',
                                              limit_column name DEFAULT 'credit_limit',
                                              used_column name DEFAULT 'used_credit')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'guard_ledger_credit';
    keys text[];
    key text;
    problem text;
BEGIN
    PERFORM integrity._check_table(ledger, caller);
    PERFORM integrity._require_argument(accounts, 'accounts', caller);
    PERFORM integrity._check_table(accounts, caller);
    IF ledger = accounts THEN
        RAISE EXCEPTION '%: the ledger and the accounts must be different tables', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    keys := integrity._check_columns(ledger, key_columns, caller);
    IF cardinality(keys) > 8 THEN
        RAISE EXCEPTION '%: an account key has at most 8 columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH key IN ARRAY keys LOOP
        IF integrity._column_type(accounts, key) <> integrity._column_type(ledger, key) THEN
            RAISE EXCEPTION '%: key column "%" has type % in "%" but % in "%"', caller, key,
                            integrity._column_type(ledger, key), ledger, integrity._column_type(accounts, key), accounts
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END LOOP;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_index i
         WHERE i.indrelid = accounts AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
           AND i.indnkeyatts = cardinality(keys)
           AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                  FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = accounts AND a.attnum = ANY (i.indkey::int2[]))
               = (SELECT array_agg(k ORDER BY k) FROM unnest(keys) k)) THEN
        RAISE EXCEPTION '%: there is no unique constraint on (%) in "%"', caller, array_to_string(keys, ', '), accounts
            USING ERRCODE = 'invalid_column_reference',
                  HINT = 'Each ledger entry must belong to exactly one account: add a primary key or unique constraint on the key columns.';
    END IF;
    PERFORM integrity._check_quantity_column(ledger, amount_column, caller);
    PERFORM integrity._refuse_generated(accounts, used_column, caller);
    IF integrity._check_quantity_column(accounts, limit_column, caller)
       <> integrity._check_quantity_column(accounts, used_column, caller) THEN
        RAISE EXCEPTION '%: columns "%" and "%" of table "%" must have the same type', caller, limit_column,
                        used_column, accounts
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    -- The account must hold every amount exactly, or it drifts from its ledger.
    IF NOT integrity._holds_exactly(accounts, used_column, ledger, amount_column) THEN
        RAISE EXCEPTION '%: amounts of type % would be rounded into "%" of type %', caller,
                        integrity._column_format(ledger, amount_column), used_column,
                        integrity._column_format(accounts, used_column)
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Give the account''s used and limit columns the type of the ledger''s amounts.';
    END IF;
    PERFORM integrity._require_argument(entry_type_column, 'entry_type_column', caller);
    IF integrity._column_type(ledger, entry_type_column) = 'bpchar'::regtype THEN
        RAISE EXCEPTION '%: entry type column "%" of table "%" must not be char(n)', caller, entry_type_column, ledger
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'char(n) pads its values with spaces, so they would not equal the debit and credit values.',
                  HINT = 'Use text, varchar or an enum for the entry type.';
    END IF;
    PERFORM integrity._require_argument(debit_value, 'debit_value', caller);
    PERFORM integrity._require_argument(credit_value, 'credit_value', caller);
    FOR problem IN
        SELECT format('%s %L is not a value of entry type column "%s" of table "%s": %s', v.argument, v.value,
                      entry_type_column, ledger, p.problem)
          FROM (VALUES ('debit_value', debit_value), ('credit_value', credit_value)) AS v(argument, value)
         CROSS JOIN LATERAL (SELECT integrity._entry_value_problem(ledger, entry_type_column, v.value)) AS p(problem)
         WHERE p.problem IS NOT NULL
    LOOP
        RAISE EXCEPTION '%: %', caller, problem USING ERRCODE = 'invalid_text_representation';
    END LOOP;
    IF debit_value = credit_value THEN
        RAISE EXCEPTION '%: debit_value and credit_value must differ', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._refuse_if_inherited(ledger, ARRAY['ledger_credit'], caller);

    PERFORM integrity._record_guard(ledger, 'ledger_credit', keys, jsonb_build_object(
        'accounts', accounts::text, 'amount_column', amount_column, 'entry_type_column', entry_type_column,
        'debit_value', debit_value, 'credit_value', credit_value,
        'limit_column', limit_column, 'used_column', used_column));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_ledger_credit AFTER INSERT OR UPDATE OR DELETE ON %s'
                   ' FOR EACH ROW EXECUTE FUNCTION integrity.ledger_credit_guard(%s)',
                   ledger,
                   (SELECT string_agg(quote_literal(arg), ', ')
                      FROM unnest(ARRAY[(SELECT format('%I.%I', n.nspname, c.relname)
                                           FROM pg_catalog.pg_class c
                                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                                          WHERE c.oid = accounts),
                                        amount_column, entry_type_column, debit_value, credit_value,
                                        limit_column, used_column] || keys) AS arg));
    PERFORM integrity._set_trigger_modes(ledger);
END;
$$;

-- Whether a BEFORE UPDATE row trigger on rel can skip an update (return
-- NULL): an enabled one that is not one of the extension's guards, which
-- refuse a row or let it through but never skip it.  reserve_stock and the
-- ledger credit guard tell a skipped update from a refused one with it.
CREATE FUNCTION integrity._may_skip_updates(rel regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT
                     FROM pg_catalog.pg_trigger g
                     JOIN pg_catalog.pg_proc p ON p.oid = g.tgfoid
                    WHERE g.tgrelid = rel AND g.tgtype::pg_catalog.int4 & 19 = 19 AND g.tgenabled <> 'D'
                      AND p.pronamespace <> 'integrity'::pg_catalog.regnamespace)
$$;

-- NaN in numeric stock and credit columns is refused (23514), and as the
-- quantity of an operation (22023); violations() reports NaN rows.
CREATE OR REPLACE FUNCTION integrity._guard_quantity(tbl regclass, total_column name, part_column name, guard text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'guard_' || guard;
    typ regtype;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    typ := integrity._check_quantity_column(tbl, total_column, caller);
    IF integrity._check_quantity_column(tbl, part_column, caller) <> typ THEN
        RAISE EXCEPTION '%: columns "%" and "%" of table "%" must have the same type', caller, total_column,
                        part_column, tbl
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, part_column, caller);
    IF guard = 'stock' THEN   -- commit_stock consumes stock too
        PERFORM integrity._refuse_generated(tbl, total_column, caller);
    END IF;
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY[guard], caller);
    PERFORM integrity._record_guard(tbl, guard, ARRAY[total_column::text, part_column::text], '{}');
    -- numeric's NaN compares greater than every number and passes the
    -- comparisons: numeric columns are checked for it too.
    PERFORM integrity._place_recheck(tbl, guard,
        format('CREATE OR REPLACE TRIGGER %1$I AFTER INSERT OR UPDATE ON %2$s FOR EACH ROW'
               ' WHEN (NOT (NEW.%3$I >= 0 AND NEW.%4$I >= 0 AND NEW.%4$I <= NEW.%3$I)%8$s)'
               ' EXECUTE FUNCTION integrity.%5$I(%6$L, %7$L)',
               'integrity_' || guard || '_recheck', tbl, total_column, part_column, guard || '_guard',
               total_column, part_column,
               CASE WHEN typ = 'numeric'::regtype
                    THEN format(' OR NEW.%1$I = ''NaN'' OR NEW.%2$I = ''NaN''', total_column, part_column)
                    ELSE '' END));
    EXECUTE format('CREATE OR REPLACE TRIGGER %1$I BEFORE INSERT OR UPDATE ON %2$s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.%3$I(%4$L, %5$L)',
                   'integrity_' || guard, tbl, guard || '_guard', total_column, part_column);
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

CREATE OR REPLACE FUNCTION integrity._require_quantity(qty numeric, scale integer, caller text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF qty IS NULL OR qty <= 0 OR qty = 'NaN' THEN
        RAISE EXCEPTION '%: quantity must be positive, not %', caller, coalesce(qty::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scale IS NOT NULL AND qty <> round(qty, scale) THEN
        RAISE EXCEPTION '%: quantity % has more decimal places than the stock columns hold (%)', caller, qty, scale
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- A multi-row reservation is all or nothing even when a BEFORE UPDATE trigger
-- of the table skips a row: 27000, nothing reserved.
CREATE OR REPLACE FUNCTION integrity.reserve_stock(tbl regclass, ids anyarray, qtys numeric[])
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record := integrity._stock_target(tbl, 'reserve_stock');
    verdict record;
    updated bigint;
    wanted bigint;
BEGIN
    PERFORM integrity._require_argument(ids, 'ids', 'reserve_stock');
    IF qtys IS NULL OR cardinality(qtys) <> cardinality(ids) THEN
        RAISE EXCEPTION 'reserve_stock: ids and qtys must have the same number of elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'reserve_stock: ids must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF cardinality(ids) = 0 THEN
        RAISE EXCEPTION 'reserve_stock: ids must name at least one row' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._require_quantity(q, t.quantity_scale, 'reserve_stock') FROM unnest(qtys) q;

    -- Lock every row in key order (so that two multi-row reservations can
    -- never deadlock each other), then decide on the locked rows.
    EXECUTE format($sql$
        WITH wanted AS (
            SELECT w.k::%4$s AS k, sum(w.q) AS q FROM unnest($1, $2) AS w(k, q) GROUP BY 1),
        locked AS (
            SELECT r.%3$I AS k, r.%5$I - r.%2$I AS available
              FROM %1$s r WHERE r.%3$I IN (SELECT k FROM wanted) ORDER BY r.%3$I FOR UPDATE)
        SELECT min(w.k::text) FILTER (WHERE l.k IS NULL) AS missing,
               coalesce(bool_and(l.available >= w.q), false) AS enough
          FROM wanted w LEFT JOIN locked l ON l.k = w.k
        $sql$, tbl, t.reserved_column, t.key_column, t.key_type, t.stock_column)
       INTO verdict USING ids, qtys;
    IF verdict.missing IS NOT NULL THEN
        PERFORM integrity._unknown_row(tbl, t.key_column, verdict.missing, 'reserve_stock');
    END IF;
    IF NOT verdict.enough THEN
        RETURN false;
    END IF;
    EXECUTE format($sql$
        UPDATE %1$s r SET %2$I = r.%2$I + w.q
          FROM (SELECT w.k::%4$s AS k, sum(w.q) AS q FROM unnest($1, $2) AS w(k, q) GROUP BY 1) w
         WHERE r.%3$I = w.k
        $sql$, tbl, t.reserved_column, t.key_column, t.key_type)
       USING ids, qtys;
    -- A BEFORE UPDATE trigger of the table's own can skip a row (RETURN NULL):
    -- then nothing is reserved, as the error rolls the other rows back.
    GET DIAGNOSTICS updated = ROW_COUNT;
    wanted := (SELECT count(DISTINCT k) FROM unnest(ids) AS k);
    IF updated <> wanted THEN
        RAISE EXCEPTION 'reserve_stock: a trigger on table "%" skipped % of the % rows to reserve', tbl,
                        wanted - updated, wanted
            USING ERRCODE = 'triggered_data_change_violation',
                  DETAIL = 'Nothing was reserved: a reservation of several rows is all or nothing.',
                  HINT = format('Check the BEFORE UPDATE triggers of %s that can return NULL.', tbl);
    END IF;
    RETURN true;
END;
$$;

DROP FUNCTION integrity._row_rules(text, text[]);
CREATE FUNCTION integrity._row_rules(guard text, columns text[], nan_possible boolean)
RETURNS TABLE (rule_guard text, condition text, detail text, uses text[])
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- An immutable column that is NULL: the guard keeps it NULL forever.
    SELECT 'immutable', format('t.%I IS NULL', col),
           quote_literal(format('immutable column "%s" is NULL: an immutable NULL can never be set', col)),
           ARRAY[col]
      FROM unnest(columns) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'immutable'
    UNION ALL
    SELECT 'versioning', format('(t.%1$I IS NULL OR t.%1$I < 1)', columns[1]),
           format('%L || COALESCE(t.%I::text, %L) || %L',
                  format('version column "%s" is ', columns[1]), columns[1], 'NULL', ': versions start at 1'),
           ARRAY[columns[1]]
     WHERE guard = 'versioning'
    UNION ALL
    -- stock: columns = {stock, reserved}; credit: columns = {limit, used}.
    SELECT r.rule_guard, r.condition, r.detail, columns[1:2]
      FROM (SELECT guard AS rule_guard, columns[1] AS total, columns[2] AS part,
                   CASE guard WHEN 'stock' THEN 'stock' ELSE 'the credit limit' END AS total_word,
                   CASE guard WHEN 'stock' THEN 'reserved stock' ELSE 'used credit' END AS part_word
             WHERE guard IN ('stock', 'credit')) q
     CROSS JOIN LATERAL (VALUES
        (1, q.rule_guard, format('t.%I < 0', q.total),
         format('%L || t.%I::text || %L', format('column "%s" is ', q.total), q.total,
                format(': %s must be >= 0', q.total_word))),
        (2, q.rule_guard, format('t.%I < 0', q.part),
         format('%L || t.%I::text || %L', format('column "%s" is ', q.part), q.part,
                format(': %s must be >= 0', q.part_word))),
        (3, q.rule_guard, format('t.%I > t.%I', q.part, q.total),
         format('%L || t.%I::text || %L || t.%I::text || %L', format('column "%s" (', q.part), q.part,
                format(') exceeds column "%s" (', q.total), q.total,
                format('): %s must be <= %s', q.part_word, CASE q.rule_guard WHEN 'stock' THEN 'stock' ELSE 'the limit' END))),
        -- NaN compares greater than every number, so it breaks none of the above.
        (4, q.rule_guard, CASE WHEN nan_possible THEN format('t.%I = ''NaN''', q.total) END,
         quote_literal(format('column "%s" is NaN: %s must be a number', q.total, q.total_word))),
        (5, q.rule_guard, CASE WHEN nan_possible THEN format('t.%I = ''NaN''', q.part) END,
         quote_literal(format('column "%s" is NaN: %s must be a number', q.part, q.part_word)))
        ) AS r(n, rule_guard, condition, detail)
     WHERE r.condition IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION integrity._violations_sql(rel regclass, owners regclass[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    rules record;
BEGIN
    SELECT string_agg(format('(%L, %s, %s)', rs.rule_guard, rs.condition, rs.detail), ', ' ORDER BY rs.n) AS vals,
           string_agg(format('(%s)', rs.condition), ' OR ' ORDER BY rs.n) AS filter
      INTO rules
      FROM (SELECT row_number() OVER (ORDER BY r.guard, ru.ord) AS n, ru.rule_guard, ru.condition, ru.detail
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._row_rules(r.guard, r.columns, coalesce((
                            SELECT a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype
                              FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = rel AND a.attname = r.columns[1] AND NOT a.attisdropped), false))
                        WITH ORDINALITY AS ru(rule_guard, condition, detail, uses, ord)
             WHERE r.table_name = ANY (owners)
               AND integrity._has_columns(rel, ru.uses)) rs;
    IF rules.vals IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN format('SELECT v.guard, $1, %s, v.detail'
                  ' FROM %s t CROSS JOIN LATERAL (VALUES %s) AS v(guard, broken, detail)'
                  ' WHERE (%s) AND v.broken',
                  integrity._row_key_sql(rel), rel, rules.vals, rules.filter);
END;
$$;

-- One manifest on every supported version: PostgreSQL 18 catalogues NOT NULL
-- constraints (contype 'n'), which the manifest leaves to the columns' not_null
-- instead of listing them as "trigger" constraints; before 15, partitions'
-- clones of their parent's triggers are internal, and the manifest lists them
-- all the same.  lint names NOT VALID not-null constraints as such.
CREATE OR REPLACE FUNCTION integrity._schema_manifest_of(nsp name)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
WITH n AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = nsp
),
rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.relispartition,
           c.relrowsecurity, c.relforcerowsecurity
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = (SELECT oid FROM n)
       AND c.relpersistence <> 't'
)
SELECT pg_catalog.jsonb_build_object(
    'tables', coalesce((
        SELECT pg_catalog.jsonb_object_agg(r.relname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'kind', CASE r.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                                   ELSE 'foreign table' END,
            'persistence', CASE r.relpersistence WHEN 'u' THEN 'unlogged' ELSE 'permanent' END,
            'row_security', r.relrowsecurity,
            'force_row_security', r.relforcerowsecurity,
            'partition_key', CASE WHEN r.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(r.oid) END,
            'partition_of', (SELECT pg_catalog.format('%I.%I', pn.nspname, pc.relname)
                               FROM pg_catalog.pg_inherits i
                               JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
                               JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                              WHERE i.inhrelid = r.oid AND r.relispartition),
            'partition_bound', (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid)
                                  FROM pg_catalog.pg_class c WHERE c.oid = r.oid AND r.relispartition),
            'inherits', (SELECT pg_catalog.jsonb_agg(pg_catalog.format('%I.%I', pn.nspname, pc.relname)
                                                     ORDER BY i.inhseqno)
                           FROM pg_catalog.pg_inherits i
                           JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
                           JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                          WHERE i.inhrelid = r.oid AND NOT r.relispartition)))
          || pg_catalog.jsonb_build_object(
            'columns', coalesce((
                SELECT pg_catalog.jsonb_object_agg(a.attname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'position', a.position,
                    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                    'not_null', a.attnotnull,
                    'default', CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                    'generated', CASE WHEN a.attgenerated = 's' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                    'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
                    'collation', CASE WHEN a.attcollation <> t.typcollation
                                      THEN a.attcollation::pg_catalog.regcollation::text END)))
                  FROM (SELECT a.*, pg_catalog.row_number() OVER (ORDER BY a.attnum) AS position
                          FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped) a
                  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum), '{}'),
            'constraints', coalesce((
                SELECT pg_catalog.jsonb_object_agg(c.conname, pg_catalog.jsonb_build_object(
                    'type', CASE c.contype WHEN 'c' THEN 'check' WHEN 'f' THEN 'foreign key'
                                           WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique'
                                           WHEN 'x' THEN 'exclusion' WHEN 't' THEN 'trigger' END,
                    'definition', pg_catalog.pg_get_constraintdef(c.oid),
                    'validated', c.convalidated,
                    'inherited', c.coninhcount > 0))
                  FROM pg_catalog.pg_constraint c
                 -- NOT NULL constraints, catalogued from PostgreSQL 18 on, are the
                 -- columns' not_null: one manifest on every version.
                 WHERE c.conrelid = r.oid AND c.contype <> 'n'), '{}'),
            'indexes', coalesce((
                SELECT pg_catalog.jsonb_object_agg(ic.relname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
                    'unique', i.indisunique,
                    'primary', i.indisprimary,
                    'predicate', pg_catalog.pg_get_expr(i.indpred, i.indrelid),
                    'valid', i.indisvalid)))
                  FROM pg_catalog.pg_index i
                  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                 WHERE i.indrelid = r.oid), '{}'),
            'triggers', coalesce((
                SELECT pg_catalog.jsonb_object_agg(tg.tgname, pg_catalog.jsonb_build_object(
                    'timing', CASE WHEN tg.tgtype & 2 <> 0 THEN 'BEFORE'
                                   WHEN tg.tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END,
                    'level', CASE WHEN tg.tgtype & 1 <> 0 THEN 'ROW' ELSE 'STATEMENT' END,
                    'events', pg_catalog.to_jsonb(pg_catalog.array_remove(ARRAY[
                                  CASE WHEN tg.tgtype & 4 <> 0 THEN 'INSERT' END,
                                  CASE WHEN tg.tgtype & 16 <> 0 THEN 'UPDATE' END,
                                  CASE WHEN tg.tgtype & 8 <> 0 THEN 'DELETE' END,
                                  CASE WHEN tg.tgtype & 32 <> 0 THEN 'TRUNCATE' END], NULL)),
                    'function', (SELECT pg_catalog.format('%I.%I', pn.nspname, p.proname)
                                   FROM pg_catalog.pg_proc p
                                   JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
                                  WHERE p.oid = tg.tgfoid),
                    'enabled', CASE tg.tgenabled WHEN 'O' THEN 'origin' WHEN 'A' THEN 'always'
                                                 WHEN 'R' THEN 'replica' ELSE 'disabled' END,
                    'definition', pg_catalog.pg_get_triggerdef(tg.oid),
                    'inherited', tg.tgparentid <> 0))
                  FROM pg_catalog.pg_trigger tg
                 -- Before PostgreSQL 15, partitions' clones of their parent's triggers
                 -- are internal, like the triggers that implement foreign keys and
                 -- deferrable unique constraints: the clones are listed on every version.
                 WHERE tg.tgrelid = r.oid
                   AND (NOT tg.tgisinternal
                        OR (tg.tgparentid <> 0
                            AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c
                                             WHERE c.oid = tg.tgconstraint AND c.contype <> 't')))), '{}'),
            'policies', coalesce((
                SELECT pg_catalog.jsonb_object_agg(po.polname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'command', CASE po.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                              WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                    'permissive', po.polpermissive,
                    'roles', (SELECT pg_catalog.jsonb_agg(CASE WHEN ro = 0 THEN 'public'
                                                               ELSE pg_catalog.quote_ident(ro::pg_catalog.regrole::text) END
                                                          ORDER BY 1)
                                FROM pg_catalog.unnest(po.polroles) ro),
                    'using', pg_catalog.pg_get_expr(po.polqual, po.polrelid),
                    'with_check', pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))))
                  FROM pg_catalog.pg_policy po
                 WHERE po.polrelid = r.oid), '{}'),
            'guards', coalesce((
                SELECT pg_catalog.jsonb_object_agg(g.guard, pg_catalog.jsonb_build_object(
                    'columns', pg_catalog.to_jsonb(g.columns),
                    'options', g.options))
                  FROM integrity.guard_registry g
                 WHERE g.table_name::oid = r.oid), '{}')))
          FROM rel r
         WHERE r.relkind IN ('r', 'p', 'f')), '{}'),
    'views', coalesce((
        SELECT pg_catalog.jsonb_object_agg(r.relname, pg_catalog.jsonb_build_object(
            'kind', CASE r.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END,
            'definition', pg_catalog.pg_get_viewdef(r.oid)))
          FROM rel r
         WHERE r.relkind IN ('v', 'm')), '{}'),
    'sequences', coalesce((
        SELECT pg_catalog.jsonb_object_agg(r.relname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'type', pg_catalog.format_type(s.seqtypid, NULL),
            'start', s.seqstart,
            'increment', s.seqincrement,
            'min', s.seqmin,
            'max', s.seqmax,
            'cache', s.seqcache,
            'cycle', s.seqcycle,
            'owned_by', (SELECT pg_catalog.format('%I.%I.%I', tn.nspname, tc.relname, ta.attname)
                           FROM pg_catalog.pg_depend d
                           JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid
                           JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
                           JOIN pg_catalog.pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid
                          WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                            AND d.refobjsubid > 0 AND d.deptype = 'a'
                          LIMIT 1))))
          FROM rel r
          JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.oid
         WHERE r.relkind = 'S'
           -- identity sequences belong to their column ("identity")
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                              AND d.deptype = 'i')), '{}'),
    'types', coalesce((
        SELECT pg_catalog.jsonb_object_agg(t.typname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'kind', CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range'
                                   ELSE 'composite' END,
            'labels', CASE WHEN t.typtype = 'e' THEN
                          (SELECT pg_catalog.jsonb_agg(e.enumlabel ORDER BY e.enumsortorder)
                             FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) END,
            'type', CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod)
                         WHEN t.typtype = 'r' THEN
                             (SELECT pg_catalog.format_type(rg.rngsubtype, NULL)
                                FROM pg_catalog.pg_range rg WHERE rg.rngtypid = t.oid) END,
            'not_null', CASE WHEN t.typtype = 'd' THEN t.typnotnull END,
            'default', CASE WHEN t.typtype = 'd' THEN pg_catalog.pg_get_expr(t.typdefaultbin, 0) END,
            'constraints', CASE WHEN t.typtype = 'd' THEN coalesce(
                (SELECT pg_catalog.jsonb_object_agg(c.conname, pg_catalog.pg_get_constraintdef(c.oid))
                   FROM pg_catalog.pg_constraint c WHERE c.contypid = t.oid), '{}') END,
            'attributes', CASE WHEN t.typtype = 'c' THEN
                (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(
                            a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END)))
          FROM pg_catalog.pg_type t
         WHERE t.typnamespace = (SELECT oid FROM n)
           AND (t.typtype IN ('e', 'd', 'r')
                OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c'))),
        '{}'),
    'functions', coalesce((
        SELECT pg_catalog.jsonb_object_agg(
            pg_catalog.format('%I(%s)', p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)),
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'kind', CASE p.prokind WHEN 'f' THEN 'function' WHEN 'p' THEN 'procedure'
                                       WHEN 'a' THEN 'aggregate' ELSE 'window' END,
                'returns', pg_catalog.pg_get_function_result(p.oid),
                'language', (SELECT l.lanname FROM pg_catalog.pg_language l WHERE l.oid = p.prolang),
                'volatility', CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END,
                'strict', p.proisstrict,
                'security_definer', p.prosecdef,
                'definition_md5', CASE WHEN p.prokind IN ('f', 'p')
                                       THEN pg_catalog.md5(pg_catalog.pg_get_functiondef(p.oid)) END)))
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = (SELECT oid FROM n)), '{}'),
    'extensions', coalesce((
        SELECT pg_catalog.jsonb_object_agg(e.extname, pg_catalog.jsonb_build_object('version', e.extversion))
          FROM pg_catalog.pg_extension e
         WHERE e.extnamespace = (SELECT oid FROM n)), '{}'))
 WHERE EXISTS (SELECT FROM n)
$$;

CREATE OR REPLACE FUNCTION integrity.lint(schemas name[] DEFAULT '{public}')
RETURNS TABLE (severity text, rule text, object_name text, problem text, remedy text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF schemas IS NULL THEN
        RAISE EXCEPTION 'lint: argument "schemas" must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the schemas to check, e.g. ARRAY[''public''].';
    END IF;
    RETURN QUERY
    WITH tbl AS (
        SELECT c.oid, c.relkind, format('%I.%I', n.nspname, c.relname) AS qname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY (schemas) AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
    ),
    soft AS (
        SELECT t.*, integrity._soft_delete_column(t.oid) AS deleted_column
          FROM tbl t
    ),
    problems AS (
        -- 1. unique indexes (and unique constraints) of soft-delete tables that
        --    are not partial on "deleted IS NULL": a deleted row keeps its value
        --    and blocks a new row with the same one.
        SELECT 'error' AS severity, 'soft_delete_unique' AS rule,
               format('%s.%I', s.qname, ic.relname) AS object_name,
               format('unique %s %I on soft-delete table %s is not partial on %I IS NULL: a deleted row '
                      'still blocks a new row with the same %s',
                      CASE WHEN con.oid IS NULL THEN 'index' ELSE 'constraint' END,
                      coalesce(con.conname, ic.relname), s.qname, s.deleted_column,
                      CASE WHEN i.indnkeyatts = 1 THEN 'value' ELSE 'values' END) AS problem,
               CASE WHEN con.oid IS NULL
                    THEN format('DROP INDEX %I.%I; ', n.nspname, ic.relname)
                    ELSE format('ALTER TABLE %s DROP CONSTRAINT %I; ', s.qname, con.conname) END ||
               -- a partitioned index is deparsed "ON ONLY": the new one must cover the partitions
               pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid),
                                         '^(CREATE UNIQUE INDEX (\S+|"(""|[^"])*")) ON ONLY ', '\1 ON ') ||
               CASE WHEN i.indpred IS NULL THEN ' WHERE ' ELSE ' AND ' END ||
               format('(%I IS NULL);', s.deleted_column) AS remedy
          FROM soft s
          JOIN pg_catalog.pg_index i ON i.indrelid = s.oid
          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
          LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = s.oid
                                                 AND con.contype IN ('u', 'x')
         WHERE s.deleted_column IS NOT NULL
           AND i.indisunique AND NOT i.indisprimary
           -- the deleted column itself in the key makes the index unique per deletion
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = s.oid AND a.attname = s.deleted_column
                              AND a.attnum = ANY (i.indkey::int2[]))
           -- indexes of partitions that belong to an index of the parent are reported once, there
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits ih WHERE ih.inhrelid = i.indexrelid)
           -- partial on "deleted IS NULL": that test is one of the predicate's AND-ed terms
           AND NOT coalesce(format('%I IS NULL', s.deleted_column)
                            = ANY (integrity._conjuncts(pg_catalog.pg_get_expr(i.indpred, i.indrelid))), false)
        UNION ALL
        -- 2. foreign keys whose columns lead no index of the referencing table:
        --    every DELETE or key UPDATE on the referenced table scans it.
        SELECT 'warning', 'foreign_key_without_index',
               format('%s.%I', t.qname, con.conname),
               format('foreign key %I of %s (%s) has no index with these leading columns: every DELETE or key '
                      'UPDATE on %s scans %s',
                      con.conname, t.qname, cols.list, con.confrelid::regclass, t.qname),
               format('CREATE INDEX ON %s (%s);', t.qname, cols.list)
          FROM tbl t
          JOIN pg_catalog.pg_constraint con ON con.conrelid = t.oid AND con.contype = 'f' AND con.conparentid = 0
         CROSS JOIN LATERAL (
               SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) AS list
                 FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) cols
         WHERE NOT EXISTS (
               SELECT FROM pg_catalog.pg_index i
                WHERE i.indrelid = t.oid AND i.indpred IS NULL
                  AND i.indnkeyatts >= cardinality(con.conkey)
                  AND (SELECT array_agg(x ORDER BY x)
                         FROM unnest((string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(con.conkey)]) x)
                      = (SELECT array_agg(x ORDER BY x) FROM unnest(con.conkey) x))
        UNION ALL
        -- 3. constraints added NOT VALID and never validated: existing rows may break them.
        SELECT 'warning', 'not_valid_constraint',
               format('%s.%I', t.qname, con.conname),
               format('%s constraint %I of %s is NOT VALID: rows inserted before it was added are not checked',
                      CASE con.contype WHEN 'f' THEN 'foreign key' WHEN 'n' THEN 'not-null' ELSE 'check' END,
                      con.conname, t.qname),
               format('ALTER TABLE %s VALIDATE CONSTRAINT %I;', t.qname, con.conname)
          FROM tbl t
          JOIN pg_catalog.pg_constraint con ON con.conrelid = t.oid
         WHERE NOT con.convalidated AND con.conparentid = 0 AND con.coninhcount = 0
        UNION ALL
        -- 4. guarded tables without a primary key: guard errors and violations()
        --    can only name rows by ctid.
        SELECT 'warning', 'guarded_table_without_primary_key', t.qname,
               format('%s has pg_integrity guards (%s) but no primary key: errors and reports cannot name its rows '
                      'by a stable key', t.qname,
                      (SELECT string_agg(g.guard, ', ' ORDER BY g.guard) FROM integrity.guard_registry g
                        WHERE g.table_name::oid = t.oid)),
               coalesce(
                   -- a unique index over NOT NULL columns can become the primary key
                   (SELECT CASE WHEN t.relkind = 'r'
                                THEN format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I;',
                                            t.qname, ic.relname, ic.relname)
                                ELSE format('ALTER TABLE %s ADD PRIMARY KEY (%s);', t.qname,
                                            (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
                                               FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                                               JOIN pg_catalog.pg_attribute a
                                                 ON a.attrelid = t.oid AND a.attnum = k.attnum)) END
                      FROM pg_catalog.pg_index i
                      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                     WHERE i.indrelid = t.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                       AND i.indexprs IS NULL AND i.indnatts = i.indnkeyatts
                       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                        WHERE a.attrelid = t.oid AND a.attnum = ANY (i.indkey::int2[])
                                          AND NOT a.attnotnull)
                     ORDER BY i.indnatts, ic.relname
                     LIMIT 1),
                   -- else an identity column, else a column named id (with the
                   -- partition key, which the primary key of a partitioned table includes)
                   (SELECT format('ALTER TABLE %s ADD PRIMARY KEY (%s);', t.qname,
                                  (SELECT string_agg(quote_ident(pa.attname), ', ' ORDER BY pa.attnum <> a.attnum, k.ord)
                                     FROM pg_catalog.pg_attribute pa
                                     LEFT JOIN (SELECT pk.attnum, pk.ord
                                                  FROM pg_catalog.pg_partitioned_table pt,
                                                       unnest(pt.partattrs::int2[]) WITH ORDINALITY pk(attnum, ord)
                                                 WHERE pt.partrelid = t.oid) k ON k.attnum = pa.attnum
                                    WHERE pa.attrelid = t.oid AND (pa.attnum = a.attnum OR k.attnum IS NOT NULL)))
                      FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND (a.attidentity <> '' OR a.attname = 'id')
                     ORDER BY a.attidentity = '', a.attnum
                     LIMIT 1),
                   format('ALTER TABLE %s ADD PRIMARY KEY (<key columns>);', t.qname))
          FROM tbl t
         WHERE EXISTS (SELECT FROM integrity.guard_registry g WHERE g.table_name::oid = t.oid)
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint con
                            WHERE con.conrelid = t.oid AND con.contype = 'p')
    )
    SELECT p.severity, p.rule, p.object_name, p.problem, p.remedy
      FROM problems p
     ORDER BY p.object_name COLLATE "C", p.rule COLLATE "C";
END;
$$;

-- One level of a manifest as _manifest_objects walks it: an object (an
-- absent collection is empty).  Anything else is refused with the path to it.
CREATE FUNCTION integrity._manifest_level(level jsonb, path text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF level IS NULL THEN
        RETURN '{}';
    ELSIF pg_catalog.jsonb_typeof(level) <> 'object' THEN
        RAISE EXCEPTION 'not a pg_integrity schema manifest'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('%s is a JSON %s, not an object.', path, pg_catalog.jsonb_typeof(level));
    END IF;
    RETURN level;
END;
$$;

-- The manifest flattened: one row per object, with the attributes it is
-- compared on (props: without its child objects) and the whole object (full).
-- Names are quoted with quote_ident and joined with dots.
CREATE OR REPLACE FUNCTION integrity._manifest_objects(manifest jsonb)
RETURNS TABLE (object_kind text, object_name text, schema_name text, parent_rank int, parent_name text,
               child_rank int, child_name text, props jsonb, full_object jsonb)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- schemas
    SELECT 'schema', pg_catalog.quote_ident(s.key), s.key, 0, NULL::text, 0, NULL::text,
           '{}'::jsonb, integrity._manifest_level(s.value, format('$.schemas.%s', to_json(s.key)))
      FROM pg_catalog.jsonb_each(manifest -> 'schemas') s
    UNION ALL
    -- objects of a schema
    SELECT k.kind, pg_catalog.quote_ident(s.key) || '.' ||
                   CASE WHEN k.kind IN ('function', 'extension') THEN o.key ELSE pg_catalog.quote_ident(o.key) END,
           s.key, k.rank, o.key, 0, NULL,
           integrity._manifest_level(o.value, format('$.schemas.%s.%s.%s', to_json(s.key), k.collection, to_json(o.key)))
             - ARRAY['columns', 'constraints', 'indexes', 'triggers', 'policies', 'guards'],
           o.value
      FROM pg_catalog.jsonb_each(manifest -> 'schemas') s
     CROSS JOIN (VALUES ('extensions', 'extension', 1), ('types', 'type', 2), ('tables', 'table', 3),
                        ('views', 'view', 4), ('sequences', 'sequence', 5), ('functions', 'function', 6))
                AS k(collection, kind, rank)
     CROSS JOIN LATERAL pg_catalog.jsonb_each(integrity._manifest_level(
                    s.value -> k.collection, format('$.schemas.%s.%s', to_json(s.key), k.collection))) o
    UNION ALL
    -- objects of a table
    SELECT k.kind, pg_catalog.quote_ident(s.key) || '.' || pg_catalog.quote_ident(t.key) || '.' ||
                   pg_catalog.quote_ident(o.key),
           s.key, 3, t.key, k.rank, o.key, o.value,
           integrity._manifest_level(o.value, format('$.schemas.%s.tables.%s.%s.%s', to_json(s.key), to_json(t.key),
                                                     k.collection, to_json(o.key)))
      FROM pg_catalog.jsonb_each(manifest -> 'schemas') s
     CROSS JOIN LATERAL pg_catalog.jsonb_each(integrity._manifest_level(
                    s.value -> 'tables', format('$.schemas.%s.tables', to_json(s.key)))) t
     CROSS JOIN (VALUES ('columns', 'column', 1), ('constraints', 'constraint', 2), ('indexes', 'index', 3),
                        ('triggers', 'trigger', 4), ('policies', 'policy', 5), ('guards', 'guard', 6))
                AS k(collection, kind, rank)
     CROSS JOIN LATERAL pg_catalog.jsonb_each(integrity._manifest_level(
                    t.value -> k.collection, format('$.schemas.%s.tables.%s.%s', to_json(s.key), to_json(t.key),
                                                    k.collection))) o
$$;

-- A manifest whose schema keys are longer than a name is refused instead of
-- being compared under a truncated name.
CREATE OR REPLACE FUNCTION integrity._check_manifest(manifest jsonb, caller text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
BEGIN
    IF manifest IS NULL THEN
        RAISE EXCEPTION '%: argument "manifest" must not be NULL', caller
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.jsonb_typeof(manifest) IS DISTINCT FROM 'object'
       OR pg_catalog.jsonb_typeof(manifest -> 'schemas') IS DISTINCT FROM 'object'
       OR manifest -> 'manifest_version' IS DISTINCT FROM '1'::jsonb THEN
        RAISE EXCEPTION '%: argument "manifest" is not a pg_integrity schema manifest', caller
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the jsonb that integrity.schema_manifest() returned (manifest_version 1).';
    END IF;
    -- Schema names are compared as name, which keeps 63 bytes: a longer key
    -- would silently match a truncated schema, or none.
    IF EXISTS (SELECT FROM pg_catalog.jsonb_object_keys(manifest -> 'schemas') k
                WHERE pg_catalog.octet_length(k) > 63) THEN
        RAISE EXCEPTION '%: argument "manifest" is not a pg_integrity schema manifest', caller
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A schema name in it is longer than 63 bytes, which no PostgreSQL schema name can be.';
    END IF;
    -- Every level the comparison walks is an object.
    BEGIN
        PERFORM count(e.props) + count(e.full_object) FROM integrity._manifest_objects(manifest) e;
    EXCEPTION WHEN invalid_parameter_value THEN
        GET STACKED DIAGNOSTICS problem = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION '%: argument "manifest" is not a pg_integrity schema manifest', caller
            USING ERRCODE = 'invalid_parameter_value', DETAIL = problem;
    END;
END;
$$;

-- Inheritance children of guarded tables are refused (55000) by registration
-- and by the event trigger, and reported by health().  The event trigger also
-- looks at tables created inside CREATE SCHEMA, foreign partitions (refused
-- under an append-only table: they cannot have its TRUNCATE trigger), and typed
-- tables changed by ALTER TYPE … CASCADE: its tags change, so it is made again.
CREATE FUNCTION integrity._inheritance_children(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.inhrelid::regclass
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = tbl AND NOT c.relispartition
     ORDER BY 1
$$;

CREATE FUNCTION integrity._refuse_inheritance(parent regclass, child regclass, guard text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'table "%" cannot inherit from "%", which has the % guard', child, parent, guard
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = format('Guards cover partitions, not inheritance children, yet UPDATE, DELETE and TRUNCATE'
                              ' of %s reach the rows of %s.', parent, child),
              HINT = format('Make %s a partition (CREATE TABLE … PARTITION OF), or remove the inheritance'
                            ' (ALTER TABLE %s NO INHERIT %s) before registering.', child, child, parent);
END;
$$;

CREATE OR REPLACE FUNCTION integrity._record_guard(tbl regclass, guard text, columns text[], options jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._refuse_inheritance(tbl, child, guard) FROM integrity._inheritance_children(tbl) child LIMIT 1;
    INSERT INTO integrity.guard_registry AS g (table_name, guard, columns, options)
    VALUES (tbl, guard, columns, options)
    ON CONFLICT (table_name, guard) DO UPDATE
        SET columns = EXCLUDED.columns, options = EXCLUDED.options
        WHERE (g.columns, g.options) IS DISTINCT FROM (EXCLUDED.columns, EXCLUDED.options)
$$;

CREATE OR REPLACE FUNCTION integrity._cover_truncate(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    -- A foreign table cannot have a TRUNCATE trigger.
    SELECT tree.relid INTO rel
      FROM pg_catalog.pg_partition_tree(tbl) AS tree
      JOIN pg_catalog.pg_class c ON c.oid = tree.relid
     WHERE c.relkind = 'f'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'foreign table "%" cannot be a partition of append-only table "%"', rel, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A foreign table cannot have the trigger that refuses TRUNCATE of a partition.',
                  HINT = 'Keep foreign tables out of the partition tree, or register the guard with allow_truncate => true.';
    END IF;
    FOR rel IN SELECT integrity._partition_tree(tbl) LOOP
        -- A trigger of that name that is not this one (planted before the
        -- registration, say) is replaced.
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger
                        WHERE tgrelid = rel AND tgname = 'integrity_append_only_truncate'
                          AND tgfoid = 'integrity.append_only_truncate_guard()'::pg_catalog.regprocedure
                          AND tgtype = 34 AND tgqual IS NULL AND tgnargs = 0) THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER integrity_append_only_truncate BEFORE TRUNCATE ON %s'
                           ' FOR EACH STATEMENT EXECUTE FUNCTION integrity.append_only_truncate_guard()', rel);
        END IF;
    END LOOP;
END;
$$;

CREATE FUNCTION integrity._renames(pg_catalog.pg_ddl_command) RETURNS boolean
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'integrity_renames';
CREATE FUNCTION integrity._drops_expired_partition(pg_catalog.oid) RETURNS boolean
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'integrity_drops_expired_partition';

-- A ledger_credit guard knows its accounts table by name (the name its
-- trigger is given survives pg_dump): renaming, moving or dropping that table
-- would make every insert into the ledger fail.  Refused for the tables a
-- command renamed or moved (the name no longer resolves and the table has
-- the accounts' columns) and for the tables a command dropped (by name),
-- unless the ledger went with them.
CREATE OR REPLACE FUNCTION integrity._refuse_accounts_ddl(changed regclass[], dropped text[])
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded record;
BEGIN
    IF coalesce(cardinality(changed), 0) + coalesce(cardinality(dropped), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT r.table_name, r.options ->> 'accounts' AS accounts INTO guarded
      FROM integrity.guard_registry r
     WHERE r.guard = 'ledger_credit'
       AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
       AND integrity._relation(r.options ->> 'accounts') IS NULL
       AND ((r.options ->> 'accounts') = ANY (dropped)
            OR EXISTS (SELECT FROM unnest(changed) AS t(rel)
                        WHERE integrity._has_columns(t.rel, r.columns || ARRAY[r.options ->> 'limit_column',
                                                                               r.options ->> 'used_column'])))
     ORDER BY r.table_name
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table "%" is the accounts table of the ledger_credit guard of "%"',
                        guarded.accounts, guarded.table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The guard finds the table by this name: renamed, moved or dropped, every insert into the ledger would fail.',
                  HINT = format('Call integrity.unprotect(%L, ''ledger_credit'') first, then register the guard again.',
                                guarded.table_name::text);
    END IF;
END;
$$;

CREATE FUNCTION integrity._on_ddl_command_start() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_on_ddl_command_start';

-- The tables whose rows an ALTER TABLE or ALTER TYPE of tbl reaches: tbl, its
-- partitioned ancestors, and the tables typed by tbl when it is a composite
-- type (ALTER TYPE … CASCADE).
CREATE FUNCTION integrity._altered_tables(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tbl
    UNION
    SELECT a.relid::regclass FROM pg_catalog.pg_partition_ancestors(tbl) a
    UNION
    SELECT t.oid::regclass
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_class t ON t.reloftype = c.reltype
     WHERE c.oid = tbl AND c.relkind = 'c'
$$;

-- Commands that would rewrite or remove rows of an append-only table, or of
-- one of its partitions: ALTER COLUMN … TYPE, DROP COLUMN, SET EXPRESSION,
-- DETACH PARTITION, and the same through ALTER TYPE … CASCADE on the type of
-- a typed table.  Called by the ddl_command_start event trigger, before the
-- command does any work.
CREATE OR REPLACE FUNCTION integrity._refuse_history_ddl(tbl regclass, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded record;
BEGIN
    SELECT r.table_name, n.nspname, g.relname INTO guarded
      FROM integrity.guard_registry r
      JOIN pg_catalog.pg_class g ON g.oid = r.table_name
      JOIN pg_catalog.pg_namespace n ON n.oid = g.relnamespace
     WHERE r.guard = 'append_only'
       AND r.table_name IN (SELECT integrity._altered_tables(tbl))
     ORDER BY r.table_name
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot % of append-only table "%"', action, guarded.table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The append_only guard of %s keeps every row as it was written.', guarded.table_name),
                  HINT = format('To change the table''s history anyway, lift the guard first:'
                                ' SELECT integrity.unprotect(%L, ''append_only'');', guarded.table_name::text),
                  SCHEMA = guarded.nspname, TABLE = guarded.relname;
    END IF;
END;
$$;

-- ALTER COLUMN … TYPE of a column whose values a guard keeps (immutable and
-- write-once columns, the version, stock and credit): its USING expression
-- rewrites every value past the guard, which no UPDATE could.  Also through
-- ALTER TYPE … CASCADE on the type of a typed table.
CREATE FUNCTION integrity._refuse_column_rewrite(tbl regclass, col text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded record;
BEGIN
    SELECT r.table_name, r.guard, n.nspname, g.relname INTO guarded
      FROM integrity.guard_registry r
      JOIN pg_catalog.pg_class g ON g.oid = r.table_name
      JOIN pg_catalog.pg_namespace n ON n.oid = g.relnamespace
     WHERE r.guard IN ('immutable', 'write_once', 'versioning', 'stock', 'credit')
       AND col = ANY (r.columns)
       AND r.table_name IN (SELECT integrity._altered_tables(tbl))
     ORDER BY r.table_name, r.guard
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot change the type of column "%" of table "%"', col, guarded.table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The column is protected by the %s guard of %s: a new type rewrites every value.',
                                  guarded.guard, guarded.table_name),
                  HINT = format('Call integrity.unprotect(%L, %L) first, then register the guard again.',
                                guarded.table_name::text, guarded.guard),
                  SCHEMA = guarded.nspname, TABLE = guarded.relname, COLUMN = col;
    END IF;
END;
$$;

-- DROP EXTENSION pg_integrity (or DROP SCHEMA integrity) would drop every
-- guard trigger and leave the tables unguarded without a word.
CREATE FUNCTION integrity._refuse_extension_drop()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded text[];
BEGIN
    SELECT array_agg(DISTINCT r.table_name::text ORDER BY r.table_name::text) INTO guarded
      FROM integrity.guard_registry r
     WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name);
    IF guarded IS NOT NULL THEN
        RAISE EXCEPTION 'cannot drop extension pg_integrity while it guards % table%', cardinality(guarded),
                        CASE WHEN cardinality(guarded) > 1 THEN 's' ELSE '' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Dropping it would remove the guards of %s%s.', array_to_string(guarded[1:10], ', '),
                                  CASE WHEN cardinality(guarded) > 10
                                       THEN format(' and %s more tables', cardinality(guarded) - 10) ELSE '' END),
                  HINT = 'Lift every guard first: SELECT integrity.unprotect(t)'
                         ' FROM (SELECT DISTINCT table_name FROM integrity.guards) AS g(t);';
    END IF;
END;
$$;

-- Dropping an append-only table or one of its partitions (DROP TABLE, DROP
-- SCHEMA … CASCADE, DROP OWNED): a partition is known by the clone of the
-- guard trigger that is dropped with it, as its parent link is gone by now.
CREATE OR REPLACE FUNCTION integrity._refuse_history_drop()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped record;
BEGIN
    SELECT o.object_identity AS tbl, o.address_names[1] AS nspname, o.address_names[2] AS relname,
           r.table_name IS NULL AS partition INTO dropped
      FROM pg_catalog.pg_event_trigger_dropped_objects() o
      LEFT JOIN integrity.guard_registry r ON r.table_name = o.objid AND r.guard = 'append_only'
     WHERE o.object_type = 'table'
       AND NOT integrity._drops_expired_partition(o.objid)
       AND (r.table_name IS NOT NULL
            OR EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() t
                        WHERE t.object_type = 'trigger' AND t.address_names[3] = 'integrity_append_only'
                          AND t.address_names[1:2] = o.address_names))
     ORDER BY partition, tbl
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot drop append-only table "%"', dropped.tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN dropped.partition
                                THEN 'It is a partition of an append-only table: dropping it removes rows of that table.'
                                ELSE 'Dropping it removes every row it holds.' END,
                  HINT = CASE WHEN dropped.partition
                              THEN 'Lift the append_only guard of the partitioned table first with integrity.unprotect().'
                              ELSE format('Lift the guard first: SELECT integrity.unprotect(%L, ''append_only'');',
                                          dropped.tbl) END,
                  SCHEMA = dropped.nspname, TABLE = dropped.relname;
    END IF;
END;
$$;


-- The extension's event triggers, for installation and for the remedies of
-- health().  ddl_command_start refuses commands that would rewrite or remove
-- guarded rows before they run.  ddl_command_end checks and extends the
-- guards after tables are created (also inside CREATE SCHEMA), altered or
-- attached, typed tables changed with their type, triggers created or
-- altered, schemas renamed.  sql_drop refuses drops of guard triggers and of
-- append-only tables, and forgets dropped tables.
CREATE FUNCTION integrity._event_triggers()
RETURNS TABLE (evtname name, evtevent text, tags text[], evtfunction name, consequence text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('integrity_ddl_command_start'::name, 'ddl_command_start',
            ARRAY['ALTER TABLE', 'ALTER TYPE', 'DROP EXTENSION', 'DROP SCHEMA', 'DROP TABLE'], '_on_ddl_command_start'::name,
            'columns of append-only tables can be dropped or changed, their partitions detached,'
            ' and the extension dropped with all its guards'),
           ('integrity_ddl_command_end', 'ddl_command_end',
            ARRAY['CREATE TABLE', 'ALTER TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER', 'CREATE SCHEMA', 'ALTER SCHEMA',
                  'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'ALTER TYPE'], '_on_ddl_command_end',
            'guard triggers can be disabled, re-moded or replaced, guarded columns renamed or dropped,'
            ' and new partitions are not covered'),
           ('integrity_sql_drop', 'sql_drop', NULL, '_on_sql_drop',
            'guard triggers and append-only tables can be dropped, and dropped tables stay in the registry')
$$;

-- The statement that makes one of them (an event trigger's tags are literals
-- in its definition).  Like the guards themselves, their keepers also run
-- under session_replication_role = replica.
CREATE FUNCTION integrity._event_trigger_sql(evtname name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CREATE EVENT TRIGGER %1$I ON %2$s%3$s EXECUTE FUNCTION integrity.%4$I(); ALTER EVENT TRIGGER %1$I ENABLE ALWAYS;',
                  e.evtname, e.evtevent,
                  ' WHEN TAG IN (' || (SELECT string_agg(pg_catalog.quote_literal(t), ', ') FROM unnest(e.tags) t) || ')',
                  e.evtfunction)
      FROM integrity._event_triggers() e
     WHERE e.evtname = $1
$$;

-- Hash chains (sql/hash_chain.sql): a new guard kind.
ALTER TABLE integrity.guard_registry DROP CONSTRAINT guard_registry_known_guard,
    ADD CONSTRAINT guard_registry_known_guard
        CHECK (guard IN ('append_only', 'immutable', 'write_once', 'versioning',
                         'stock', 'credit', 'ledger_credit', 'hash_chain', 'soft_delete', 'lifecycle'));

-- The relations a delete of tbl's rows can reach: tbl and its partitions, and
-- (recursively) the tables whose ON DELETE CASCADE foreign keys reference one
-- of them, with their partitions.
CREATE FUNCTION integrity._cascade_reach(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE reach(rel) AS (
        SELECT integrity._partition_tree(tbl)
        UNION
        SELECT tree.rel
          FROM reach r
          JOIN pg_catalog.pg_constraint c ON c.confrelid = r.rel AND c.contype = 'f' AND c.confdeltype = 'c'
         CROSS JOIN LATERAL integrity._partition_tree(c.conrelid::regclass) AS tree(rel))
    SELECT rel FROM reach
$$;

-- Runs a statement that the extension built to delete guarded rows for good
-- (src/sanctioned.rs): only for the owner of tbl, and only the guards of the
-- relations _cascade_reach(tbl) lists let its deletes through.
CREATE FUNCTION integrity._execute_sanctioned(tbl regclass, statement text) RETURNS bigint
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'integrity_execute_sanctioned';

CREATE FUNCTION integrity.hash_chain_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_hash_chain_guard';
COMMENT ON FUNCTION integrity.hash_chain_guard() IS
    'Trigger: numbers each inserted row within its chain and sets its hash from the chain''s last row.';

-- Hash-chained ledgers.  Every row of a chained table carries its chain's
-- sequence number (1, 2, 3, … per chain) and the SHA-256 of the previous
-- row's hash and of the row's canonical encoding; the integrity_hash_chain
-- trigger (src/hash_chain.rs) fills both in.  The encoding is written once,
-- here, for the trigger's statement and for verify_chain().

-- The column types whose text form depends on a session setting (TimeZone,
-- IntervalStyle, extra_float_digits, lc_monetary, bytea_output), each with
-- the expression over %s (the column) that does not.
CREATE FUNCTION integrity._chain_settled_types()
RETURNS TABLE (type_oid regtype, expression text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('timestamptz'::regtype, '(%s AT TIME ZONE ''UTC'')'),
           ('bytea', 'pg_catalog.encode(%s, ''hex'')'),
           ('float4', 'pg_catalog.encode(pg_catalog.float4send(%s), ''hex'')'),
           ('float8', 'pg_catalog.encode(pg_catalog.float8send(%s), ''hex'')'),
           ('interval', 'pg_catalog.encode(pg_catalog.interval_send(%s), ''hex'')'),
           ('money', 'pg_catalog.encode(pg_catalog.cash_send(%s), ''hex'')')
$$;

-- Why column col of tbl cannot be hashed (NULL when it can): a composite type,
-- or an array or range of a type whose text depends on a session setting
-- (the types themselves, and domains over them, are written as above).
CREATE FUNCTION integrity._chain_column_problem(tbl regclass, col text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE reached(type_oid, contained) AS (
        SELECT a.atttypid, false FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped
        UNION
        SELECT x.inner_type, r.contained OR x.container
          FROM reached r
          JOIN pg_catalog.pg_type t ON t.oid = r.type_oid
         CROSS JOIN LATERAL (VALUES (CASE WHEN t.typtype = 'd' THEN t.typbasetype END, false),
                                    (CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem END, true),
                                    ((SELECT g.rngsubtype FROM pg_catalog.pg_range g
                                       WHERE g.rngtypid = t.oid OR g.rngmultitypid = t.oid), true)
                            ) AS x(inner_type, container)
         WHERE x.inner_type IS NOT NULL
    )
    SELECT CASE WHEN bool_or(t.typtype = 'c')
                THEN format('column "%s" is of a composite type', col)
                WHEN bool_or(r.contained AND r.type_oid IN (SELECT s.type_oid FROM integrity._chain_settled_types() s))
                THEN format('column "%s" is of type %s, whose elements are written differently under other'
                            ' session settings', col,
                            (SELECT r0.type_oid::regtype FROM reached r0 WHERE NOT r0.contained LIMIT 1))
           END
      FROM reached r
      JOIN pg_catalog.pg_type t ON t.oid = r.type_oid
$$;

-- A jsonb array of columns of the row rowref (`t`, `($3)`), every value
-- written as the session settings cannot change it: the chain key, and, in
-- UTF-8, the encoding a row is hashed with.
CREATE FUNCTION integrity._chain_values_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('pg_catalog.jsonb_build_array(%s)',
                  coalesce(string_agg(format(coalesce(s.expression, '%s'), format('%s.%I', rowref, u.col)), ', '
                                      ORDER BY u.n), ''))
      FROM unnest(columns) WITH ORDINALITY AS u(col, n)
      LEFT JOIN pg_catalog.pg_attribute a
        ON a.attrelid = tbl AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
      LEFT JOIN integrity._chain_settled_types() s
        ON s.type_oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
$$;

CREATE FUNCTION integrity._chain_encoding_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('pg_catalog.convert_to(%s::text, ''UTF8'')', integrity._chain_values_sql(tbl, columns, rowref))
$$;

-- The registered chain that tbl (the table, or one of its partitions) belongs to.
CREATE FUNCTION integrity._chain_of(tbl regclass)
RETURNS TABLE (chained regclass, chain_columns text[], seq_column text, hash_column text, hashed text[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name, r.columns, r.options ->> 'seq_column', r.options ->> 'hash_column',
           ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r.options -> 'hashed_columns'))
      FROM integrity.guard_registry r
     WHERE r.guard = 'hash_chain'
       AND r.table_name IN (SELECT tbl UNION ALL SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
     LIMIT 1
$$;

-- The chain registered on tbl itself, for the functions that take a chained
-- table: refused with 55000 when there is none.
CREATE FUNCTION integrity._registered_chain(tbl regclass, caller text)
RETURNS TABLE (chained regclass, chain_columns text[], seq_column text, hash_column text, hashed text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    RETURN QUERY SELECT c.* FROM integrity._chain_of(tbl) c WHERE c.chained = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table "%" has no hash chain', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register one with integrity.enable_hash_chain().';
    END IF;
END;
$$;

-- The two statements the trigger runs for each row of tbl.  lock_tail locks
-- the last row of the row's chain; link computes the row's sequence number
-- and hash from the last row (on a newer snapshot under READ COMMITTED, where
-- it may find a row inserted meanwhile: the trigger then locks that one), or,
-- in a chain whose rows were all purged, from its anchor, and returns the
-- sequence number of the last row it found.
-- $1 … $k are the values of the chain columns, $k+1 is the row.
CREATE FUNCTION integrity._chain_statements(tbl regclass)
RETURNS TABLE (chained regclass, lock_tail text, link text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.chained,
           format('SELECT t.%1$I FROM %2$s t%3$s ORDER BY t.%1$I DESC LIMIT 1 FOR UPDATE',
                  c.seq_column, c.chained, w.clause),
           format('SELECT coalesce(tail.seq, (SELECT a.seq FROM integrity.chain_anchors a WHERE %6$s), 0) + 1,'
                  ' pg_catalog.sha256(coalesce(tail.hash, (SELECT a.hash FROM integrity.chain_anchors a WHERE %6$s),'
                  ' ''\x''::bytea) || %1$s), tail.seq'
                  ' FROM (SELECT) AS here LEFT JOIN LATERAL'
                  ' (SELECT t.%2$I AS seq, t.%3$I AS hash FROM %4$s t%5$s ORDER BY t.%2$I DESC LIMIT 1) AS tail ON true',
                  integrity._chain_encoding_sql(c.chained, c.hashed, format('($%s)', cardinality(c.chain_columns) + 1)),
                  c.seq_column, c.hash_column, c.chained, w.clause,
                  format('a.table_name = %s::pg_catalog.regclass AND a.chain = %s', c.chained::oid,
                         integrity._chain_values_sql(c.chained, c.chain_columns,
                                                     format('($%s)', cardinality(c.chain_columns) + 1))))
      FROM integrity._chain_of(tbl) c
     CROSS JOIN LATERAL (SELECT ' WHERE ' || string_agg(format('t.%I = $%s', col, n), ' AND ' ORDER BY n)
                           FROM unnest(c.chain_columns) WITH ORDINALITY AS u(col, n)) AS w(clause)
$$;

CREATE FUNCTION integrity.enable_hash_chain(tbl regclass, chain_columns text[] DEFAULT NULL,
                                            seq_column name DEFAULT 'chain_seq', hash_column name DEFAULT 'row_hash')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'enable_hash_chain';
    chain text[] := '{}';
    hashed text[];
    problem text;
    rel record;
    registered record;
    unchained boolean;
    append_only jsonb;
    chain_index record;
    current_chain jsonb;
    last_seq bigint;
    last_hash bytea;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(seq_column, 'seq_column', caller);
    PERFORM integrity._require_argument(hash_column, 'hash_column', caller);
    IF integrity._column_type(tbl, seq_column) <> 'bigint'::regtype THEN
        RAISE EXCEPTION '%: sequence column "%" of table "%" must be bigint, not %', caller, seq_column, tbl,
                        integrity._column_type(tbl, seq_column)
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF integrity._column_type(tbl, hash_column) <> 'bytea'::regtype THEN
        RAISE EXCEPTION '%: hash column "%" of table "%" must be bytea, not %', caller, hash_column, tbl,
                        integrity._column_type(tbl, hash_column)
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, seq_column, caller);
    PERFORM integrity._refuse_generated(tbl, hash_column, caller);
    IF seq_column = hash_column THEN
        RAISE EXCEPTION '%: seq_column and hash_column must differ', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(chain_columns) > 0 THEN
        chain := integrity._check_columns(tbl, chain_columns, caller);
    END IF;
    IF seq_column = ANY (chain) OR hash_column = ANY (chain) THEN
        RAISE EXCEPTION '%: the sequence and hash columns cannot be chain columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.attname INTO problem
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = ANY (chain) AND NOT a.attnotnull
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: chain column "%" of table "%" must be NOT NULL', caller, problem, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', tbl, problem);
    END IF;
    -- Every other column is hashed, in column order: those the table has at
    -- the first registration.  Registering again keeps them (the rows were
    -- hashed with them), and cannot regroup or renumber the rows.
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'hash_chain';
    IF FOUND THEN
        IF registered.columns IS DISTINCT FROM chain OR registered.options ->> 'seq_column' <> seq_column
           OR registered.options ->> 'hash_column' <> hash_column THEN
            RAISE EXCEPTION '%: table "%" is chained already, by other columns', caller, tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('It is chained by (%s), numbered in %s and hashed in %s.',
                                      array_to_string(registered.columns, ', '), registered.options ->> 'seq_column',
                                      registered.options ->> 'hash_column'),
                      HINT = format('To chain it otherwise, lift the chain first: SELECT integrity.unprotect(%L, ''hash_chain'');',
                                    tbl::text);
        END IF;
        hashed := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(registered.options -> 'hashed_columns'));
    ELSE
        hashed := ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
                           AND a.attname NOT IN (seq_column, hash_column)
                         ORDER BY a.attnum);
    END IF;
    SELECT p INTO problem FROM unnest(hashed) AS col, integrity._chain_column_problem(tbl, col) AS p
     WHERE p IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: %', caller, problem
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'A row is hashed in a form that must not depend on the settings of the session that reads it.';
    END IF;

    PERFORM integrity._record_guard(tbl, 'hash_chain', chain,
                                    jsonb_build_object('seq_column', seq_column, 'hash_column', hash_column,
                                                       'hashed_columns', to_jsonb(hashed)));
    -- Rows that are there already without a place in a chain are chained in
    -- key order.  An append-only guard is lifted for that and put back as it
    -- was, in the same transaction: the caller owns the table.
    EXECUTE format('SELECT EXISTS (SELECT FROM %s t WHERE t.%I IS NULL AND t.%I IS NULL)', tbl, seq_column, hash_column)
       INTO unchained;
    SELECT r.options INTO append_only
      FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'append_only';
    IF unchained THEN
        IF append_only IS NOT NULL THEN
            PERFORM integrity.unprotect(tbl, 'append_only');
        END IF;
        FOR rel IN EXECUTE format('SELECT t.ctid AS row_id, t.tableoid::regclass AS part, %s AS chain FROM %s t'
                                  ' WHERE t.%I IS NULL AND t.%I IS NULL ORDER BY 3, %s',
                                  integrity._chain_values_sql(tbl, chain, 't'), tbl, seq_column, hash_column,
                                  coalesce((SELECT string_agg(format('t.%I', k), ', ')
                                              FROM unnest(integrity._key_columns(tbl)) AS k), 't.ctid'))
        LOOP
            IF current_chain IS DISTINCT FROM rel.chain THEN
                current_chain := rel.chain;
                EXECUTE format('SELECT t.%1$I, t.%2$I FROM %3$s t WHERE %4$s = $1 AND t.%1$I IS NOT NULL'
                               ' ORDER BY t.%1$I DESC LIMIT 1',
                               seq_column, hash_column, tbl, integrity._chain_values_sql(tbl, chain, 't'))
                   INTO last_seq, last_hash USING rel.chain;
            END IF;
            last_seq := coalesce(last_seq, 0) + 1;
            EXECUTE format('UPDATE %s t SET %I = $1, %I = pg_catalog.sha256($2 || %s) WHERE t.ctid = $3 RETURNING t.%I',
                           rel.part, seq_column, hash_column, integrity._chain_encoding_sql(tbl, hashed, 't'),
                           hash_column)
               INTO last_hash USING last_seq, coalesce(last_hash, '\x'::bytea), rel.row_id;
        END LOOP;
    END IF;

    -- The trigger reads the last row of a chain by this index.
    SELECT left(c.relname || '_chain', 63) AS name, c.relnamespace INTO chain_index
      FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class
                    WHERE relname = chain_index.name AND relnamespace = chain_index.relnamespace) THEN
        EXECUTE format('CREATE INDEX %I ON %s (%s)', chain_index.name, tbl,
                       (SELECT string_agg(format('%I', col), ', ') FROM unnest(chain || seq_column::text) AS col));
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_hash_chain BEFORE INSERT ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.hash_chain_guard(%s)',
                   tbl, (SELECT string_agg(quote_literal(a), ', ')
                           FROM unnest(ARRAY[seq_column::text, hash_column::text] || chain) AS a));
    IF append_only IS NULL OR unchained THEN
        PERFORM integrity.protect_append_only(tbl, coalesce((append_only ->> 'allow_truncate')::boolean, false));
    END IF;
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.enable_hash_chain(regclass, text[], name, name) IS
    'Every INSERT is chained: per chain (the values of chain_columns), seq_column numbers the rows 1, 2, 3, … and hash_column is SHA-256 of the previous row''s hash and the row. Makes the table append-only.';

-- The rows of tbl's chains that do not hold: for each chain, the first row
-- that was changed, removed, inserted out of band or re-ordered; with a digest
-- from chain_digest(), also a removed or re-forged end of a chain.  One pass
-- over the table, in chain order.  A chain that purge_expired() shortened
-- starts at its anchor (integrity.chain_anchors).
CREATE FUNCTION integrity.verify_chain(tbl regclass, digest jsonb DEFAULT NULL)
RETURNS TABLE (chain jsonb, row_key jsonb, problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM integrity._registered_chain(tbl, 'verify_chain');
    IF digest IS NOT NULL AND (jsonb_typeof(digest -> 'chains') IS DISTINCT FROM 'array'
                               OR digest ->> 'table' IS DISTINCT FROM tbl::text) THEN
        RAISE EXCEPTION 'verify_chain: argument "digest" is not a digest of table "%"', tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass what integrity.chain_digest(%L) returned.', tbl::text);
    END IF;
    RETURN QUERY EXECUTE format($query$
        WITH links AS (
            SELECT %1$s AS chain, %2$s AS row_key, t.%3$I AS seq, t.%4$I AS hash,
                   pg_catalog.sha256(coalesce(pg_catalog.lag(t.%4$I) OVER w, a.hash, '\x'::bytea) || %5$s) AS expected,
                   coalesce(pg_catalog.lag(t.%3$I) OVER w, a.seq) AS previous
              FROM %6$s t
              LEFT JOIN integrity.chain_anchors a ON a.table_name = %9$L::pg_catalog.regclass AND a.chain = %1$s
            WINDOW w AS (%7$s ORDER BY t.%3$I)
        ), problems AS (
            SELECT l.chain, l.row_key, l.seq,
                   CASE WHEN l.seq IS NULL OR l.hash IS NULL
                        THEN 'the row is not chained: it was inserted while the chain trigger did not run'
                        WHEN l.previous IS NULL AND l.seq <> 1
                        THEN pg_catalog.format('the chain starts at %%s: %%s removed', l.seq,
                                               CASE WHEN l.seq = 2 THEN 'row 1 was'
                                                    ELSE pg_catalog.format('rows 1 to %%s were', l.seq - 1) END)
                        WHEN l.seq = l.previous
                        THEN pg_catalog.format('sequence number %%s appears twice', l.seq)
                        WHEN l.seq = l.previous + 2
                        THEN pg_catalog.format('row %%s was removed', l.seq - 1)
                        WHEN l.seq <> l.previous + 1
                        THEN pg_catalog.format('rows %%s to %%s were removed', l.previous + 1, l.seq - 1)
                        WHEN l.hash <> l.expected
                        THEN 'the hash does not match: the row was changed, or the row before it'
                   END AS problem
              FROM links l
            %8$s
        )
        SELECT DISTINCT ON (p.chain) p.chain, p.row_key, p.problem
          FROM problems p
         WHERE p.problem IS NOT NULL
         ORDER BY p.chain, p.seq NULLS FIRST
        $query$,
        integrity._chain_values_sql(tbl, c.chain_columns, 't'), integrity._row_key_sql(tbl),
        c.seq_column, c.hash_column, integrity._chain_encoding_sql(tbl, c.hashed, 't'), tbl,
        (SELECT 'PARTITION BY ' || string_agg(format('t.%I', col), ', ') FROM unnest(c.chain_columns) AS col),
        -- Against a digest: the chains it names, at the rows it names.
        CASE WHEN digest IS NOT NULL THEN $digest$
            UNION ALL
            SELECT d.chain, l.row_key, d.seq,
                   CASE WHEN an.seq > d.seq OR (an.seq = d.seq AND an.hash = pg_catalog.decode(d.hash, 'hex'))
                        THEN NULL  -- purged up to the digest's row, or past it
                        WHEN an.seq = d.seq
                        THEN pg_catalog.format('row %s differs from the digest: the chain was written again', d.seq)
                        WHEN k.chain IS NULL
                        THEN pg_catalog.format('the chain is gone: the digest has %s', d.rows)
                        WHEN l.seq IS NULL
                        THEN pg_catalog.format('the end of the chain was removed: the digest has %s', d.rows)
                        WHEN l.hash IS DISTINCT FROM pg_catalog.decode(d.hash, 'hex')
                        THEN pg_catalog.format('row %s differs from the digest: the chain was written again', d.seq)
                   END
              FROM (SELECT r.*, CASE r.seq WHEN 1 THEN '1 row' ELSE r.seq || ' rows' END AS rows
                      FROM pg_catalog.jsonb_to_recordset($1 -> 'chains') AS r(chain jsonb, seq bigint, hash text)) AS d
              LEFT JOIN (SELECT a.chain FROM links a GROUP BY a.chain) AS k ON k.chain = d.chain
              LEFT JOIN links l ON l.chain = d.chain AND l.seq = d.seq
              LEFT JOIN integrity.chain_anchors an ON an.table_name = $2 AND an.chain = d.chain
            $digest$ ELSE '' END,
        tbl::oid)
    USING digest, tbl;
END;
$$;
COMMENT ON FUNCTION integrity.verify_chain(regclass, jsonb) IS
    'No rows when every chain of the table holds; otherwise the first bad row of each broken chain. With a digest from chain_digest(), also detects a removed or re-written end of a chain.';

-- What a DBA keeps outside the database: the last sequence number and hash
-- of every chain.
CREATE FUNCTION integrity.chain_digest(tbl regclass)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    chains jsonb;
BEGIN
    SELECT * INTO c FROM integrity._registered_chain(tbl, 'chain_digest');
    EXECUTE format('SELECT coalesce(jsonb_agg(jsonb_build_object(''chain'', d.chain, ''seq'', d.seq,'
                   ' ''hash'', pg_catalog.encode(d.hash, ''hex'')) ORDER BY d.chain), ''[]'')'
                   ' FROM (SELECT DISTINCT ON (1) %s AS chain, t.%I AS seq, t.%I AS hash FROM %s t'
                   ' WHERE t.%I IS NOT NULL ORDER BY 1, 2 DESC) d',
                   integrity._chain_values_sql(tbl, c.chain_columns, 't'), c.seq_column, c.hash_column, tbl,
                   c.seq_column)
       INTO chains;
    RETURN jsonb_build_object('table', tbl::text, 'taken_at', now(), 'chains', chains);
END;
$$;
COMMENT ON FUNCTION integrity.chain_digest(regclass) IS
    'The last sequence number and hash of every chain of the table, to keep outside the database and pass to verify_chain() later.';

-- Lifecycle events (sql/lifecycle.sql): a new guard kind, its events table
-- and the helpers, reports and event trigger that know it.
CREATE FUNCTION integrity._lifecycle_events_triggers()
RETURNS TABLE (trigger_name name, tgtype smallint, create_sql text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.trigger_name::name, t.tgtype::smallint,
           format('CREATE TRIGGER %1$I BEFORE %2$s ON integrity.lifecycle_events FOR EACH %3$s'
                  ' EXECUTE FUNCTION integrity.lifecycle_events_guard();'
                  ' ALTER TABLE integrity.lifecycle_events ENABLE ALWAYS TRIGGER %1$I;',
                  t.trigger_name, t.events, t.level)
      FROM (VALUES ('lifecycle_events_append_only', 27, 'UPDATE OR DELETE', 'ROW'),
                   ('lifecycle_events_no_truncate', 34, 'TRUNCATE', 'STATEMENT')
           ) AS t(trigger_name, tgtype, events, level)
$$;

CREATE OR REPLACE FUNCTION integrity._guard_columns(tbl regclass, guard text, columns text[], options jsonb)
RETURNS TABLE (rel regclass, col text, n bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tbl, c.col, c.n FROM unnest(columns) WITH ORDINALITY AS c(col, n)
    UNION ALL
    SELECT tbl, c.col, 100 + c.n
      FROM unnest(ARRAY[options ->> 'amount_column', options ->> 'entry_type_column']) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'ledger_credit'
    UNION ALL
    SELECT tbl, options -> 'retention' ->> 'time_column', 400
     WHERE guard = 'append_only' AND options ? 'retention'
    UNION ALL
    SELECT tbl, c.col, 300 + c.n
      FROM unnest(ARRAY[options ->> 'seq_column', options ->> 'hash_column']
                  || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'hashed_columns')))
           WITH ORDINALITY AS c(col, n)
     WHERE guard = 'hash_chain'
    UNION ALL
    SELECT tbl, c.col, 400 + c.n
      FROM pg_catalog.jsonb_array_elements_text(options -> 'exclude') WITH ORDINALITY AS c(col, n)
     WHERE guard = 'lifecycle'
    UNION ALL
    SELECT integrity._relation(options ->> 'accounts'), c.col, 200 + c.n
      FROM unnest(columns || ARRAY[options ->> 'limit_column', options ->> 'used_column']) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'ledger_credit' AND integrity._relation(options ->> 'accounts') IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION integrity._registration_sql(tbl regclass, guard text, columns text[], options jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE guard
        WHEN 'append_only' THEN
            format('SELECT integrity.protect_append_only(%L, allow_truncate => %s);', tbl::text,
                   CASE WHEN (options ->> 'allow_truncate')::boolean THEN 'true' ELSE 'false' END)
            || CASE WHEN options ? 'retention'
                    THEN format(' SELECT integrity.set_retention(%L, %L, %L);', tbl::text,
                                options -> 'retention' ->> 'keep', options -> 'retention' ->> 'time_column')
                    ELSE '' END
        WHEN 'immutable' THEN
            format('SELECT integrity.protect_immutable(%L, %s);', tbl::text, integrity._array_sql(columns))
        WHEN 'write_once' THEN
            format('SELECT integrity.protect_write_once(%L, %s);', tbl::text, integrity._array_sql(columns))
        WHEN 'versioning' THEN
            format('SELECT integrity.enable_versioning(%L, version_column => %L, strict => %s);', tbl::text,
                   columns[1], CASE WHEN NOT (options ->> 'strict')::boolean THEN 'false' ELSE 'true' END)
        WHEN 'stock' THEN
            format('SELECT integrity.guard_stock(%L, stock_column => %L, reserved_column => %L);', tbl::text,
                   columns[1], columns[2])
        WHEN 'credit' THEN
            format('SELECT integrity.guard_credit(%L, limit_column => %L, used_column => %L);', tbl::text,
                   columns[1], columns[2])
        WHEN 'ledger_credit' THEN
            format('SELECT integrity.guard_ledger_credit(%L, %L, %s, amount_column => %L, entry_type_column => %L,'
                   ' debit_value => %L, credit_value => %L, limit_column => %L, used_column => %L);',
                   tbl::text, options ->> 'accounts', integrity._array_sql(columns),
                   options ->> 'amount_column', options ->> 'entry_type_column', options ->> 'debit_value',
                   options ->> 'credit_value', options ->> 'limit_column', options ->> 'used_column')
        WHEN 'hash_chain' THEN
            format('SELECT integrity.enable_hash_chain(%L, %s, seq_column => %L, hash_column => %L);', tbl::text,
                   integrity._array_sql(columns), options ->> 'seq_column', options ->> 'hash_column')
        WHEN 'soft_delete' THEN
            format('SELECT integrity.enable_soft_delete(%L, deleted_column => %L, flag_column => %L);', tbl::text,
                   options ->> 'deleted_column', options ->> 'flag_column')
        WHEN 'lifecycle' THEN
            format('SELECT integrity.track_lifecycle(%L, columns => %s, exclude => %s);', tbl::text,
                   CASE WHEN cardinality(columns) > 0 THEN integrity._array_sql(columns) ELSE 'NULL' END,
                   CASE WHEN options ? 'exclude'
                        THEN integrity._array_sql(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'exclude')))
                        ELSE 'NULL' END)
        END
$$;

-- Refusal counting (src/refusals.rs): NULL without pg_integrity in
-- shared_preload_libraries, else the refusals that found every counter in use.
CREATE FUNCTION integrity._refusals_dropped() RETURNS bigint
    LANGUAGE c AS 'MODULE_PATHNAME', 'refusals_dropped_wrapper';

CREATE OR REPLACE FUNCTION integrity.health()
RETURNS TABLE (severity text, table_name regclass, guard text, problem text, remedy text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
-- The catalog query is small but its estimates are not: without this, JIT
-- compilation would take seconds.
SET jit = off
AS $$
WITH registered AS (
    SELECT r.table_name AS tbl, r.guard, r.columns, r.options, c.relkind,
           CASE WHEN r.guard = 'ledger_credit' THEN integrity._relation(r.options ->> 'accounts') END AS accounts
      FROM integrity.guard_registry r
      LEFT JOIN pg_catalog.pg_class c ON c.oid = r.table_name
),
-- Every column a registered guard reads, with the relation it is read from.
guard_columns AS (
    SELECT r.tbl, r.guard, u.rel, u.col, u.n,
           EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = u.rel AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped) AS present
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_columns(r.tbl, r.guard, r.columns, r.options) u
     WHERE r.relkind IS NOT NULL AND u.col IS NOT NULL
),
-- Registry rows whose triggers can be checked: the table, the accounts table
-- and every column are there.
sound AS (
    SELECT r.*
      FROM registered r
     WHERE r.relkind IS NOT NULL
       AND (r.guard <> 'ledger_credit' OR r.accounts IS NOT NULL)
       AND NOT EXISTS (SELECT FROM guard_columns gc
                        WHERE gc.tbl = r.tbl AND gc.guard = r.guard AND NOT gc.present)
),
-- The triggers each registered guard needs, on the table and on every
-- partition (row triggers as clones, TRUNCATE triggers of their own).
expected AS (
    SELECT r.tbl, r.guard, r.columns, r.options, m.rel,
           g.trigger_name, g.function_name, g.tgtype, g.mode, g.per_partition, g.has_when
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
     WHERE r.relkind IS NOT NULL
       AND NOT (g.recheck AND NOT integrity._needs_recheck(r.tbl, r.guard))
       AND NOT (g.trigger_name = 'integrity_append_only_truncate'
                AND coalesce((r.options ->> 'allow_truncate')::boolean, false))
),
found AS (
    SELECT e.*, t.oid AS tgoid, t.tgenabled, t.tgtype AS actual_tgtype, t.tgargs,
           t.tgqual IS NOT NULL AS actual_has_when,
           t.tgfoid::regprocedure AS actual_function,
           coalesce(p.proname = e.function_name AND n.nspname = 'integrity', false) AS own_function,
           format('trigger %s of the %s guard', e.trigger_name, e.guard)
           || CASE WHEN e.rel = e.tbl THEN '' ELSE format(' on partition %s of %s', e.rel, e.tbl) END AS what
      FROM expected e
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = e.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE (e.tbl, e.guard) IN (SELECT s.tbl, s.guard FROM sound s)
),
-- One ALTER TABLE per relation that puts every guard trigger on it that is
-- disabled or in the wrong mode back in its mode.
relation_fix AS (
    SELECT f.rel,
           format('ALTER TABLE %s %s;', f.rel,
                  string_agg(format('ENABLE %sTRIGGER %I', CASE f.mode WHEN 'A' THEN 'ALWAYS ' ELSE '' END,
                                    f.trigger_name), ', ' ORDER BY f.trigger_name)) AS fix
      FROM found f
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
     GROUP BY f.rel
),
-- The same for a whole partition tree, followed by a space ('' when none).
tree_fix AS (
    SELECT r.tbl, coalesce(string_agg(rf.fix || ' ', '' ORDER BY rf.rel::text COLLATE "C"), '') AS fix
      FROM (SELECT DISTINCT rr.tbl FROM registered rr WHERE rr.relkind IS NOT NULL) r
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
      LEFT JOIN relation_fix rf ON rf.rel = m.rel
     GROUP BY r.tbl
),
-- The registration of each guard, after the mode fixes of its table.
registration AS (
    SELECT r.tbl, r.guard, tf.fix,
           tf.fix || integrity._registration_sql(r.tbl, r.guard, r.columns, r.options) AS sql
      FROM registered r
      JOIN tree_fix tf ON tf.tbl = r.tbl
),
-- Triggers that carry a guard trigger's name but that no registered guard needs.
stray AS (
    SELECT t.tgrelid::regclass AS rel, t.tgname, g.guard,
           (SELECT rg.sql
              FROM registration rg
             WHERE rg.guard = g.guard
               AND (rg.tbl = t.tgrelid
                    OR rg.tbl IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(t.tgrelid) a))
             LIMIT 1) AS registration
      FROM pg_catalog.pg_trigger t
      JOIN (SELECT DISTINCT k.trigger_name, k.guard FROM integrity._guard_triggers(NULL) k) g
        ON g.trigger_name = t.tgname
     WHERE t.tgparentid = 0
       AND NOT EXISTS (SELECT FROM expected e WHERE e.rel = t.tgrelid AND e.trigger_name = t.tgname)
),
-- step orders the problems of one table: registry rows that must go (1),
-- guards re-registered with the columns they have left (2), the rest (3).
problems (severity, table_name, guard, step, problem, remedy) AS (
    -- The registry outlived the table.
    SELECT 'error', r.tbl, r.guard, 1,
           format('the %s guard is registered for a table that no longer exists (OID %s)', r.guard, r.tbl::oid),
           format('DELETE FROM integrity.guard_registry WHERE table_name::oid = %s AND guard = %L;', r.tbl::oid, r.guard)
      FROM registered r
     WHERE r.relkind IS NULL
    UNION ALL
    -- A debit or credit value that is no value of the entry type column any
    -- more (an enum label renamed): every entry is refused as of no known type.
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s %L of the ledger_credit guard is no value of column "%s": %s; remove the guard and register'
                  ' it again with values of the column', v.argument, v.value, r.options ->> 'entry_type_column',
                  p.problem),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     CROSS JOIN LATERAL (VALUES ('debit_value', r.options ->> 'debit_value'),
                                ('credit_value', r.options ->> 'credit_value')) AS v(argument, value)
     CROSS JOIN LATERAL (SELECT integrity._entry_value_problem(r.tbl, r.options ->> 'entry_type_column', v.value)
                          WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit') AS p(problem)
     WHERE p.problem IS NOT NULL
    UNION ALL
    -- Inheritance children, which the guards do not cover (the event trigger
    -- refuses new ones; these are older, or made while it was disabled).
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s inherits from %s, which has the %s guard: guards cover partitions, not inheritance'
                  ' children, yet UPDATE, DELETE and TRUNCATE of %s reach its rows', child, r.tbl, r.guard, r.tbl),
           format('ALTER TABLE %s NO INHERIT %s;', child, r.tbl)
      FROM registered r
     CROSS JOIN LATERAL integrity._inheritance_children(r.tbl) AS child
     WHERE r.relkind IS NOT NULL
    UNION ALL
    SELECT 'error', r.tbl, r.guard, 1,
           format('accounts table %s of the ledger_credit guard no longer exists (dropped or renamed):'
                  ' remove the guard, then register it again with the accounts table as it is now',
                  r.options ->> 'accounts'),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit' AND r.accounts IS NULL
    UNION ALL
    -- A registered column is gone (renamed or dropped while the event
    -- trigger was not watching).  A column guard is registered again with
    -- the columns it has left; other guards are removed.
    SELECT 'error', gc.rel, gc.guard, CASE WHEN left_over.columns IS NULL THEN 1 ELSE 2 END,
           format('column "%s" of %s, registered for the %s guard%s, no longer exists (renamed or dropped): %s',
                  gc.col, gc.rel, gc.guard, CASE WHEN gc.rel <> gc.tbl THEN format(' of %s', gc.tbl) ELSE '' END,
                  CASE WHEN left_over.columns IS NOT NULL
                       THEN 'the guard is registered again with the columns it has left; add the new name of a renamed column'
                       ELSE 'remove the guard, then register it again with the columns as they are now' END),
           CASE WHEN left_over.columns IS NOT NULL
                THEN format('BEGIN; %s %s%s COMMIT;', integrity._unprotect_sql(gc.tbl, gc.guard), tf.fix,
                            integrity._registration_sql(gc.tbl, gc.guard, left_over.columns, '{}'))
                ELSE integrity._unprotect_sql(gc.tbl, gc.guard) END
      FROM guard_columns gc
      JOIN tree_fix tf ON tf.tbl = gc.tbl
     CROSS JOIN LATERAL (SELECT array_agg(o.col ORDER BY o.n) AS columns
                           FROM guard_columns o
                          WHERE o.tbl = gc.tbl AND o.guard = gc.guard AND o.present
                            AND gc.guard IN ('immutable', 'write_once')) left_over
     WHERE NOT gc.present
    UNION ALL
    -- Guard triggers: missing, replaced, disabled, in the wrong mode.
    SELECT 'error', f.rel, f.guard, 3,
           CASE WHEN f.rel = f.tbl THEN format('trigger %s of the %s guard is missing', f.trigger_name, f.guard)
                ELSE format('partition %s of %s is not covered: trigger %s of the %s guard is missing',
                            f.rel, f.tbl, f.trigger_name, f.guard) END,
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NULL
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it runs %s %s, not integrity.%s() %s', f.what,
                  f.actual_function, integrity._tgtype_text(f.actual_tgtype), f.function_name,
                  integrity._tgtype_text(f.tgtype)),
           -- CREATE OR REPLACE TRIGGER repairs a row trigger; TRUNCATE triggers
           -- are only created where missing, so the guard is put back whole.
           CASE WHEN f.per_partition
                THEN format('BEGIN; %s%s %s COMMIT;', rg.fix, integrity._unprotect_sql(f.tbl, f.guard),
                            integrity._registration_sql(f.tbl, f.guard, f.columns, f.options))
                ELSE rg.sql END
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND (NOT f.own_function OR f.actual_tgtype <> f.tgtype)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: its arguments differ from the registered ones', f.what),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs <> integrity._trigger_args(f.trigger_name, f.columns, f.options)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it %s', f.what,
                  CASE WHEN f.actual_has_when THEN 'has a WHEN clause, which can keep it from firing'
                       ELSE 'lacks its WHEN clause' END),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs = integrity._trigger_args(f.trigger_name, f.columns, f.options)
       AND f.actual_has_when <> f.has_when
    UNION ALL
    SELECT CASE WHEN f.mode = 'O' AND f.tgenabled = 'A' THEN 'warning' ELSE 'error' END,
           f.rel, f.guard, 3,
           format('%s is %s', f.what,
                  CASE WHEN f.tgenabled = 'D' THEN 'disabled: the guard is not enforced'
                       WHEN f.mode = 'A' AND f.tgenabled = 'O'
                            THEN 'ENABLE (origin only), not ENABLE ALWAYS: sessions with session_replication_role = replica skip it'
                       WHEN f.tgenabled = 'R'
                            THEN format('ENABLE REPLICA, not %s: ordinary sessions skip it',
                                        CASE f.mode WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END)
                       ELSE 'ENABLE ALWAYS, not ENABLE (origin only): it also fires for rows that logical replication applies, which their origin already processed'
                  END),
           rf.fix
      FROM found f
      JOIN relation_fix rf ON rf.rel = f.rel
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
    UNION ALL
    -- Guard triggers that no registered guard needs.
    SELECT CASE WHEN s.registration IS NULL THEN 'warning' ELSE 'info' END, s.rel, s.guard, 3,
           CASE WHEN s.registration IS NULL
                THEN format('trigger %s of the %s guard is on a table the registry has no %s guard for'
                            ' (registry row deleted, or a partition detached from a guarded table): unprotect'
                            ' removes it; registering the guard again keeps it', s.tgname, s.guard, s.guard)
                ELSE format('trigger %s is not part of the %s guard as registered', s.tgname, s.guard) END,
           coalesce(s.registration, integrity._unprotect_sql(s.rel, s.guard))
      FROM stray s
    UNION ALL
    -- A guard function under a name the extension does not manage (a renamed guard trigger).
    SELECT 'warning', t.tgrelid::regclass, min(g.guard), 3,
           format('trigger %s runs guard function integrity.%s() under a name pg_integrity does not manage:'
                  ' neither the registry nor the event triggers watch it', t.tgname, p.proname),
           format('DROP TRIGGER %I ON %s;', t.tgname, t.tgrelid::regclass)
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
      JOIN integrity._guard_triggers(NULL) g ON g.function_name = p.proname
     WHERE t.tgparentid = 0
       AND t.tgname NOT IN (SELECT k.trigger_name FROM integrity._guard_triggers(NULL) k)
     GROUP BY t.tgrelid, t.tgname, p.proname
    UNION ALL
    -- Guarded tables without a primary key.
    SELECT 'warning', r.tbl, NULL, 3,
           format('guarded table %s has no primary key: guard errors and violations() cannot name its rows'
                  ' by a stable key', r.tbl),
           tf.fix
           || CASE WHEN r.relkind = 'r' AND candidate.index_name IS NOT NULL
                   THEN format('ALTER TABLE %s ADD PRIMARY KEY USING INDEX %I;', r.tbl, candidate.index_name)
                   ELSE format('ALTER TABLE %s ADD PRIMARY KEY (%s);', r.tbl,
                               coalesce(candidate.key_columns, '<columns that identify a row>')) END
      FROM (SELECT DISTINCT rr.tbl, rr.relkind FROM registered rr WHERE rr.relkind IS NOT NULL) r
      JOIN tree_fix tf ON tf.tbl = r.tbl
      LEFT JOIN LATERAL (
            -- a valid, unique, non-partial index on NOT NULL columns
            SELECT ic.relname AS index_name,
                   (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS key_columns
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = r.tbl AND i.indisunique AND i.indisvalid AND i.indimmediate
               AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = i.indnatts
               AND NOT EXISTS (SELECT FROM unnest(i.indkey::int2[]) AS k(attnum)
                                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                                WHERE NOT a.attnotnull)
             ORDER BY i.indnatts, ic.relname
             LIMIT 1) candidate ON true
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint con WHERE con.conrelid = r.tbl AND con.contype = 'p')
    UNION ALL
    -- The extension's event triggers: missing, disabled, or not ENABLE ALWAYS.
    SELECT CASE WHEN e.evtenabled = 'O' THEN 'warning' ELSE 'error' END, NULL, NULL, 1,
           format('event trigger %s %s%s', v.evtname,
                  CASE WHEN e.oid IS NULL THEN 'is missing: '
                       WHEN e.evtenabled = 'D' THEN 'is disabled: '
                       WHEN e.evtenabled = 'O' THEN 'is ENABLE (origin only), not ENABLE ALWAYS: in sessions with session_replication_role = replica, '
                       ELSE 'is ENABLE REPLICA, not ENABLE ALWAYS: in ordinary sessions, ' END,
                  v.consequence),
           CASE WHEN e.oid IS NULL
                THEN integrity._event_trigger_sql(v.evtname)
                     || format(' ALTER EXTENSION pg_integrity ADD EVENT TRIGGER %I;', v.evtname)
                ELSE format('ALTER EVENT TRIGGER %I ENABLE ALWAYS;', v.evtname) END
      FROM integrity._event_triggers() v
      LEFT JOIN pg_catalog.pg_event_trigger e ON e.evtname = v.evtname
     WHERE e.oid IS NULL OR e.evtenabled <> 'A'
    UNION ALL
    -- The triggers that keep the lifecycle events append-only: missing,
    -- replaced, disabled or skipped under session_replication_role = replica.
    SELECT 'error', e.rel, 'lifecycle', 1,
           format('trigger %s of %s is %s', l.trigger_name, e.rel,
                  CASE WHEN t.oid IS NULL THEN 'missing: events can be changed or removed'
                       WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                            OR t.tgtype <> l.tgtype
                            THEN format('replaced: it runs %s %s', t.tgfoid::regprocedure, integrity._tgtype_text(t.tgtype))
                       WHEN t.tgenabled = 'D' THEN 'disabled: events can be changed or removed'
                       ELSE 'not ENABLE ALWAYS: sessions with session_replication_role = replica can change or remove events' END),
           CASE WHEN t.oid IS NULL THEN l.create_sql
                WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                     OR t.tgtype <> l.tgtype
                     THEN format('DROP TRIGGER %I ON %s; %s', l.trigger_name, e.rel, l.create_sql)
                ELSE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I;', e.rel, l.trigger_name) END
      FROM (SELECT integrity._relation('integrity.lifecycle_events') AS rel) e
     CROSS JOIN integrity._lifecycle_events_triggers() l
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = l.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE e.rel IS NOT NULL
       AND (t.oid IS NULL OR t.tgenabled <> 'A' OR t.tgtype <> l.tgtype
            OR NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false))
    UNION ALL
    -- The compiled guard functions: replaced by other code, or gone.
    SELECT 'error', NULL, min(g.guard), 1,
           CASE WHEN min(p.oid::int8) IS NULL
                THEN format('guard function integrity.%s() is missing', g.function_name)
                ELSE format('guard function integrity.%s() is not the extension''s compiled code any more'
                            ' (it is LANGUAGE %s)', g.function_name, min(l.lanname)) END,
           format('CREATE OR REPLACE FUNCTION integrity.%I() RETURNS trigger LANGUAGE c AS %L, %L;%s',
                  g.function_name, 'pg_integrity', 'integrity_' || g.function_name,
                  CASE WHEN min(p.oid::int8) IS NULL
                       THEN format(' ALTER EXTENSION pg_integrity ADD FUNCTION integrity.%I();', g.function_name)
                       ELSE '' END)
      FROM integrity._guard_triggers(NULL) g
      LEFT JOIN (pg_catalog.pg_proc p
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
                 JOIN pg_catalog.pg_language l ON l.oid = p.prolang)
             ON p.proname = g.function_name AND p.pronargs = 0
     GROUP BY g.function_name
    HAVING min(p.oid::int8) IS NULL
        OR bool_or(l.lanname <> 'c' OR p.probin NOT IN ('pg_integrity', '$libdir/pg_integrity')
                   OR p.prosrc <> 'integrity_' || g.function_name)
    UNION ALL
    -- Refused writes are counted (integrity.refusals) only with the preload.
    SELECT 'info', NULL, NULL, 1,
           'refused writes are not counted (integrity.refusals, LISTEN integrity_refusals): '
           'pg_integrity is not in shared_preload_libraries',
           pg_catalog.format('ALTER SYSTEM SET shared_preload_libraries = %L; -- then restart the server',
                             pg_catalog.concat_ws(', ', NULLIF(pg_catalog.current_setting('shared_preload_libraries'), ''),
                                                  'pg_integrity'))
     WHERE integrity._refusals_dropped() IS NULL
    UNION ALL
    SELECT 'warning', NULL, NULL, 1,
           pg_catalog.format('%s refused writes were not counted: all %s refusal counters are in use', d,
                             pg_catalog.current_setting('pg_integrity.max_refusal_entries')),
           'SELECT integrity.reset_refusals(); -- or raise pg_integrity.max_refusal_entries, then restart the server'
      FROM integrity._refusals_dropped() AS d
     WHERE d > 0
)
SELECT p.severity, p.table_name, p.guard, p.problem, p.remedy
  FROM problems p
 ORDER BY CASE p.severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          p.table_name::text COLLATE "C" NULLS FIRST, p.step, p.guard COLLATE "C" NULLS FIRST, p.problem COLLATE "C"
$$;
COMMENT ON FUNCTION integrity.health() IS
    'The registry against reality: missing, replaced, disabled or replica-skipped guard triggers, uncovered partitions, stray guard triggers, dropped tables and columns, guarded tables without a primary key, the extension''s event triggers and guard functions, the triggers that keep integrity.lifecycle_events append-only. Each row gives the SQL that repairs it; a healthy database returns no rows.';

CREATE OR REPLACE FUNCTION integrity._on_ddl_command_end()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    command record;
    guarded record;
    trg record;
BEGIN
    PERFORM integrity._check_trigger_ddl(c.objid)
       FROM pg_catalog.pg_event_trigger_ddl_commands() c
      WHERE c.classid = 'pg_catalog.pg_trigger'::regclass;
    PERFORM integrity._sync_rechecks(t.tgrelid)
       FROM pg_catalog.pg_event_trigger_ddl_commands() c
       JOIN pg_catalog.pg_trigger t ON t.oid = c.objid
      WHERE c.classid = 'pg_catalog.pg_trigger'::regclass;

    -- Tables renamed or moved, also with their schema.
    PERFORM integrity._refuse_accounts_ddl(ARRAY(
        SELECT t.oid::regclass
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_class t
            ON CASE WHEN c.classid = 'pg_catalog.pg_namespace'::regclass THEN t.relnamespace ELSE t.oid END = c.objid
         WHERE c.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_namespace'::regclass)
           AND t.relkind IN ('r', 'p')
           AND integrity._renames(c.command)), NULL);

    -- Tables created, altered or attached by the command, including those
    -- created inside CREATE SCHEMA, and the typed tables an ALTER TYPE …
    -- CASCADE changed along with their type.
    FOR command IN
        SELECT DISTINCT c.objid::regclass AS rel,
               c.command_tag IN ('CREATE TABLE', 'CREATE FOREIGN TABLE')
               OR integrity._attaches_partition(c.command) AS new_partitions
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.classid = 'pg_catalog.pg_class'::regclass
           AND c.object_type IN ('table', 'table column', 'foreign table', 'foreign table column')
           AND EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = c.objid)
        UNION
        -- (a composite type's attributes are reported as its pg_class row's)
        SELECT t.oid::regclass, false
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_class t
            ON t.reloftype = CASE WHEN c.classid = 'pg_catalog.pg_type'::regclass THEN c.objid
                                  ELSE (SELECT ct.reltype FROM pg_catalog.pg_class ct
                                         WHERE ct.oid = c.objid AND ct.relkind = 'c') END
         WHERE c.classid IN ('pg_catalog.pg_type'::regclass, 'pg_catalog.pg_class'::regclass)
    LOOP
        SELECT r.table_name, r.guard INTO guarded
          FROM pg_catalog.pg_inherits i
          JOIN integrity.guard_registry r ON r.table_name = i.inhparent
         WHERE i.inhrelid = command.rel
           AND command.rel IN (SELECT integrity._inheritance_children(r.table_name))
         ORDER BY r.guard
         LIMIT 1;
        IF FOUND THEN
            PERFORM integrity._refuse_inheritance(guarded.table_name, command.rel, guarded.guard);
        END IF;

        IF command.new_partitions THEN
            PERFORM integrity._sync_rechecks(command.rel);
            FOR guarded IN
                SELECT r.table_name, r.guard, r.options
                  FROM integrity.guard_registry r
                 WHERE r.table_name = command.rel
                    OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(command.rel))
            LOOP
                IF guarded.guard = 'append_only'
                   AND NOT coalesce((guarded.options ->> 'allow_truncate')::boolean, false) THEN
                    PERFORM integrity._cover_truncate(guarded.table_name);
                END IF;
                IF guarded.guard = 'lifecycle' THEN
                    PERFORM integrity._cover_lifecycle(guarded.table_name);
                END IF;
                PERFORM integrity._set_trigger_modes(guarded.table_name);
            END LOOP;
        END IF;

        FOR guarded IN
            SELECT r.table_name, r.guard, gc.col
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._guard_columns(r.table_name, r.guard, r.columns, r.options) gc
             WHERE gc.rel = command.rel
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid = command.rel AND a.attname = gc.col
                                  AND a.attnum > 0 AND NOT a.attisdropped)
        LOOP
            RAISE EXCEPTION 'cannot rename or drop column "%" of table "%"', guarded.col, command.rel
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('The column is protected by the %s guard of %s.', guarded.guard, guarded.table_name),
                      HINT = format('Call integrity.unprotect(%L, %L) first, then register the guard again.',
                                    guarded.table_name::text, guarded.guard);
        END LOOP;

        FOR trg IN
            SELECT t.tgname, t.tgenabled, needed.guarded_table, needed.guard
              FROM pg_catalog.pg_trigger t
              JOIN (SELECT DISTINCT k.trigger_name, k.mode FROM integrity._guard_triggers(NULL) k) g
                ON g.trigger_name = t.tgname
             CROSS JOIN LATERAL integrity._guard_needing(command.rel, t.tgname) needed
             WHERE t.tgrelid = command.rel AND t.tgenabled <> g.mode
        LOOP
            PERFORM integrity._refuse_guard_ddl(
                CASE trg.tgenabled WHEN 'D' THEN 'disable' ELSE 'change the firing mode of' END,
                trg.tgname, command.rel, trg.guarded_table, trg.guard);
        END LOOP;
    END LOOP;
END;
$$;

-- Lifecycle events: an audit trail per row.  track_lifecycle() puts three
-- AFTER … FOR EACH STATEMENT triggers with transition tables on a table (and
-- on each of its partitions, which a statement that targets a partition
-- directly fires instead); integrity.lifecycle_guard (src/lifecycle.rs) runs
-- the table's INSERT … SELECT from _lifecycle_statement() once per statement,
-- as the owner of integrity.lifecycle_events.  Nobody else may read or write
-- the events table: history() shows one row's events to whoever may read the
-- row's table.

CREATE SEQUENCE integrity.lifecycle_events_id_seq;

CREATE TABLE integrity.lifecycle_events (
    id         bigint      NOT NULL DEFAULT pg_catalog.nextval('integrity.lifecycle_events_id_seq') PRIMARY KEY,
    table_name text        NOT NULL,
    row_key    jsonb       NOT NULL,
    operation  text        NOT NULL CONSTRAINT lifecycle_events_operation
                                    CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    changes    jsonb       NOT NULL,
    txid       bigint      NOT NULL DEFAULT pg_catalog.txid_current(),
    actor      name        NOT NULL DEFAULT CURRENT_USER,
    at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER SEQUENCE integrity.lifecycle_events_id_seq OWNED BY integrity.lifecycle_events.id;
COMMENT ON TABLE integrity.lifecycle_events IS
    'pg_integrity lifecycle events: one row per INSERT, UPDATE (of a tracked column) and DELETE of a row of a table registered with track_lifecycle(). Append-only; read it with integrity.history(), clean it up with integrity.purge_lifecycle_events().';
-- One row's history (equality on the key; the few events of a row are then
-- filtered by table and sorted), and purges by age (events arrive in time
-- order).  A btree on (table_name, row_key, id) would serve the history as
-- well, but comparing jsonb keys on every insert made writing 1M events
-- 2-3 times slower than these two.
CREATE INDEX lifecycle_events_row ON integrity.lifecycle_events USING hash (row_key);
CREATE INDEX lifecycle_events_at ON integrity.lifecycle_events USING brin (at);
REVOKE ALL ON integrity.lifecycle_events, integrity.lifecycle_events_id_seq FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('integrity.lifecycle_events', '');
SELECT pg_catalog.pg_extension_config_dump('integrity.lifecycle_events_id_seq', '');

CREATE FUNCTION integrity.lifecycle_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_lifecycle_guard';
COMMENT ON FUNCTION integrity.lifecycle_guard() IS
    'Trigger: AFTER INSERT, UPDATE or DELETE FOR EACH STATEMENT with transition tables; writes the statement''s lifecycle events.';

CREATE FUNCTION integrity.lifecycle_events_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_lifecycle_events_guard';
COMMENT ON FUNCTION integrity.lifecycle_events_guard() IS
    'Trigger: refuses UPDATE, DELETE and TRUNCATE of integrity.lifecycle_events (23001), except the deletes of purge_lifecycle_events().';

-- The events table is append-only for everyone, superusers and sessions with
-- session_replication_role = replica included.  These triggers belong to the
-- extension, not to the registry: DROP EXTENSION takes them with the table.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM integrity._lifecycle_events_triggers() LOOP
        EXECUTE t.create_sql;
    END LOOP;
END
$$;

-- A jsonb object expression of (key expression, value expression) pairs:
-- jsonb_build_object takes at most 50 pairs, so larger objects are
-- concatenated from several.
CREATE FUNCTION integrity._jsonb_object_sql(keys text[], vals text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(c.chunk, ' || ' ORDER BY c.part), '''{}''::pg_catalog.jsonb')
      FROM (SELECT (u.n - 1) / 50 AS part,
                   'pg_catalog.jsonb_build_object(' || string_agg(format('%L, %s', u.k, u.v), ', ' ORDER BY u.n) || ')'
                   AS chunk
              FROM unnest(keys, vals) WITH ORDINALITY AS u(k, v, n)
             GROUP BY 1) c
$$;

-- The value of column col of the row rowref (`t`, `OLD`), for an event.  The
-- statement runs as the events table's owner, so no code that a role can
-- write may run in it: to_jsonb() of a type that is not built in would call
-- that type's cast to json, which its owner can create.  Such values (enums,
-- composite types, ranges and arrays of them) are written as their text
-- instead, which only the types' C output functions produce.
CREATE FUNCTION integrity._lifecycle_value_sql(tbl regclass, col text, rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN coalesce((SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END < 16384
                                 FROM pg_catalog.pg_attribute a
                                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                                WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0), false)
                THEN format('%s.%I', rowref, col)
                ELSE format('CASE WHEN %1$s.%2$I IS NULL THEN NULL ELSE pg_catalog.format(''%%s'', %1$s.%2$I) END',
                            rowref, col) END
$$;

-- The row key of the row rowref, as an event records it: {"id": 42}.
CREATE FUNCTION integrity._lifecycle_key_sql(tbl regclass, rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._jsonb_object_sql(k, ARRAY(SELECT integrity._lifecycle_value_sql(tbl, c, rowref)
                                                  FROM unnest(k) WITH ORDINALITY AS u(c, n) ORDER BY n))
      FROM (SELECT integrity._key_columns(tbl)) AS key(k)
$$;

-- The lifecycle tracking that covers rel (registered on rel, or on a
-- partitioned ancestor of it) and the columns it tracks, in column order.
CREATE FUNCTION integrity._lifecycle_of(rel regclass)
RETURNS TABLE (tracked_table regclass, tracked text[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name,
           ARRAY(SELECT a.attname::text
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = r.table_name AND a.attnum > 0 AND NOT a.attisdropped
                    AND (cardinality(r.columns) = 0 OR a.attname = ANY (r.columns))
                    AND NOT coalesce(r.options -> 'exclude' ? a.attname, false)
                  ORDER BY a.attnum)
      FROM integrity.guard_registry r
     WHERE r.guard = 'lifecycle'
       AND r.table_name IN (SELECT rel UNION ALL SELECT a.relid FROM pg_catalog.pg_partition_ancestors(rel) a)
     LIMIT 1
$$;

-- The statement the lifecycle trigger of rel runs for operation (INSERT,
-- UPDATE or DELETE) over its transition tables old_rows / new_rows; $1 is the
-- OID of the role that ran the statement (the trigger runs this one as the
-- events table's owner).  Events carry the name of the registered table, also
-- when a partition is written directly.  The OLD and NEW rows of an UPDATE
-- are paired by position, which the transition tables keep, so an UPDATE of
-- the key is recorded too, under the new key; "old" and "new" have exactly
-- the table's columns, whatever their names, for _changed_sql().  NULL when
-- rel is not tracked.
CREATE FUNCTION integrity._lifecycle_statement(rel regclass, operation text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('INSERT INTO integrity.lifecycle_events (table_name, row_key, operation, changes, actor) ')
           || CASE operation
              WHEN 'UPDATE' THEN
                  format('SELECT %L, n.row_key, ''UPDATE'', %s, (SELECT pg_catalog.pg_get_userbyid($1))'
                         ' FROM (SELECT pg_catalog.row_number() OVER () AS pair, t AS r FROM old_rows t) AS o'
                         ' JOIN (SELECT pg_catalog.row_number() OVER () AS pair, t AS r, %s AS row_key'
                         ' FROM new_rows t) AS n ON o.pair = n.pair'
                         ' CROSS JOIN LATERAL (SELECT (o.r).*) AS old CROSS JOIN LATERAL (SELECT (n.r).*) AS new'
                         ' WHERE %s',
                         l.tracked_table::text,
                         (SELECT string_agg(format('CASE WHEN %s THEN pg_catalog.jsonb_build_object(%L,'
                                                   ' pg_catalog.jsonb_build_object(''old'', %s, ''new'', %s))'
                                                   ' ELSE ''{}''::pg_catalog.jsonb END',
                                                   integrity._changed_sql(l.tracked_table, c), c,
                                                   integrity._lifecycle_value_sql(l.tracked_table, c, 'OLD'),
                                                   integrity._lifecycle_value_sql(l.tracked_table, c, 'NEW')),
                                            ' || ' ORDER BY n)
                            FROM unnest(l.tracked) WITH ORDINALITY AS u(c, n)),
                         integrity._lifecycle_key_sql(l.tracked_table, 't'),
                         (SELECT string_agg(integrity._changed_sql(l.tracked_table, c), ' OR ')
                            FROM unnest(l.tracked) AS c))
              ELSE
                  format('SELECT %L, %s, %L, %s, (SELECT pg_catalog.pg_get_userbyid($1)) FROM %s t',
                         l.tracked_table::text, integrity._lifecycle_key_sql(l.tracked_table, 't'), operation,
                         integrity._jsonb_object_sql(l.tracked,
                             ARRAY(SELECT format('pg_catalog.jsonb_build_object(%L, %s)', s.side,
                                                 integrity._lifecycle_value_sql(l.tracked_table, c, 't'))
                                     FROM unnest(l.tracked) WITH ORDINALITY AS u(c, n) ORDER BY n)),
                         CASE operation WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
              END
      FROM integrity._lifecycle_of(rel) l
     CROSS JOIN (SELECT CASE operation WHEN 'INSERT' THEN 'new' ELSE 'old' END) AS s(side)
     WHERE operation IN ('INSERT', 'UPDATE', 'DELETE') AND cardinality(l.tracked) > 0
$$;

-- The statement triggers are per relation: each member of the partition tree
-- gets its own (a statement that targets a partition fires the partition's
-- triggers, not its parent's).
CREATE FUNCTION integrity._cover_lifecycle(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    g record;
BEGIN
    -- A foreign table cannot have triggers with transition tables.
    SELECT tree.relid INTO rel
      FROM pg_catalog.pg_partition_tree(tbl) AS tree
      JOIN pg_catalog.pg_class c ON c.oid = tree.relid
     WHERE c.relkind = 'f'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'foreign table "%" cannot be a partition of table "%", whose lifecycle is tracked', rel, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A foreign table cannot have the statement triggers that record lifecycle events.';
    END IF;
    -- Replaced also when they are there: that is what tells every backend
    -- (through the relcache) to build the statements again when a
    -- re-registration changed the tracked columns.
    FOR rel IN SELECT integrity._partition_tree(tbl) LOOP
        FOR g IN SELECT * FROM integrity._guard_triggers('lifecycle') LOOP
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT'
                           ' EXECUTE FUNCTION integrity.lifecycle_guard()',
                           g.trigger_name,
                           CASE g.tgtype WHEN 4 THEN 'INSERT' WHEN 16 THEN 'UPDATE' ELSE 'DELETE' END, rel,
                           CASE g.tgtype WHEN 4 THEN 'NEW TABLE AS new_rows'
                                         WHEN 16 THEN 'OLD TABLE AS old_rows NEW TABLE AS new_rows'
                                         ELSE 'OLD TABLE AS old_rows' END);
        END LOOP;
    END LOOP;
END;
$$;

CREATE FUNCTION integrity.track_lifecycle(tbl regclass, columns text[] DEFAULT NULL, exclude text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'track_lifecycle';
    chosen text[] := '{}';
    excluded text[] := '{}';
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    IF tbl = 'integrity.lifecycle_events'::regclass THEN
        RAISE EXCEPTION '%: the lifecycle events table cannot track itself', caller
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Every event written would write another event.';
    END IF;
    IF columns IS NOT NULL AND exclude IS NOT NULL THEN
        RAISE EXCEPTION '%: pass either "columns" or "exclude", not both', caller
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '"columns" tracks only the columns named; "exclude" tracks all others.';
    END IF;
    IF columns IS NOT NULL THEN
        chosen := integrity._check_columns(tbl, columns, caller);
    ELSIF cardinality(exclude) > 0 THEN
        excluded := integrity._check_columns(tbl, exclude, caller);
    END IF;
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['lifecycle'], caller);
    IF integrity._key_columns(tbl) IS NULL THEN
        RAISE EXCEPTION '%: table "%" has no primary key', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Lifecycle events name their row by its key.',
                  HINT = format('ALTER TABLE %s ADD PRIMARY KEY (…);', tbl);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
                      AND (cardinality(chosen) = 0 OR a.attname = ANY (chosen))
                      AND a.attname <> ALL (excluded)) THEN
        RAISE EXCEPTION '%: "exclude" leaves no column of table "%" to track', caller, tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM integrity._record_guard(tbl, 'lifecycle', chosen,
                                    CASE WHEN cardinality(excluded) > 0
                                         THEN jsonb_build_object('exclude', to_jsonb(excluded)) ELSE '{}' END);
    PERFORM integrity._cover_lifecycle(tbl);
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.track_lifecycle(regclass, text[], text[]) IS
    'Every INSERT, UPDATE and DELETE of a row of the table writes an event to integrity.lifecycle_events: the row''s key, the operation, and the tracked columns (all, only "columns", or all but "exclude"): INSERT {"col": {"new": v}}, DELETE {"col": {"old": v}}, UPDATE only the changed ones {"col": {"old": v, "new": w}} (no event when none changed). Rows applied by logical replication are recorded on their origin only.';

-- One row's events, in order, for a caller who may read the table
-- (src/lifecycle.rs checks the privilege and reads the events as their
-- table's owner).
CREATE FUNCTION integrity._lifecycle_events_of(tbl regclass, row_key jsonb)
RETURNS integrity.lifecycle_events[]
LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'integrity_lifecycle_events_of';

CREATE FUNCTION integrity.history(tbl regclass, id anyelement)
RETURNS SETOF integrity.lifecycle_events
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'history';
    key_columns text[];
    row_key jsonb;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    PERFORM integrity._require_argument(id, 'id', caller);
    key_columns := integrity._key_columns(tbl);
    IF pg_typeof(id) = 'jsonb'::regtype THEN
        row_key := id::text::jsonb;
        IF jsonb_typeof(row_key) <> 'object' THEN
            RAISE EXCEPTION '%: a jsonb id must be an object of the key columns, like {"id": 42}', caller
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF cardinality(key_columns) = 1 THEN
        -- The id as the key column's type, written as the trigger writes keys.
        EXECUTE format('SELECT %s FROM (SELECT CAST($1 AS %s) AS %I) AS t',
                       integrity._lifecycle_key_sql(tbl, 't'),
                       (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = tbl AND a.attname = key_columns[1]),
                       key_columns[1])
           INTO row_key USING id;
    ELSE
        RAISE EXCEPTION '%: table "%" has %', caller, tbl,
                        CASE WHEN key_columns IS NULL THEN 'no primary key' ELSE 'a composite key' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN key_columns IS NOT NULL
                              THEN format('Pass the key as a jsonb object: %s.',
                                          (SELECT jsonb_object_agg(k, '…') FROM unnest(key_columns) AS k)) END;
    END IF;
    RETURN QUERY SELECT e.* FROM unnest(integrity._lifecycle_events_of(tbl, row_key)) AS e;
END;
$$;
COMMENT ON FUNCTION integrity.history(regclass, anyelement) IS
    'The lifecycle events of one row of the table, in order; id is the primary key value (a jsonb object of the key columns for a composite key). Requires SELECT privilege on the table.';

CREATE FUNCTION integrity.purge_lifecycle_events(older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(older_than, 'older_than', 'purge_lifecycle_events');
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'purge_lifecycle_events: argument "older_than" must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN integrity._execute_sanctioned('integrity.lifecycle_events',
                                         format('DELETE FROM integrity.lifecycle_events WHERE at < %L::timestamptz',
                                                now() - older_than));
END;
$$;
COMMENT ON FUNCTION integrity.purge_lifecycle_events(interval) IS
    'Deletes the lifecycle events older than older_than and returns how many went. Only the owner of integrity.lifecycle_events may purge.';

-- Lifting a hash chain forgets where purges left its chains.
CREATE OR REPLACE FUNCTION integrity.unprotect(tbl regclass, guard text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kinds text[] := ARRAY(SELECT DISTINCT g.guard FROM integrity._guard_triggers(NULL) g ORDER BY 1);
    kind text;
    registered boolean;
    installed boolean;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', 'unprotect');
    IF guard IS NOT NULL THEN
        IF guard <> ALL (kinds) THEN
            RAISE EXCEPTION 'unknown guard "%"', guard
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Guards are ' || array_to_string(kinds, ', ') || '.';
        END IF;
        kinds := ARRAY[guard];
    END IF;
    PERFORM integrity._require_owner(tbl, 'remove its pg_integrity guards');
    PERFORM integrity._refuse_if_inherited(tbl, kinds, 'unprotect');

    WITH removed AS (
        DELETE FROM integrity.guard_registry r
         WHERE r.table_name = tbl AND r.guard = ANY (kinds)
        RETURNING 1)
    SELECT count(*) > 0 INTO registered FROM removed;
    -- A chain registered again later starts from its rows, not from an old purge.
    IF 'hash_chain' = ANY (kinds) THEN
        DELETE FROM integrity.chain_anchors a WHERE a.table_name = tbl;
    END IF;
    -- Triggers go too when their registry row was already gone.
    SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t, unnest(kinds) k, integrity._guard_triggers(k) g
                    WHERE t.tgrelid = tbl AND t.tgname = g.trigger_name AND t.tgparentid = 0)
      INTO installed;
    FOREACH kind IN ARRAY kinds LOOP
        PERFORM integrity._drop_triggers(tbl, kind);
    END LOOP;
    IF NOT (registered OR installed) THEN
        RAISE NOTICE 'table "%" has no % guard, skipping', tbl, coalesce(guard, 'pg_integrity');
    END IF;
END;
$$;

-- Append-only and soft delete contradict each other: registering one on a
-- table with the other is refused (55000).
CREATE OR REPLACE FUNCTION integrity.protect_append_only(tbl regclass, allow_truncate boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._check_table(tbl, 'protect_append_only');
    PERFORM integrity._require_argument(allow_truncate, 'allow_truncate', 'protect_append_only');
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['append_only'], 'protect_append_only');
    IF EXISTS (SELECT FROM integrity.guard_registry r
                WHERE r.table_name IN (SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
                  AND r.guard = 'soft_delete') THEN
        RAISE EXCEPTION 'protect_append_only: table "%" has soft delete; its rows are marked deleted by an UPDATE', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'An append-only table refuses every UPDATE and DELETE of its rows.',
                  HINT = format('Lift soft delete first: SELECT integrity.unprotect(%L, ''soft_delete'');', tbl::text);
    END IF;
    -- A retention set with set_retention() stays.
    PERFORM integrity._record_guard(tbl, 'append_only', '{}',
                                    jsonb_build_object('allow_truncate', allow_truncate)
                                    || coalesce((SELECT jsonb_build_object('retention', r.options -> 'retention')
                                                   FROM integrity.guard_registry r
                                                  WHERE r.table_name = tbl AND r.guard = 'append_only'
                                                    AND r.options ? 'retention'), '{}'));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_append_only BEFORE UPDATE OR DELETE ON %s'
                   ' FOR EACH ROW EXECUTE FUNCTION integrity.append_only_guard()', tbl);
    IF allow_truncate THEN
        PERFORM integrity._drop_triggers(tbl, 'append_only', 'integrity_append_only_truncate');
    ELSE
        PERFORM integrity._cover_truncate(tbl);
    END IF;
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

-- Soft delete.  A DELETE of a row of a soft-delete table keeps the row and
-- sets its deleted column to now() (and its flag column to true); the
-- integrity_soft_delete trigger (src/soft_delete.rs) runs the statement
-- written here.  restore() brings a row back, with the rows its delete
-- cascaded to; purge_deleted() and hard_delete() are the deletes that remove
-- rows for good.

CREATE FUNCTION integrity.soft_delete_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_soft_delete_guard';
COMMENT ON FUNCTION integrity.soft_delete_guard() IS
    'Trigger: turns the DELETE of a row into setting its deleted column to now() (and its flag column to true).';

-- The foreign keys between tables (declared on the tables themselves, not
-- the clones on their partitions), with their columns in order and whether
-- they cascade deletes.  A soft delete follows those that cascade into a
-- child with soft delete too.
CREATE FUNCTION integrity._foreign_keys()
RETURNS TABLE (parent regclass, parent_columns text[], child regclass, child_columns text[], cascades boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.confrelid::regclass,
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum
                  ORDER BY k.n),
           c.conrelid::regclass,
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                  ORDER BY k.n),
           c.confdeltype = 'c'
      FROM pg_catalog.pg_constraint c
     WHERE c.contype = 'f' AND c.conparentid = 0
$$;

-- The condition that a child row (alias child_alias) references a parent row
-- (alias p), as the foreign key compares them.
CREATE FUNCTION integrity._references_sql(child_alias text, child_columns text[], parent_columns text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%s.%I = p.%I', child_alias, cc, pc), ' AND ' ORDER BY n)
      FROM unnest(child_columns, parent_columns) WITH ORDINALITY AS k(cc, pc, n)
$$;

-- The soft_delete guard of tbl or of its partitioned ancestor: its deleted
-- and flag columns.  NULL when there is none.
CREATE FUNCTION integrity._soft_delete_of(tbl regclass)
RETURNS TABLE (registered regclass, deleted_column text, flag_column text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name, r.options ->> 'deleted_column', r.options ->> 'flag_column'
      FROM integrity.guard_registry r
     WHERE r.guard = 'soft_delete'
       AND r.table_name IN (SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
$$;

-- The SET list that marks a row deleted (at) or live again (at = NULL).
CREATE FUNCTION integrity._soft_delete_set_sql(deleted_column text, flag_column text, deleted boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%I = %s', deleted_column, CASE WHEN deleted THEN 'pg_catalog.now()' ELSE 'NULL' END)
           || CASE WHEN flag_column IS NOT NULL
                   THEN format(', %I = %s', flag_column, CASE WHEN deleted THEN 'true' ELSE 'false' END) ELSE '' END
$$;

-- The statement the trigger runs for a row of rel ($1: the row's ctid): it
-- marks the row deleted and deletes the live rows of soft-delete children
-- that cascade from it (their triggers mark them deleted at the same now()).
-- When the row itself is reached by a cascade from a parent row that is gone
-- (deleted for good), it leaves the row alone and returns true: the row goes
-- with its parent, as a hard delete would have it.  NULL when rel has no
-- soft_delete guard.
CREATE FUNCTION integrity._soft_delete_statement(rel regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN parents.present IS NULL AND children.deletes IS NULL
                THEN format('UPDATE ONLY %s AS t SET %s WHERE t.ctid = $1 RETURNING false', rel, g.set_list)
                ELSE format('WITH parents AS (SELECT %s AS present FROM ONLY %s AS c WHERE c.ctid = $1),'
                            ' deleted AS (UPDATE ONLY %s AS t SET %s FROM parents WHERE t.ctid = $1 AND parents.present'
                            ' RETURNING t.*)%s'
                            ' SELECT NOT present FROM parents',
                            coalesce(parents.present, 'true'), rel, rel, g.set_list, coalesce(children.deletes, ''))
           END
      FROM (SELECT s.registered,
                   integrity._soft_delete_set_sql(s.deleted_column, s.flag_column, true) AS set_list
              FROM integrity._soft_delete_of(rel) s) g
     CROSS JOIN LATERAL (
            -- MATCH SIMPLE: a key with a NULL references nothing.
            SELECT string_agg(format('(%s OR EXISTS (SELECT FROM %s AS p WHERE %s))',
                                     (SELECT string_agg(format('c.%I IS NULL', col), ' OR ')
                                        FROM unnest(k.child_columns) AS col),
                                     k.parent, integrity._references_sql('c', k.child_columns, k.parent_columns)),
                              ' AND ' ORDER BY k.parent::text, k.child_columns) AS present
              FROM integrity._foreign_keys() k
             WHERE k.child = g.registered AND k.cascades) parents
     CROSS JOIN LATERAL (
            SELECT string_agg(format(', cascade_%s AS (DELETE FROM %s AS c USING deleted AS p WHERE %s AND c.%I IS NULL)',
                                     k.n, k.child, integrity._references_sql('c', k.child_columns, k.parent_columns),
                                     s.deleted_column),
                              '' ORDER BY k.n) AS deletes
              FROM (SELECT k.*, row_number() OVER (ORDER BY k.child::text, k.child_columns) AS n
                      FROM integrity._foreign_keys() k
                     WHERE k.parent = g.registered AND k.cascades) k
             CROSS JOIN LATERAL integrity._soft_delete_of(k.child) s
             WHERE s.registered = k.child) children
$$;

-- The soft_delete guard a caller of restore(), purge_deleted() or
-- hard_delete() names: tbl must be registered itself.
CREATE FUNCTION integrity._require_soft_delete(tbl regclass, caller text)
RETURNS TABLE (registered regclass, deleted_column text, flag_column text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    RETURN QUERY SELECT s.registered, s.deleted_column, s.flag_column
                   FROM integrity._soft_delete_of(tbl) s WHERE s.registered = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table % has no soft_delete guard', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Register it with SELECT integrity.enable_soft_delete(%L);', tbl::text);
    END IF;
END;
$$;

-- The one column that identifies a row of tbl for restore() and
-- hard_delete(): its primary key.
CREATE FUNCTION integrity._single_key(tbl regclass, caller text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text[] := (SELECT array_agg(a.attname::text ORDER BY k.n)
                     FROM pg_catalog.pg_index i
                    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                    WHERE i.indrelid = tbl AND i.indisprimary);
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION '%: table % has no primary key', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The id argument is a value of the primary key.';
    ELSIF cardinality(key) > 1 THEN
        RAISE EXCEPTION '%: table % has a primary key of % columns', caller, tbl, cardinality(key)
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'The id argument is a value of a single-column primary key.';
    END IF;
    RETURN key[1];
END;
$$;

CREATE FUNCTION integrity.enable_soft_delete(tbl regclass, deleted_column name DEFAULT 'deleted_at',
                                             flag_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller constant text := 'enable_soft_delete';
    typ regtype;
    contradicting text;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(deleted_column, 'deleted_column', caller);
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['soft_delete'], caller);
    typ := integrity._column_type(tbl, deleted_column);
    IF typ NOT IN ('timestamp'::regtype, 'timestamptz'::regtype) THEN
        RAISE EXCEPTION '%: deleted column "%" of table % must be timestamp or timestamptz, not %',
                        caller, deleted_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, deleted_column, caller);
    IF flag_column IS NOT NULL THEN
        typ := integrity._column_type(tbl, flag_column);
        IF typ <> 'boolean'::regtype THEN
            RAISE EXCEPTION '%: flag column "%" of table % must be boolean, not %', caller, flag_column, tbl, typ
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        PERFORM integrity._refuse_generated(tbl, flag_column, caller);
        IF flag_column = deleted_column THEN
            RAISE EXCEPTION '%: deleted_column and flag_column must differ', caller
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    SELECT r.guard INTO contradicting
      FROM integrity.guard_registry r
     WHERE r.table_name IN (SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
       AND r.guard IN ('append_only', 'hash_chain')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: table % is append-only; its rows cannot be marked deleted', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The %s guard refuses every UPDATE and DELETE of its rows.', contradicting),
                  HINT = 'Record a deletion as a new entry instead.';
    END IF;

    PERFORM integrity._record_guard(tbl, 'soft_delete',
                                    ARRAY[deleted_column::text] || ARRAY(SELECT flag_column::text WHERE flag_column IS NOT NULL),
                                    jsonb_build_object('deleted_column', deleted_column, 'flag_column', flag_column));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_soft_delete BEFORE DELETE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.soft_delete_guard(%s)', tbl,
                   concat_ws(', ', quote_literal(deleted_column), quote_literal(flag_column)));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.enable_soft_delete(regclass, name, name) IS
    'DELETE keeps the row and sets deleted_column = now() (and flag_column = true), cascading to soft-delete children.';

-- Marks live again the rows of tbl that match filter (over alias t) and were
-- deleted at the moment deleted_at (text), then, for each of them, the rows
-- of soft-delete children that their delete cascaded to (deleted at the same
-- moment).  The number of rows of tbl restored.
CREATE FUNCTION integrity._restore_rows(tbl regclass, filter text, deleted_at text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deleted_column text;
    flag_column text;
    restored jsonb;
    child record;
    n bigint := 0;
BEGIN
    SELECT s.deleted_column, s.flag_column INTO deleted_column, flag_column
      FROM integrity._soft_delete_of(tbl) s WHERE s.registered = tbl;
    FOR restored IN
        EXECUTE format('UPDATE %s AS t SET %s WHERE (%s) AND t.%I = %L::%s RETURNING pg_catalog.to_jsonb(t)',
                       tbl, integrity._soft_delete_set_sql(deleted_column, flag_column, false),
                       filter, deleted_column, deleted_at, integrity._column_type(tbl, deleted_column))
    LOOP
        n := n + 1;
        FOR child IN
            SELECT k.child, k.child_columns, k.parent_columns
              FROM integrity._foreign_keys() k
             WHERE k.parent = tbl AND k.cascades
               AND EXISTS (SELECT FROM integrity._soft_delete_of(k.child) s WHERE s.registered = k.child)
        LOOP
            PERFORM integrity._restore_rows(
                child.child,
                (SELECT string_agg(format('t.%I = %L::%s', cc, restored ->> pc, integrity._column_type(child.child, cc)),
                                   ' AND ' ORDER BY i)
                   FROM unnest(child.child_columns, child.parent_columns) WITH ORDINALITY AS k(cc, pc, i)),
                deleted_at);
        END LOOP;
    END LOOP;
    RETURN n;
END;
$$;

CREATE FUNCTION integrity.restore(tbl regclass, id anyelement)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guard record;
    key text;
    deleted_at text;
    found_rows bigint;
BEGIN
    SELECT * INTO guard FROM integrity._require_soft_delete(tbl, 'restore');
    PERFORM integrity._require_argument(id, 'id', 'restore');
    key := integrity._single_key(tbl, 'restore');
    EXECUTE format('SELECT t.%I::text FROM %s AS t WHERE t.%I = $1 FOR UPDATE', guard.deleted_column, tbl, key)
       INTO deleted_at USING id;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF found_rows = 0 THEN
        RAISE EXCEPTION 'restore: no row of table % has % = %', tbl, key, id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF deleted_at IS NULL THEN
        RETURN false;
    END IF;
    -- A live row that took the restored row's place under a partial unique
    -- index makes the UPDATE fail with 23505, naming the index and the key;
    -- the rows restored before it are rolled back with it.
    RETURN integrity._restore_rows(tbl, format('t.%I = %L::%s', key, id, pg_typeof(id)), deleted_at) > 0;
END;
$$;
COMMENT ON FUNCTION integrity.restore(regclass, anyelement) IS
    'Brings a soft-deleted row back, with the rows its delete cascaded to: true, or false when it was not deleted.';

CREATE FUNCTION integrity.purge_deleted(tbl regclass, older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Rows are deleted in ranges of this many pages (64 MB): each range is
    -- its own statement, whose cascades run at its end.
    batch constant bigint := 8192;
    guard record;
    cutoff text;
    pages bigint;
    first_page bigint := 0;
    purged bigint := 0;
BEGIN
    SELECT * INTO guard FROM integrity._require_soft_delete(tbl, 'purge_deleted');
    PERFORM integrity._require_argument(older_than, 'older_than', 'purge_deleted');
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'purge_deleted: older_than must not be negative, not %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._require_owner(tbl, 'delete its rows for good');
    cutoff := format('%L::%s', now() - older_than, integrity._column_type(tbl, guard.deleted_column));
    SELECT max(pg_catalog.pg_relation_size(r) / current_setting('block_size')::bigint) INTO pages
      FROM integrity._partition_tree(tbl) AS r;
    WHILE first_page < pages LOOP
        purged := purged + integrity._execute_sanctioned(tbl,
            format('DELETE FROM %s AS t WHERE t.ctid >= ''(%s,0)''::tid AND t.ctid < ''(%s,0)''::tid AND t.%I < %s',
                   tbl, first_page, first_page + batch, guard.deleted_column, cutoff));
        first_page := first_page + batch;
    END LOOP;
    RETURN purged;
END;
$$;
COMMENT ON FUNCTION integrity.purge_deleted(regclass, interval) IS
    'Deletes for good the rows soft-deleted longer ago than older_than (with what cascades from them); the number of rows of tbl deleted.';

CREATE FUNCTION integrity.hard_delete(tbl regclass, id anyelement)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text;
BEGIN
    PERFORM integrity._require_soft_delete(tbl, 'hard_delete');
    PERFORM integrity._require_argument(id, 'id', 'hard_delete');
    key := integrity._single_key(tbl, 'hard_delete');
    PERFORM integrity._require_owner(tbl, 'delete its rows for good');
    IF integrity._execute_sanctioned(tbl, format('DELETE FROM %s AS t WHERE t.%I = %L::%s', tbl, key, id, pg_typeof(id))) = 0 THEN
        RAISE EXCEPTION 'hard_delete: no row of table % has % = %', tbl, key, id
            USING ERRCODE = 'no_data_found';
    END IF;
END;
$$;
COMMENT ON FUNCTION integrity.hard_delete(regclass, anyelement) IS
    'Deletes one row of a soft-delete table for good, deleted or not (an erasure request), with what cascades from it.';

-- violations(): live rows that reference a soft-deleted row, through the
-- foreign key from child to parent (a soft-delete table).  NULL when a
-- column is missing.
CREATE FUNCTION integrity._deleted_parent_sql(parent regclass, parent_columns text[], parent_deleted text,
                                              child regclass, child_columns text[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT ''soft_delete'', %L::pg_catalog.regclass, %s,'
                  ' %L || %s || %L || p.%I::text'
                  ' FROM %s AS t JOIN %s AS p ON %s WHERE p.%I IS NOT NULL%s',
                  child, integrity._row_key_sql(child),
                  format('the row references %s (', parent),
                  (SELECT string_agg(format('%L || COALESCE(p.%I::text, ''NULL'')', pc || '=', pc), ' || '', '' || '
                                     ORDER BY n)
                     FROM unnest(parent_columns) WITH ORDINALITY AS k(pc, n)),
                  '), which was deleted at ', parent_deleted,
                  child, parent, integrity._references_sql('t', child_columns, parent_columns), parent_deleted,
                  (SELECT format(' AND t.%I IS NULL', s.deleted_column)
                     FROM integrity._soft_delete_of(child) s))
     WHERE integrity._has_columns(parent, parent_columns || parent_deleted)
       AND integrity._has_columns(child, child_columns)
$$;

-- Retention of append-only tables (guide 000: ledger entries older than two
-- years are archived).  set_retention() records how long rows are kept, in
-- the options of the table's append_only guard; purge_expired() is the one
-- delete the guard lets through: rows older than that, moved into an archive
-- or deleted, in one statement run by integrity._execute_sanctioned().
--
-- A hash-chained table loses a prefix of each chain, up to all of its rows.
-- Where a chain now starts is recorded in integrity.chain_anchors: the
-- sequence number and hash of the last row purged, which verify_chain() links
-- the first remaining row to, and the next row of an emptied chain links to.

CREATE TABLE integrity.chain_anchors (
    table_name regclass    NOT NULL,
    chain      jsonb       NOT NULL,
    seq        bigint      NOT NULL,
    hash       bytea       NOT NULL,
    purged_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (table_name, chain)
);
COMMENT ON TABLE integrity.chain_anchors IS
    'Where each purged hash chain starts: the sequence number and hash of its last purged row. Written by purge_expired().';
SELECT pg_catalog.pg_extension_config_dump('integrity.chain_anchors', '');
-- Like the registry: anyone may read, only a table's owner may write its rows.
CREATE TRIGGER chain_anchors_owner_check
    BEFORE INSERT OR UPDATE OR DELETE ON integrity.chain_anchors
    FOR EACH ROW EXECUTE FUNCTION integrity._guard_registry_owner_check();
GRANT SELECT, INSERT, UPDATE, DELETE ON integrity.chain_anchors TO PUBLIC;

-- The retention of tbl's append_only guard: how long rows are kept, by which
-- column, and the column's type.  No row when tbl has none.
CREATE FUNCTION integrity._retention_of(tbl regclass)
RETURNS TABLE (keep interval, time_column text, time_type regtype)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (r.options -> 'retention' ->> 'keep')::interval, r.options -> 'retention' ->> 'time_column',
           (SELECT a.atttypid::regtype FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = tbl AND a.attname = r.options -> 'retention' ->> 'time_column'
               AND a.attnum > 0 AND NOT a.attisdropped)
      FROM integrity.guard_registry r
     WHERE r.table_name = tbl AND r.guard = 'append_only' AND r.options ? 'retention'
$$;

CREATE FUNCTION integrity.set_retention(tbl regclass, keep interval, time_column name DEFAULT 'created_at')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- The interval is kept as text in the registry: in a form every IntervalStyle reads back.
SET IntervalStyle = iso_8601
AS $$
DECLARE
    caller constant text := 'set_retention';
    typ regtype;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(time_column, 'time_column', caller);
    IF NOT EXISTS (SELECT FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'append_only') THEN
        RAISE EXCEPTION '%: table % is not append-only', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A retention lets old rows of an append-only table be purged; other tables can delete them anyway.',
                  HINT = format('Register the guard first: SELECT integrity.protect_append_only(%L);', tbl::text);
    END IF;
    IF keep IS NULL THEN
        -- No retention: every row is kept again.
        UPDATE integrity.guard_registry r SET options = r.options - 'retention'
         WHERE r.table_name = tbl AND r.guard = 'append_only' AND r.options ? 'retention';
        RETURN;
    END IF;
    IF keep <= interval '0' THEN
        RAISE EXCEPTION '%: keep must be a positive interval, not %', caller, keep
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    typ := integrity._column_type(tbl, time_column);
    IF typ NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
        RAISE EXCEPTION '%: time column "%" of table % must be timestamptz, timestamp or date, not %',
                        caller, time_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    UPDATE integrity.guard_registry r
       SET options = r.options || jsonb_build_object('retention',
                                                     jsonb_build_object('keep', keep::text, 'time_column', time_column))
     WHERE r.table_name = tbl AND r.guard = 'append_only'
       AND r.options -> 'retention' IS DISTINCT FROM jsonb_build_object('keep', keep::text, 'time_column', time_column);
END;
$$;
COMMENT ON FUNCTION integrity.set_retention(regclass, interval, name) IS
    'Rows of the append-only table older than keep (by time_column) may be purged with purge_expired(); NULL keeps every row again.';

-- The expression (over alias row_alias) that a row of tbl is past its retention.
CREATE FUNCTION integrity._expired_sql(tbl regclass, row_alias text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%s.%I < %L::%s', row_alias, r.time_column, pg_catalog.now() - r.keep, r.time_type)
      FROM integrity._retention_of(tbl) r
$$;

-- Whether partition part of an append-only table (partitioned by range on
-- its time column) holds only rows past the retention: its upper bound is
-- not later than the cutoff.  Such a partition can be detached (and archived)
-- or dropped.  Hash-chained tables lose rows only through purge_expired(),
-- which keeps their chains linked.
CREATE FUNCTION integrity._expired_partition(part regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent regclass := (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = part);
    retention record;
    upper_bound text;
    expired boolean;
BEGIN
    SELECT * INTO retention FROM integrity._retention_of(parent);
    IF NOT FOUND OR EXISTS (SELECT FROM integrity._chain_of(parent))
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_partitioned_table p
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                      WHERE p.partrelid = parent AND p.partstrat = 'r' AND p.partnatts = 1
                        AND a.attname = retention.time_column) THEN
        RETURN false;
    END IF;
    upper_bound := substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM ' TO \((.*)\)$')
      FROM pg_catalog.pg_class c WHERE c.oid = part;
    IF upper_bound IS NULL OR upper_bound = 'MAXVALUE' THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT %s::%s <= %L::%s', upper_bound, retention.time_type, now() - retention.keep,
                   retention.time_type)
       INTO expired;
    RETURN expired;
END;
$$;

-- DETACH PARTITION of an append-only table: allowed for a partition past the
-- retention, refused (55000) otherwise.
CREATE FUNCTION integrity._refuse_detach(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF part IS NULL OR NOT integrity._expired_partition(part) THEN
        PERFORM integrity._refuse_history_ddl(parent, format('detach partition "%s"',
                                                             coalesce((SELECT c.relname FROM pg_catalog.pg_class c
                                                                        WHERE c.oid = part), '?')));
    END IF;
END;
$$;

CREATE FUNCTION integrity.purge_expired(tbl regclass, archive regclass DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller constant text := 'purge_expired';
    chain record;
    expired text;
    purge text;
    mismatch text;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    expired := integrity._expired_sql(tbl, 't');
    IF expired IS NULL THEN
        RAISE EXCEPTION '%: table % has no retention', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Set one first, e.g. SELECT integrity.set_retention(%L, ''2 years'');', tbl::text);
    END IF;
    PERFORM integrity._require_owner(tbl, 'purge its rows');
    IF archive IS NOT NULL THEN
        IF archive = tbl OR archive IN (SELECT integrity._partition_tree(tbl)) THEN
            RAISE EXCEPTION '%: the archive must be another table than %', caller, tbl
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = archive) NOT IN ('r', 'p') THEN
            RAISE EXCEPTION '%: archive "%" is not a table', caller, archive
                USING ERRCODE = 'wrong_object_type';
        END IF;
        -- The archive has the table's columns, in the same order.
        SELECT format('column %s is %s in %s but %s in %s', coalesce(t.n, a.n),
                      CASE WHEN t.n IS NULL THEN 'missing' ELSE format('%I %s', t.attname, t.typ) END, tbl,
                      CASE WHEN a.n IS NULL THEN 'missing' ELSE format('%I %s', a.attname, a.typ) END, archive)
          INTO mismatch
          FROM (SELECT row_number() OVER (ORDER BY attnum) AS n, attname, format_type(atttypid, atttypmod) AS typ
                  FROM pg_catalog.pg_attribute WHERE attrelid = tbl AND attnum > 0 AND NOT attisdropped) t
          FULL JOIN (SELECT row_number() OVER (ORDER BY attnum) AS n, attname, format_type(atttypid, atttypmod) AS typ
                       FROM pg_catalog.pg_attribute WHERE attrelid = archive AND attnum > 0 AND NOT attisdropped) a
            ON a.n = t.n
         WHERE (t.attname, t.typ) IS DISTINCT FROM (a.attname, a.typ)
         ORDER BY coalesce(t.n, a.n)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION '%: archive % does not have the columns of %', caller, archive, tbl
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = initcap(left(mismatch, 1)) || substr(mismatch, 2) || '.';
        END IF;
    END IF;

    SELECT * INTO chain FROM integrity._chain_of(tbl) c WHERE c.chained = tbl;
    IF FOUND THEN
        -- A prefix of each chain: rows whose chain holds no younger row at or
        -- before them (all of its rows when all are past the retention); the
        -- last purged row becomes the anchor, which the next row links to.
        purge := format(
            'WITH purged AS (DELETE FROM %1$s AS t WHERE %2$s'
            '   AND NOT EXISTS (SELECT FROM %1$s AS l WHERE %3$s AND l.%4$I <= t.%4$I AND NOT coalesce(%5$s, false))'
            '   RETURNING t.*),'
            ' anchored AS (INSERT INTO integrity.chain_anchors AS a (table_name, chain, seq, hash)'
            '   SELECT DISTINCT ON (2) %6$L::pg_catalog.regclass, %7$s, t.%4$I, t.%8$I FROM purged AS t ORDER BY 2, 3 DESC'
            '   ON CONFLICT (table_name, chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,'
            '   purged_at = pg_catalog.now() WHERE a.seq < excluded.seq) ',
            tbl, expired,
            coalesce((SELECT string_agg(format('l.%1$I = t.%1$I', col), ' AND ') FROM unnest(chain.chain_columns) AS col),
                     'true'),
            chain.seq_column, integrity._expired_sql(tbl, 'l'), tbl::oid,
            integrity._chain_values_sql(tbl, chain.chain_columns, 't'), chain.hash_column);
    ELSIF archive IS NOT NULL THEN
        purge := format('WITH purged AS (DELETE FROM %s AS t WHERE %s RETURNING t.*) ', tbl, expired);
    ELSE
        RETURN integrity._execute_sanctioned(tbl, format('DELETE FROM %s AS t WHERE %s', tbl, expired));
    END IF;
    RETURN integrity._execute_sanctioned(tbl, purge || CASE WHEN archive IS NULL THEN 'SELECT FROM purged'
                                                            ELSE format('INSERT INTO %s SELECT * FROM purged', archive) END);
END;
$$;
COMMENT ON FUNCTION integrity.purge_expired(regclass, regclass) IS
    'Deletes the rows of the append-only table older than its retention, or moves them into archive, in one statement; the number of rows. Hash chains start where the purge stopped.';

CREATE OR REPLACE FUNCTION integrity._on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped record;
BEGIN
    FOR dropped IN
        SELECT o.rel, o.tgname, needed.guarded_table, needed.guard
          FROM (SELECT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel,
                       address_names[3]::name AS tgname
                  FROM pg_catalog.pg_event_trigger_dropped_objects()
                 WHERE object_type = 'trigger' AND address_names[3] LIKE 'integrity\_%') o
         CROSS JOIN LATERAL integrity._guard_needing(o.rel, o.tgname) needed
         WHERE o.rel IS NOT NULL
    LOOP
        PERFORM integrity._refuse_guard_ddl('drop', dropped.tgname, dropped.rel, dropped.guarded_table, dropped.guard);
    END LOOP;

    -- A trigger that fired after a guard's is gone: its recheck may go too.
    PERFORM integrity._sync_rechecks(o.rel)
       FROM (SELECT DISTINCT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel
               FROM pg_catalog.pg_event_trigger_dropped_objects()
              WHERE object_type = 'trigger') o
      WHERE o.rel IS NOT NULL;

    PERFORM integrity._refuse_history_drop();
    PERFORM integrity._refuse_accounts_ddl(NULL, ARRAY(
        SELECT o.object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() o WHERE o.object_type = 'table'));

    -- The holds on a dropped table go with it.
    DELETE FROM integrity.hold_records h
     WHERE h.status IN ('pending', 'committed', 'released', 'expired')
       AND h.table_name::pg_catalog.oid IN (SELECT o.objid FROM pg_catalog.pg_event_trigger_dropped_objects() o
                                             WHERE o.object_type = 'table');
    DELETE FROM integrity.guard_registry r
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name);
    DELETE FROM integrity.chain_anchors a
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = a.table_name);
END;
$$;

-- 0.1.0's row-movement triggers: the immutable and write-once guards' BEFORE
-- triggers now see a moved row themselves.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT tgrelid::regclass AS rel, tgname FROM pg_catalog.pg_trigger
              WHERE tgname IN ('integrity_immutable_row_movement', 'integrity_write_once_row_movement')
                AND tgparentid = 0
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
    END LOOP;
END
$$;

-- Registration is idempotent and re-creates a guard's triggers as this
-- version makes them (the NaN and bpchar conditions above).  A guard that
-- cannot be registered again as it stands (a column changed under it) stays as
-- it was: the update goes on, with a warning, and health() reports the guard.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT table_name, guard, columns, options FROM integrity.guard_registry
              ORDER BY table_name::oid, guard
    LOOP
        BEGIN
            EXECUTE integrity._registration_sql(r.table_name, r.guard, r.columns, r.options);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_integrity: the % guard of % could not be registered again: %', r.guard, r.table_name, SQLERRM
                USING HINT = 'SELECT * FROM integrity.health() shows how to repair it.';
        END;
    END LOOP;
END
$$;

-- The event triggers as this version makes them: integrity_ddl_command_end
-- watches more commands, integrity_ddl_command_start is new.
DROP EVENT TRIGGER integrity_ddl_command_end;
DO $$
DECLARE
    e record;
BEGIN
    FOR e IN SELECT * FROM integrity._event_triggers() t
              WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger p WHERE p.evtname = t.evtname)
    LOOP
        EXECUTE integrity._event_trigger_sql(e.evtname);
    END LOOP;
END
$$;

-- Accounts' used credit includes their pending credit holds.
CREATE OR REPLACE FUNCTION integrity._ledger_drift_sql(ledger regclass, accounts regclass, keys text[], options jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    amount text := options ->> 'amount_column';
    entry_type text := options ->> 'entry_type_column';
    used text := options ->> 'used_column';
    k text;
    a_cols text := '';
    l_cols text := '';
    l_group text := '';
    a_alias text := '';
    join_on text := '';
    key_json text := '';
    hold_key text := '';
    i int := 0;
BEGIN
    IF ledger IS NULL OR accounts IS NULL OR coalesce(cardinality(keys), 0) = 0
       OR options ->> 'debit_value' IS NULL OR options ->> 'credit_value' IS NULL
       OR NOT integrity._has_columns(ledger, keys || ARRAY[amount, entry_type])
       OR NOT integrity._has_columns(accounts, keys || ARRAY[used]) THEN
        RETURN NULL;
    END IF;
    FOREACH k IN ARRAY keys LOOP
        i := i + 1;
        a_cols := a_cols || format('a.%I, ', k);
        l_cols := l_cols || format('l.%I, ', k);
        l_group := l_group || CASE WHEN i > 1 THEN ', ' ELSE '' END || format('l.%I', k);
        a_alias := a_alias || format('k%s, ', i);
        join_on := join_on || CASE WHEN i > 1 THEN ' AND ' ELSE '' END || format('a.k%1$s = l.k%1$s', i);
        key_json := key_json || CASE WHEN i > 1 THEN ', ' ELSE '' END || format('%L, COALESCE(a.k%s, l.k%s)', k, i, i);
        hold_key := hold_key || CASE WHEN i > 1 THEN ', ' ELSE '' END || format('%L, a.k%s', k, i);
    END LOOP;
    RETURN format(
        'SELECT ''ledger_credit'', $1, pg_catalog.jsonb_build_object(%s),'
        ' CASE WHEN a.present IS NULL'
        '  THEN %L || (COALESCE(l.debits, 0) - COALESCE(l.credits, 0))::text'
        '       || '': debits '' || COALESCE(l.debits, 0)::text || '', credits '' || COALESCE(l.credits, 0)::text || %L'
        '  ELSE %L || COALESCE(a.used::text, ''NULL'') || %L || (COALESCE(l.debits, 0) - COALESCE(l.credits, 0))::text'
        '       || '' (debits '' || COALESCE(l.debits, 0)::text || '', credits '' || COALESCE(l.credits, 0)::text || '')'''
        '       || COALESCE('' and its pending holds hold '' || h.held::text, '''')'
        ' END'
        ' FROM (SELECT true, %s a.%I FROM %s a) AS a(present, %s used)'
        ' FULL JOIN (SELECT %s sum(l.%I) FILTER (WHERE l.%I = %L), sum(l.%I) FILTER (WHERE l.%I = %L)'
        '              FROM %s l GROUP BY %s) AS l(%s debits, credits)'
        '   ON %s'
        ' LEFT JOIN (SELECT h.row_id, sum(h.quantity) FROM integrity.hold_records h'
        '             WHERE h.table_name = $1 AND h.kind = ''credit'' AND h.status = ''pending'''
        '             GROUP BY h.row_id) AS h(row_id, held)'
        '   ON h.row_id = pg_catalog.jsonb_build_object(%s)'
        ' WHERE a.present IS NULL'
        '    OR a.used IS DISTINCT FROM COALESCE(l.debits, 0) - COALESCE(l.credits, 0) + COALESCE(h.held, 0)',
        key_json,
        format('ledger %s has entries for this key (net ', ledger),
        format('), but %s has no row for it', accounts),
        format('column "%s" is ', used),
        format(', but ledger %s says ', ledger),
        a_cols, used, accounts, a_alias,
        l_cols, amount, entry_type, options ->> 'debit_value', amount, entry_type, options ->> 'credit_value',
        ledger, l_group, a_alias,
        join_on, hold_key);
END;
$$;

-- ==== issue 14: monitoring (refusal counters, record_check) — begin ====
-- Same as sql/monitoring.sql.

-- Monitoring: refused writes counted across rollbacks (src/refusals.rs, with
-- pg_integrity in shared_preload_libraries; LISTEN integrity_refusals is fed
-- by src/notifier.rs), and the nightly check recorded (record_check(), made to
-- be scheduled with pg_cron; read by the postgres_exporter queries in
-- docs/monitoring/).

CREATE FUNCTION integrity._refusal_counters()
RETURNS TABLE (table_oid oid, guard text, sqlstate text, refusals bigint, first_at timestamptz,
               last_at timestamptz, last_role text, last_detail text)
    LANGUAGE c AS 'MODULE_PATHNAME', 'refusal_counters_wrapper';

CREATE VIEW integrity.refusals AS
SELECT c.table_oid::pg_catalog.regclass AS table_name, c.guard, c.sqlstate, c.refusals, c.first_at, c.last_at,
       c.last_role::name AS last_role, c.last_detail
  FROM integrity._refusal_counters() c;
COMMENT ON VIEW integrity.refusals IS
    'Refused writes of this database since the last reset, counted in shared memory across sessions and rollbacks: one row per table, guard and SQLSTATE, with the first and last time, the role and the DETAIL of the last refusal. Empty unless pg_integrity is in shared_preload_libraries (health() says so).';
GRANT SELECT ON integrity.refusals TO PUBLIC;

CREATE FUNCTION integrity.reset_refusals() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'reset_refusal_counters_wrapper';
COMMENT ON FUNCTION integrity.reset_refusals() IS
    'Forgets every refusal counter (of every database). Superusers, and roles granted EXECUTE on it.';
REVOKE EXECUTE ON FUNCTION integrity.reset_refusals() FROM PUBLIC;

-- The recorded checks: one row per record_check() run, and its violations per
-- table and guard.  Table names are text: a run outlives the tables it saw.
CREATE SEQUENCE integrity.check_runs_run_id_seq;

CREATE TABLE integrity.check_runs (
    run_id          bigint      NOT NULL DEFAULT pg_catalog.nextval('integrity.check_runs_run_id_seq') PRIMARY KEY,
    run_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    violations      bigint      NOT NULL,
    health_errors   integer     NOT NULL,
    health_warnings integer     NOT NULL,
    health_info     integer     NOT NULL,
    -- health() as it was: [{"severity", "table", "guard", "problem"}, ...]
    health_problems jsonb       NOT NULL
);
ALTER SEQUENCE integrity.check_runs_run_id_seq OWNED BY integrity.check_runs.run_id;
CREATE INDEX check_runs_run_at ON integrity.check_runs (run_at);
COMMENT ON TABLE integrity.check_runs IS
    'pg_integrity: one row per integrity.record_check() run: violations() and health() summed up.';

CREATE TABLE integrity.check_violations (
    run_id     bigint NOT NULL REFERENCES integrity.check_runs ON DELETE CASCADE,
    table_name text   NOT NULL,
    guard      text   NOT NULL,
    violations bigint NOT NULL,
    PRIMARY KEY (run_id, table_name, guard)
);
COMMENT ON TABLE integrity.check_violations IS
    'pg_integrity: the violations() rows of an integrity.record_check() run, counted per table and guard.';

REVOKE ALL ON integrity.check_runs, integrity.check_violations, integrity.check_runs_run_id_seq FROM PUBLIC;
GRANT SELECT ON integrity.check_runs, integrity.check_violations TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('integrity.check_runs', '');
SELECT pg_catalog.pg_extension_config_dump('integrity.check_violations', '');
SELECT pg_catalog.pg_extension_config_dump('integrity.check_runs_run_id_seq', '');

-- PL/pgSQL: violations() and health() are created after this file.
CREATE FUNCTION integrity.record_check(keep interval DEFAULT interval '90 days')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run bigint;
BEGIN
    IF keep IS NULL OR keep < interval '0' THEN
        RAISE EXCEPTION 'record_check: argument "keep" must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO integrity.check_runs (violations, health_errors, health_warnings, health_info, health_problems)
    SELECT 0, count(*) FILTER (WHERE h.severity = 'error'), count(*) FILTER (WHERE h.severity = 'warning'),
           count(*) FILTER (WHERE h.severity = 'info'),
           coalesce(jsonb_agg(jsonb_build_object('severity', h.severity, 'table', h.table_name::text,
                                                 'guard', h.guard, 'problem', h.problem)), '[]')
      FROM integrity.health() h
    RETURNING run_id INTO run;
    INSERT INTO integrity.check_violations (run_id, table_name, guard, violations)
    SELECT run, v.table_name::text, v.guard, count(*)
      FROM integrity.violations() v
     GROUP BY v.table_name::text, v.guard;
    UPDATE integrity.check_runs
       SET violations = (SELECT coalesce(sum(cv.violations), 0) FROM integrity.check_violations cv WHERE cv.run_id = run)
     WHERE run_id = run;
    DELETE FROM integrity.check_runs WHERE run_at < now() - keep AND run_id <> run;
    RETURN run;
END
$$;
COMMENT ON FUNCTION integrity.record_check(interval) IS
    'Runs violations() and health() and records one summary (integrity.check_runs, integrity.check_violations); deletes the runs older than "keep". Returns the run id. Schedule it with pg_cron: SELECT cron.schedule(''0 2 * * *'', ''SELECT integrity.record_check()'').';
REVOKE EXECUTE ON FUNCTION integrity.record_check(interval) FROM PUBLIC;

-- The latest run, per table and guard and per severity: what the
-- postgres_exporter queries read.
CREATE VIEW integrity.latest_check AS
SELECT r.run_id, r.run_at, r.violations, r.health_errors, r.health_warnings, r.health_info
  FROM integrity.check_runs r
 ORDER BY r.run_id DESC
 LIMIT 1;
COMMENT ON VIEW integrity.latest_check IS 'The latest integrity.record_check() run.';
GRANT SELECT ON integrity.latest_check TO PUBLIC;

-- ==== issue 14: monitoring — end ====

-- ==== issue 17: maintained totals ====
ALTER TABLE integrity.guard_registry DROP CONSTRAINT guard_registry_known_guard,
    ADD CONSTRAINT guard_registry_known_guard
        CHECK (guard IN ('append_only', 'immutable', 'write_once', 'versioning',
                         'stock', 'credit', 'ledger_credit', 'hash_chain', 'soft_delete',
                         'lifecycle', 'total'));

CREATE OR REPLACE FUNCTION integrity._total_trigger_base(target_name text, target_column text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'integrity_total_' || left(md5(target_name || '.' || target_column), 12) $$;

-- The arguments of a target's integrity_total trigger: the maintained
-- columns, an empty string, the target's key columns.
CREATE FUNCTION integrity._total_guard_args(columns text[], options jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT columns || ARRAY[''] || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'key'))
$$;

CREATE OR REPLACE FUNCTION integrity._total_guard_args(columns text[], options jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT columns || ARRAY[''] || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'key'))
$$;

-- Maintained totals (src/totals.rs): a column of a target table kept equal to
-- the sum (or count) of the source rows that reference each target row.
--
-- Registration puts on the source a row trigger that collects each row's
-- contribution (when the row satisfies the filter) and a statement trigger that applies what its statement collected, one UPDATE per
-- target row in key order; on the target a trigger that refuses direct writes
-- of the total and one that starts a new row at its sources' total.  The
-- registry row is the target's: options = {"key": [target key columns],
-- "totals": [{column, source, key_columns, value_column, filter,
-- filter_columns}, …]}; columns = the maintained columns.

CREATE FUNCTION integrity.total_source() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_total_source';
COMMENT ON FUNCTION integrity.total_source() IS
    'Trigger: collects the contribution of each source row to its target row''s maintained total.';

CREATE FUNCTION integrity.total_apply() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_total_apply';
COMMENT ON FUNCTION integrity.total_apply() IS
    'Trigger: applies what a statement on a source table collected, one update per target row, in key order.';

CREATE FUNCTION integrity.total_start() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_total_start';
COMMENT ON FUNCTION integrity.total_start() IS
    'Trigger: starts a new target row''s maintained totals at the total of the source rows that already reference it.';

CREATE FUNCTION integrity.total_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_total_guard';
COMMENT ON FUNCTION integrity.total_guard() IS
    'Trigger: refuses a direct change of a maintained total or of its row''s key (23001).';

CREATE FUNCTION integrity._total_filter(source regclass, filter text) RETURNS text
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'integrity_total_filter';

CREATE FUNCTION integrity._total_filter_columns(source regclass, filter text) RETURNS text[]
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'integrity_total_filter_columns';

CREATE FUNCTION integrity._execute_total_writes(tbl regclass, statement text) RETURNS bigint
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'integrity_execute_total_writes';

-- The primary key columns of tbl, in index order; NULL without one.
CREATE FUNCTION integrity._primary_key(tbl regclass)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(a.attname::text ORDER BY k.n)
      FROM pg_catalog.pg_index i
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = tbl AND i.indisprimary
$$;

-- The actual total of one registered total for the target row aliased t, as
-- an SQL expression: one index lookup per target row given an index on the
-- source's key columns.
CREATE FUNCTION integrity._total_sql(total jsonb, key text[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('(SELECT COALESCE(%s, 0) FROM %s s WHERE %s%s)',
                  CASE WHEN total ->> 'value_column' IS NULL THEN 'count(*)'
                       ELSE format('sum(s.%I)', total ->> 'value_column') END,
                  total ->> 'source',
                  (SELECT string_agg(format('s.%I = t.%I', sk, tk), ' AND ' ORDER BY n)
                     FROM unnest(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(total -> 'key_columns')), key)
                          WITH ORDINALITY AS k(sk, tk, n)),
                  CASE WHEN total ->> 'filter' IS NULL THEN ''
                       ELSE format(' AND (%s)', total ->> 'filter') END)
$$;

-- The actual value of maintained column col of the target row aliased t: the
-- sum of every total registered for it (from sources that still exist).
CREATE FUNCTION integrity._column_total_sql(options jsonb, col text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(integrity._total_sql(t, ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'key'))),
                      ' + ' ORDER BY t ->> 'source')
      FROM pg_catalog.jsonb_array_elements(options -> 'totals') AS t
     WHERE t ->> 'column' = col AND integrity._relation(t ->> 'source') IS NOT NULL
$$;

-- For total_start (BEFORE INSERT on the target): per maintained column of
-- target, its attribute number, the query that computes a new row's total
-- from the row's key columns ($1, $2, …), and their attribute numbers
-- (separated by spaces).  A new row starts at the total of the source rows
-- that already reference it: zero for a new parent.
CREATE FUNCTION integrity._total_start_sql(target regclass)
RETURNS TABLE (attnum smallint, sql text, key_attnums text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attnum,
           format('SELECT (%s)::%s FROM (SELECT %s) t', integrity._column_total_sql(r.options, c.col),
                  pg_catalog.format_type(a.atttypid, a.atttypmod),
                  (SELECT string_agg(format('$%s AS %I', k.n, k.col), ', ' ORDER BY k.n)
                     FROM pg_catalog.jsonb_array_elements_text(r.options -> 'key') WITH ORDINALITY AS k(col, n))),
           (SELECT string_agg(ka.attnum::text, ' ' ORDER BY k.n)
              FROM pg_catalog.jsonb_array_elements_text(r.options -> 'key') WITH ORDINALITY AS k(col, n)
              JOIN pg_catalog.pg_attribute ka ON ka.attrelid = target AND ka.attname = k.col)
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL unnest(r.columns) AS c(col)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = target AND a.attname = c.col AND NOT a.attisdropped
     WHERE r.table_name = target AND r.guard = 'total'
       AND integrity._column_total_sql(r.options, c.col) IS NOT NULL
$$;

-- A TRUNCATE of a source would leave every total it feeds behind.
CREATE FUNCTION integrity._total_truncate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'cannot truncate "%": it is the source of maintained total %.%', TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[1]
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'TRUNCATE fires no row triggers, so the total would keep counting the removed rows.',
              HINT = format('Use DELETE, or call integrity.unprotect(%L, ''total'') first and'
                            ' integrity.recompute_totals() after registering again.', TG_ARGV[0]);
END;
$$;

-- Drops the source triggers of the totals registered with options
-- registered (of one column and source when given); the target may be gone.
CREATE FUNCTION integrity._drop_total_triggers(registered jsonb,
                                               only_column text DEFAULT NULL, only_source regclass DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trg record;
BEGIN
    FOR trg IN
        SELECT DISTINCT tg.tgname, tg.tgrelid::regclass AS rel
          FROM pg_catalog.jsonb_array_elements(registered -> 'totals') AS t
          JOIN pg_catalog.pg_trigger tg
            ON tg.tgrelid = integrity._relation(t ->> 'source')
           AND tg.tgname LIKE integrity._total_trigger_base(registered ->> 'name', t ->> 'column') || '%'
         WHERE (only_column IS NULL OR t ->> 'column' = only_column)
           AND (only_source IS NULL OR integrity._relation(t ->> 'source') = only_source)
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg.tgname, trg.rel);
    END LOOP;
END;
$$;

CREATE FUNCTION integrity.maintain_total(target regclass, target_column name, source regclass, key_columns text[],
                                         value_column name DEFAULT NULL, filter text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'maintain_total';
    key text[];
    keys text[];
    registered jsonb;
    total jsonb;
    base text;
    source_name text;
    target_name text;
    filter_sql text;
    filter_columns text[];
    apply_args text;
    source_args text;
    i int;
BEGIN
    PERFORM integrity._check_table(target, caller);
    PERFORM integrity._require_argument(source, 'source', caller);
    PERFORM integrity._check_table(source, caller);
    PERFORM integrity._require_argument(target_column, 'target_column', caller);
    PERFORM integrity._require_argument(key_columns, 'key_columns', caller);
    IF target = source THEN
        RAISE EXCEPTION '%: the target and the source must be different tables', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = source) = 'p'
       OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = target) = 'p' THEN
        RAISE EXCEPTION '%: partitioned tables cannot hold or feed maintained totals yet', caller
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT FROM integrity._inheritance_children(source)) THEN
        RAISE EXCEPTION '%: table "%" has inheritance children', caller, source
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Rows of the children would not reach the total.';
    END IF;
    key := integrity._primary_key(target);
    IF key IS NULL THEN
        RAISE EXCEPTION '%: table "%" has no primary key', caller, target
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'The source rows reference the target row by its primary key.';
    END IF;
    IF cardinality(key) > 8 THEN
        RAISE EXCEPTION '%: a target key has at most 8 columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._check_quantity_column(target, target_column, caller);
    PERFORM integrity._refuse_generated(target, target_column, caller);
    IF target_column = ANY (key) THEN
        RAISE EXCEPTION '%: column "%" is part of the primary key of "%"', caller, target_column, target
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    keys := integrity._check_columns(source, key_columns, caller);
    IF cardinality(keys) <> cardinality(key_columns) OR cardinality(keys) <> cardinality(key) THEN
        RAISE EXCEPTION '%: key_columns must name % distinct column(s) of "%", one for each column of the primary key (%) of "%"',
                        caller, cardinality(key), source, array_to_string(key, ', '), target
            USING ERRCODE = 'invalid_column_reference';
    END IF;
    FOR i IN 1 .. cardinality(key) LOOP
        IF integrity._column_type(source, keys[i]) <> integrity._column_type(target, key[i]) THEN
            RAISE EXCEPTION '%: key column "%" has type % in "%" but "%" has type % in "%"', caller, keys[i],
                            integrity._column_type(source, keys[i]), source, key[i],
                            integrity._column_type(target, key[i]), target
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END LOOP;
    IF value_column IS NOT NULL THEN
        PERFORM integrity._check_quantity_column(source, value_column, caller);
        -- The total must hold every sum exactly, or it drifts from its sources.
        IF NOT integrity._holds_exactly(target, target_column, source, value_column) THEN
            RAISE EXCEPTION '%: values of type % would be rounded into "%" of type %', caller,
                            integrity._column_format(source, value_column), target_column,
                            integrity._column_format(target, target_column)
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Give the total the type of the values it adds up.';
        END IF;
    END IF;
    IF filter IS NOT NULL THEN
        filter_sql := integrity._total_filter(source, filter);
        filter_columns := integrity._total_filter_columns(source, filter);
    END IF;

    source_name := source::text;
    target_name := target::text;
    total := pg_catalog.jsonb_build_object('column', target_column, 'source', source_name, 'key_columns', keys,
                                           'value_column', value_column, 'filter', filter_sql,
                                           'filter_columns', coalesce(filter_columns, '{}'));
    -- A total registered again loses its old triggers first, which the event
    -- trigger lets go only once the registry no longer needs them.
    SELECT r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    registered := pg_catalog.jsonb_build_object(
        'name', target_name,
        'key', key,
        'totals', coalesce((SELECT pg_catalog.jsonb_agg(t ORDER BY t ->> 'column', t ->> 'source')
                              FROM pg_catalog.jsonb_array_elements(registered -> 'totals') t
                             WHERE (t ->> 'column', integrity._relation(t ->> 'source'))
                                   IS DISTINCT FROM (target_column::text, source)), '[]'));
    PERFORM integrity._record_total(target, registered);
    PERFORM integrity._drop_total_triggers(pg_catalog.jsonb_build_object('name', target_name,
                                                                         'totals', pg_catalog.jsonb_build_array(total)));
    registered := pg_catalog.jsonb_set(registered, '{totals}', (registered -> 'totals') || pg_catalog.jsonb_build_array(total));
    PERFORM integrity._record_total(target, registered);

    -- The source's triggers.
    base := integrity._total_trigger_base(target_name, target_column);
    source_args := (SELECT string_agg(quote_literal(a), ', ')
                      FROM unnest(ARRAY[target_name, target_column, coalesce(value_column, ''),
                                        coalesce(filter_sql, '')] || keys) a);
    apply_args := (SELECT string_agg(quote_literal(a), ', ') FROM unnest(ARRAY[target_name, target_column] || key) a);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_source(%s)', base, source, source_args);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT'
                   ' EXECUTE FUNCTION integrity.total_apply(%s)', base || '_apply', source, apply_args);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %s FOR EACH STATEMENT'
                   ' EXECUTE FUNCTION integrity._total_truncate(%L, %L)', base || '_truncate', source,
                   target_name, target_column);

    -- The target's triggers, for every maintained column.
    PERFORM integrity._place_total_guard(target);
END;
$$;
COMMENT ON FUNCTION integrity.maintain_total(regclass, name, regclass, text[], name, text) IS
    'Keeps target.target_column equal to the SUM of source.value_column (COUNT when NULL) over the source rows whose key_columns reference the target row and that satisfy filter; direct writes of the total are refused (23001).';

-- Records the totals of target (options as maintain_total writes them).
CREATE FUNCTION integrity._record_total(target regclass, options jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._record_guard(target, 'total',
                                   ARRAY(SELECT DISTINCT t ->> 'column'
                                           FROM pg_catalog.jsonb_array_elements(options -> 'totals') t ORDER BY 1),
                                   options)
$$;

-- (Re)creates the target's triggers from its registry row.
CREATE FUNCTION integrity._place_total_guard(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registered record;
BEGIN
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total BEFORE UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_guard(%s)', target,
                   (SELECT string_agg(quote_literal(a), ', ' ORDER BY n)
                      FROM unnest(integrity._total_guard_args(registered.columns, registered.options))
                           WITH ORDINALITY AS u(a, n)));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total_start BEFORE INSERT ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_start()', target);
END;
$$;

-- Corrects every total of target that differs from its sources: each such
-- row is locked first, then its total is computed on a snapshot taken after
-- the lock (so a writer that changed its sources meanwhile has either applied
-- its delta already or will apply it after us), then written.  Runs while
-- writers work; under REPEATABLE READ a row a writer changed raises 40001.
CREATE FUNCTION integrity.recompute_totals(target regclass)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registered record;
    col text;
    actual text;
    key_list text;
    key_match text;
    drifted jsonb;
    corrected bigint := 0;
BEGIN
    PERFORM integrity._require_argument(target, 'target', 'recompute_totals');
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'recompute_totals: table "%" has no maintained total', target
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register one with integrity.maintain_total().';
    END IF;
    PERFORM integrity._require_owner(target, 'correct its maintained totals');
    SELECT string_agg(format('t.%I', k), ', ' ORDER BY n),
           string_agg(format('t.%I = (pg_catalog.jsonb_populate_record(NULL::%s, $1)).%I', k, target, k), ' AND ' ORDER BY n)
      INTO key_list, key_match
      FROM pg_catalog.jsonb_array_elements_text(registered.options -> 'key') WITH ORDINALITY AS u(k, n);
    FOREACH col IN ARRAY registered.columns LOOP
        actual := integrity._column_total_sql(registered.options, col);
        CONTINUE WHEN actual IS NULL;
        FOR drifted IN EXECUTE format('SELECT pg_catalog.to_jsonb(t) FROM %s t WHERE t.%I IS DISTINCT FROM %s ORDER BY %s',
                                      target, col, actual, key_list)
        LOOP
            EXECUTE format('SELECT 1 FROM %s t WHERE %s FOR NO KEY UPDATE', target, key_match) USING drifted;
            corrected := corrected + integrity._execute_total_writes(target, format(
                'UPDATE %s t SET %I = %s WHERE %s AND t.%I IS DISTINCT FROM %s',
                target, col, actual, replace(key_match, '$1', quote_literal(drifted) || '::jsonb'), col, actual));
        END LOOP;
    END LOOP;
    RETURN corrected;
END;
$$;
COMMENT ON FUNCTION integrity.recompute_totals(regclass) IS
    'Sets every maintained total of target that differs from its source rows to their actual total, locking each row it corrects; the number of rows corrected.';

-- violations(): target rows whose total differs from their sources.  $1 is
-- the target.
CREATE FUNCTION integrity._total_drift_sql(target regclass, columns text[], options jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format(
               'SELECT ''total'', $1, %s, %L || COALESCE(t.%I::text, ''NULL'') || %L || (%s)::text'
               ' FROM %s t WHERE t.%I IS DISTINCT FROM %s',
               integrity._row_key_sql(target), format('maintained total "%s" is ', c.col), c.col,
               ', but its source rows add up to ', c.actual, target, c.col, c.actual), ' UNION ALL ' ORDER BY c.col)
      FROM (SELECT col, integrity._column_total_sql(options, col) AS actual FROM unnest(columns) AS col) c
     WHERE c.actual IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION integrity._guard_triggers(guard text)
RETURNS TABLE (trigger_name name, function_name name, tgtype smallint, mode "char", per_partition boolean,
               guard text, has_when boolean, recheck boolean)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.trigger_name::name, t.function_name::name, t.tgtype::smallint, t.mode::"char", t.per_partition,
           t.guard, t.has_when, t.recheck
      FROM (VALUES -- tgtype: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32
            ('append_only',   'integrity_append_only',             'append_only_guard',          27, 'A', false, false, false),
            ('append_only',   'integrity_append_only_truncate',    'append_only_truncate_guard', 34, 'A', true,  false, false),
            ('immutable',     'integrity_immutable',               'immutable_guard',            19, 'A', false, false, false),
            ('immutable',     'integrity_immutable_recheck',       'immutable_guard',            17, 'A', false, true,  true),
            ('write_once',    'integrity_write_once',              'write_once_guard',           19, 'A', false, false, false),
            ('write_once',    'integrity_write_once_recheck',      'write_once_guard',           17, 'A', false, true,  true),
            ('versioning',    'integrity_version_bump',            'version_bump',               19, 'O', false, false, false),
            ('versioning',    'integrity_version_check',           'version_check',              17, 'O', false, true,  true),
            ('stock',         'integrity_stock',                   'stock_guard',                23, 'A', false, false, false),
            ('stock',         'integrity_stock_recheck',           'stock_guard',                21, 'A', false, true,  true),
            ('credit',        'integrity_credit',                  'credit_guard',               23, 'A', false, false, false),
            ('credit',        'integrity_credit_recheck',          'credit_guard',               21, 'A', false, true,  true),
            ('ledger_credit', 'integrity_ledger_credit',           'ledger_credit_guard',        29, 'O', false, false, false),
            ('hash_chain',    'integrity_hash_chain',              'hash_chain_guard',            7, 'O', false, false, false),
            ('soft_delete',   'integrity_soft_delete',             'soft_delete_guard',          11, 'O', false, false, false),
            -- on the target of maintained totals (their sources' triggers: sql/totals.sql)
            ('total',         'integrity_total',                   'total_guard',                19, 'O', false, false, false),
            ('total',         'integrity_total_start',             'total_start',                 7, 'O', false, false, false),
            -- AFTER … FOR EACH STATEMENT with transition tables, one event each
            ('lifecycle',     'integrity_lifecycle_insert',        'lifecycle_guard',             4, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_update',        'lifecycle_guard',            16, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_delete',        'lifecycle_guard',             8, 'O', true,  false, false)
           ) AS t(guard, trigger_name, function_name, tgtype, mode, per_partition, has_when, recheck)
     WHERE $1 IS NULL OR t.guard = $1
$$;

CREATE OR REPLACE FUNCTION integrity._guard_columns(tbl regclass, guard text, columns text[], options jsonb)
RETURNS TABLE (rel regclass, col text, n bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tbl, c.col, c.n FROM unnest(columns) WITH ORDINALITY AS c(col, n)
    UNION ALL
    SELECT tbl, c.col, 100 + c.n
      FROM unnest(ARRAY[options ->> 'amount_column', options ->> 'entry_type_column']) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'ledger_credit'
    UNION ALL
    SELECT tbl, options -> 'retention' ->> 'time_column', 400
     WHERE guard = 'append_only' AND options ? 'retention'
    UNION ALL
    SELECT tbl, c.col, 300 + c.n
      FROM unnest(ARRAY[options ->> 'seq_column', options ->> 'hash_column']
                  || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'hashed_columns')))
           WITH ORDINALITY AS c(col, n)
     WHERE guard = 'hash_chain'
    UNION ALL
    SELECT tbl, c.col, 400 + c.n
      FROM pg_catalog.jsonb_array_elements_text(options -> 'exclude') WITH ORDINALITY AS c(col, n)
     WHERE guard = 'lifecycle'
    UNION ALL
    SELECT integrity._relation(options ->> 'accounts'), c.col, 200 + c.n
      FROM unnest(columns || ARRAY[options ->> 'limit_column', options ->> 'used_column']) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'ledger_credit' AND integrity._relation(options ->> 'accounts') IS NOT NULL
    UNION ALL
    SELECT tbl, k.col, 500 + k.n
      FROM pg_catalog.jsonb_array_elements_text(options -> 'key') WITH ORDINALITY AS k(col, n)
     WHERE guard = 'total'
    UNION ALL
    SELECT integrity._relation(t.total ->> 'source'), c.col, 600 + 100 * t.n + c.n
      FROM pg_catalog.jsonb_array_elements(options -> 'totals') WITH ORDINALITY AS t(total, n)
     CROSS JOIN LATERAL unnest(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(t.total -> 'key_columns'))
                               || ARRAY[t.total ->> 'value_column']
                               || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(t.total -> 'filter_columns')))
                        WITH ORDINALITY AS c(col, n)
     WHERE guard = 'total' AND integrity._relation(t.total ->> 'source') IS NOT NULL AND c.col IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION integrity.unprotect(tbl regclass, guard text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kinds text[] := ARRAY(SELECT DISTINCT g.guard FROM integrity._guard_triggers(NULL) g ORDER BY 1);
    kind text;
    registered boolean;
    installed boolean;
    totals jsonb;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', 'unprotect');
    IF guard IS NOT NULL THEN
        IF guard <> ALL (kinds) THEN
            RAISE EXCEPTION 'unknown guard "%"', guard
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Guards are ' || array_to_string(kinds, ', ') || '.';
        END IF;
        kinds := ARRAY[guard];
    END IF;
    PERFORM integrity._require_owner(tbl, 'remove its pg_integrity guards');
    PERFORM integrity._refuse_if_inherited(tbl, kinds, 'unprotect');

    WITH removed AS (
        DELETE FROM integrity.guard_registry r
         WHERE r.table_name = tbl AND r.guard = ANY (kinds)
        RETURNING r.guard, r.options)
    SELECT count(*) > 0, max(removed.options::text) FILTER (WHERE removed.guard = 'total')::jsonb
      INTO registered, totals FROM removed;
    -- The triggers of the totals on their sources.
    IF totals IS NOT NULL THEN
        PERFORM integrity._drop_total_triggers(totals);
    END IF;
    -- A chain registered again later starts from its rows, not from an old purge.
    IF 'hash_chain' = ANY (kinds) THEN
        DELETE FROM integrity.chain_anchors a WHERE a.table_name = tbl;
    END IF;
    -- Triggers go too when their registry row was already gone.
    SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t, unnest(kinds) k, integrity._guard_triggers(k) g
                    WHERE t.tgrelid = tbl AND t.tgname = g.trigger_name AND t.tgparentid = 0)
      INTO installed;
    FOREACH kind IN ARRAY kinds LOOP
        PERFORM integrity._drop_triggers(tbl, kind);
    END LOOP;
    IF NOT (registered OR installed) THEN
        RAISE NOTICE 'table "%" has no % guard, skipping', tbl, coalesce(guard, 'pg_integrity');
    END IF;
END;
$$;
COMMENT ON FUNCTION integrity.unprotect(regclass, text) IS
    'Removes one guard (or all guards) from the table: its registry row and its triggers.';

CREATE OR REPLACE FUNCTION integrity._registration_sql(tbl regclass, guard text, columns text[], options jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE guard
        WHEN 'append_only' THEN
            format('SELECT integrity.protect_append_only(%L, allow_truncate => %s);', tbl::text,
                   CASE WHEN (options ->> 'allow_truncate')::boolean THEN 'true' ELSE 'false' END)
            || CASE WHEN options ? 'retention'
                    THEN format(' SELECT integrity.set_retention(%L, %L, %L);', tbl::text,
                                options -> 'retention' ->> 'keep', options -> 'retention' ->> 'time_column')
                    ELSE '' END
        WHEN 'immutable' THEN
            format('SELECT integrity.protect_immutable(%L, %s);', tbl::text, integrity._array_sql(columns))
        WHEN 'write_once' THEN
            format('SELECT integrity.protect_write_once(%L, %s);', tbl::text, integrity._array_sql(columns))
        WHEN 'versioning' THEN
            format('SELECT integrity.enable_versioning(%L, version_column => %L, strict => %s);', tbl::text,
                   columns[1], CASE WHEN NOT (options ->> 'strict')::boolean THEN 'false' ELSE 'true' END)
        WHEN 'stock' THEN
            format('SELECT integrity.guard_stock(%L, stock_column => %L, reserved_column => %L);', tbl::text,
                   columns[1], columns[2])
        WHEN 'credit' THEN
            format('SELECT integrity.guard_credit(%L, limit_column => %L, used_column => %L);', tbl::text,
                   columns[1], columns[2])
        WHEN 'ledger_credit' THEN
            format('SELECT integrity.guard_ledger_credit(%L, %L, %s, amount_column => %L, entry_type_column => %L,'
                   ' debit_value => %L, credit_value => %L, limit_column => %L, used_column => %L);',
                   tbl::text, options ->> 'accounts', integrity._array_sql(columns),
                   options ->> 'amount_column', options ->> 'entry_type_column', options ->> 'debit_value',
                   options ->> 'credit_value', options ->> 'limit_column', options ->> 'used_column')
        WHEN 'hash_chain' THEN
            format('SELECT integrity.enable_hash_chain(%L, %s, seq_column => %L, hash_column => %L);', tbl::text,
                   integrity._array_sql(columns), options ->> 'seq_column', options ->> 'hash_column')
        WHEN 'soft_delete' THEN
            format('SELECT integrity.enable_soft_delete(%L, deleted_column => %L, flag_column => %L);', tbl::text,
                   options ->> 'deleted_column', options ->> 'flag_column')
        WHEN 'lifecycle' THEN
            format('SELECT integrity.track_lifecycle(%L, columns => %s, exclude => %s);', tbl::text,
                   CASE WHEN cardinality(columns) > 0 THEN integrity._array_sql(columns) ELSE 'NULL' END,
                   CASE WHEN options ? 'exclude'
                        THEN integrity._array_sql(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'exclude')))
                        ELSE 'NULL' END)
        WHEN 'total' THEN
            (SELECT string_agg(format('SELECT integrity.maintain_total(%L, %L, %L, %s, value_column => %L, filter => %L);',
                                      tbl::text, t ->> 'column', t ->> 'source',
                                      integrity._array_sql(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(t -> 'key_columns'))),
                                      t ->> 'value_column', t ->> 'filter'), ' ' ORDER BY n)
               FROM pg_catalog.jsonb_array_elements(options -> 'totals') WITH ORDINALITY AS u(t, n))
        END
$$;

CREATE OR REPLACE FUNCTION integrity._trigger_args(trigger_name name, columns text[], options jsonb)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(convert_to(arg, pg_catalog.getdatabaseencoding()) || '\x00'::bytea, ''::bytea
                               ORDER BY n), ''::bytea)
      FROM unnest(CASE
               WHEN trigger_name IN ('integrity_immutable', 'integrity_immutable_recheck',
                                     'integrity_write_once', 'integrity_write_once_recheck',
                                     'integrity_soft_delete') THEN columns
               WHEN trigger_name = 'integrity_version_bump' THEN
                   ARRAY[columns[1], CASE WHEN coalesce((options ->> 'strict')::boolean, true)
                                          THEN 'strict' ELSE 'lenient' END]
               WHEN trigger_name = 'integrity_version_check' THEN columns[1:1]
               WHEN trigger_name IN ('integrity_stock', 'integrity_stock_recheck',
                                     'integrity_credit', 'integrity_credit_recheck') THEN columns[1:2]
               WHEN trigger_name = 'integrity_ledger_credit' THEN
                   ARRAY[(SELECT format('%I.%I', n.nspname, c.relname)
                            FROM pg_catalog.pg_class c
                            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.oid = integrity._relation(options ->> 'accounts')),
                         options ->> 'amount_column', options ->> 'entry_type_column',
                         options ->> 'debit_value', options ->> 'credit_value',
                         options ->> 'limit_column', options ->> 'used_column'] || columns
               WHEN trigger_name = 'integrity_hash_chain' THEN
                   ARRAY[options ->> 'seq_column', options ->> 'hash_column'] || columns
               WHEN trigger_name = 'integrity_total' THEN integrity._total_guard_args(columns, options)
               ELSE '{}'::text[] END) WITH ORDINALITY AS a(arg, n)
$$;

CREATE OR REPLACE FUNCTION integrity.violations(tbl regclass DEFAULT NULL)
RETURNS TABLE (guard text, table_name regclass, row_key jsonb, detail text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    target record;
    query text;
BEGIN
    -- Row rules: one query (one scan) per table.  Without tbl, every guarded
    -- table; with tbl, its own guards and those of its partitioned ancestors.
    FOR target IN
        SELECT t.rel, t.owners
          FROM (SELECT tbl AS rel,
                       ARRAY(SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a) AS owners
                 WHERE tbl IS NOT NULL
                UNION ALL
                SELECT DISTINCT r.table_name, ARRAY[r.table_name]
                  FROM integrity.guard_registry r
                 WHERE tbl IS NULL) t
         WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.rel)
         ORDER BY t.rel::text COLLATE "C"
    LOOP
        query := integrity._violations_sql(target.rel, target.owners);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Ledger credit: drift between each account and its ledger.
    FOR target IN
        SELECT r.table_name AS ledger, integrity._relation(r.options ->> 'accounts') AS accounts, r.columns, r.options
          FROM integrity.guard_registry r
         WHERE r.guard = 'ledger_credit'
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
           AND (tbl IS NULL OR r.table_name = tbl OR integrity._relation(r.options ->> 'accounts') = tbl)
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        RETURN QUERY
            SELECT 'ledger_credit', target.ledger, NULL::jsonb,
                   format('the guard is broken, its ledger is not checked: %s %L is no value of column "%s" (%s);'
                          ' see integrity.health()', v.argument, v.value, target.options ->> 'entry_type_column',
                          v.problem)
              FROM (VALUES ('debit_value', target.options ->> 'debit_value'),
                           ('credit_value', target.options ->> 'credit_value')) AS v0(argument, value)
             CROSS JOIN LATERAL (SELECT v0.argument, v0.value,
                                        integrity._entry_value_problem(target.ledger, target.options ->> 'entry_type_column',
                                                                       v0.value) AS problem) v
             WHERE v.problem IS NOT NULL;
        IF FOUND THEN
            CONTINUE;
        END IF;
        query := integrity._ledger_drift_sql(target.ledger, target.accounts, target.columns, target.options);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.accounts;
        END IF;
    END LOOP;

    -- Holds: stock rows that reserve less than their pending holds hold.
    FOR target IN
        SELECT r.table_name AS rel, r.columns[2] AS reserved_column
          FROM integrity.guard_registry r
         WHERE r.guard = 'stock' AND (tbl IS NULL OR r.table_name = tbl)
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
           AND EXISTS (SELECT FROM integrity.hold_records h WHERE h.table_name = r.table_name AND h.status = 'pending')
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        query := integrity._hold_shortfall_sql(target.rel, target.reserved_column);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Maintained totals: target rows whose total differs from their sources.
    FOR target IN
        SELECT r.table_name AS rel, r.columns, r.options
          FROM integrity.guard_registry r
         WHERE r.guard = 'total' AND (tbl IS NULL OR r.table_name = tbl)
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        query := integrity._total_drift_sql(target.rel, target.columns, target.options);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Soft delete: live rows that reference a soft-deleted row.
    FOR target IN
        SELECT k.parent, k.parent_columns, s.deleted_column, k.child, k.child_columns
          FROM integrity._foreign_keys() k
         CROSS JOIN LATERAL integrity._soft_delete_of(k.parent) s
         WHERE s.registered = k.parent
           AND (tbl IS NULL OR k.child = tbl OR k.parent = tbl)
         ORDER BY k.child::text COLLATE "C", k.parent::text COLLATE "C", k.child_columns
    LOOP
        query := integrity._deleted_parent_sql(target.parent, target.parent_columns, target.deleted_column,
                                               target.child, target.child_columns);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query;
        END IF;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION integrity.violations(regclass) IS
    'Existing rows that break a registered guard (of tbl, or of every guarded table): NULL immutable columns, versions NULL or below 1, stock and credit rules, accounts whose used credit differs from their ledger and pending credit holds, stock rows reserving less than their pending holds, live rows referencing a soft-deleted row. One scan per table.';

CREATE OR REPLACE FUNCTION integrity.health()
RETURNS TABLE (severity text, table_name regclass, guard text, problem text, remedy text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
-- The catalog query is small but its estimates are not: without this, JIT
-- compilation would take seconds.
SET jit = off
AS $$
WITH registered AS (
    SELECT r.table_name AS tbl, r.guard, r.columns, r.options, c.relkind,
           CASE WHEN r.guard = 'ledger_credit' THEN integrity._relation(r.options ->> 'accounts') END AS accounts
      FROM integrity.guard_registry r
      LEFT JOIN pg_catalog.pg_class c ON c.oid = r.table_name
),
-- Every column a registered guard reads, with the relation it is read from.
guard_columns AS (
    SELECT r.tbl, r.guard, u.rel, u.col, u.n,
           EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = u.rel AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped) AS present
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_columns(r.tbl, r.guard, r.columns, r.options) u
     WHERE r.relkind IS NOT NULL AND u.col IS NOT NULL
),
-- Registry rows whose triggers can be checked: the table, the accounts table
-- and every column are there.
sound AS (
    SELECT r.*
      FROM registered r
     WHERE r.relkind IS NOT NULL
       AND (r.guard <> 'ledger_credit' OR r.accounts IS NOT NULL)
       AND NOT EXISTS (SELECT FROM guard_columns gc
                        WHERE gc.tbl = r.tbl AND gc.guard = r.guard AND NOT gc.present)
),
-- The triggers each registered guard needs, on the table and on every
-- partition (row triggers as clones, TRUNCATE triggers of their own).
expected AS (
    SELECT r.tbl, r.guard, r.columns, r.options, m.rel,
           g.trigger_name, g.function_name, g.tgtype, g.mode, g.per_partition, g.has_when
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
     WHERE r.relkind IS NOT NULL
       AND NOT (g.recheck AND NOT integrity._needs_recheck(r.tbl, r.guard))
       AND NOT (g.trigger_name = 'integrity_append_only_truncate'
                AND coalesce((r.options ->> 'allow_truncate')::boolean, false))
),
found AS (
    SELECT e.*, t.oid AS tgoid, t.tgenabled, t.tgtype AS actual_tgtype, t.tgargs,
           t.tgqual IS NOT NULL AS actual_has_when,
           t.tgfoid::regprocedure AS actual_function,
           coalesce(p.proname = e.function_name AND n.nspname = 'integrity', false) AS own_function,
           format('trigger %s of the %s guard', e.trigger_name, e.guard)
           || CASE WHEN e.rel = e.tbl THEN '' ELSE format(' on partition %s of %s', e.rel, e.tbl) END AS what
      FROM expected e
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = e.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE (e.tbl, e.guard) IN (SELECT s.tbl, s.guard FROM sound s)
),
-- One ALTER TABLE per relation that puts every guard trigger on it that is
-- disabled or in the wrong mode back in its mode.
relation_fix AS (
    SELECT f.rel,
           format('ALTER TABLE %s %s;', f.rel,
                  string_agg(format('ENABLE %sTRIGGER %I', CASE f.mode WHEN 'A' THEN 'ALWAYS ' ELSE '' END,
                                    f.trigger_name), ', ' ORDER BY f.trigger_name)) AS fix
      FROM found f
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
     GROUP BY f.rel
),
-- The same for a whole partition tree, followed by a space ('' when none).
tree_fix AS (
    SELECT r.tbl, coalesce(string_agg(rf.fix || ' ', '' ORDER BY rf.rel::text COLLATE "C"), '') AS fix
      FROM (SELECT DISTINCT rr.tbl FROM registered rr WHERE rr.relkind IS NOT NULL) r
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
      LEFT JOIN relation_fix rf ON rf.rel = m.rel
     GROUP BY r.tbl
),
-- The registration of each guard, after the mode fixes of its table.
registration AS (
    SELECT r.tbl, r.guard, tf.fix,
           tf.fix || integrity._registration_sql(r.tbl, r.guard, r.columns, r.options) AS sql
      FROM registered r
      JOIN tree_fix tf ON tf.tbl = r.tbl
),
-- Triggers that carry a guard trigger's name but that no registered guard needs.
stray AS (
    SELECT t.tgrelid::regclass AS rel, t.tgname, g.guard,
           (SELECT rg.sql
              FROM registration rg
             WHERE rg.guard = g.guard
               AND (rg.tbl = t.tgrelid
                    OR rg.tbl IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(t.tgrelid) a))
             LIMIT 1) AS registration
      FROM pg_catalog.pg_trigger t
      JOIN (SELECT DISTINCT k.trigger_name, k.guard FROM integrity._guard_triggers(NULL) k) g
        ON g.trigger_name = t.tgname
     WHERE t.tgparentid = 0
       AND NOT EXISTS (SELECT FROM expected e WHERE e.rel = t.tgrelid AND e.trigger_name = t.tgname)
),
-- step orders the problems of one table: registry rows that must go (1),
-- guards re-registered with the columns they have left (2), the rest (3).
problems (severity, table_name, guard, step, problem, remedy) AS (
    -- The registry outlived the table.
    SELECT 'error', r.tbl, r.guard, 1,
           format('the %s guard is registered for a table that no longer exists (OID %s)', r.guard, r.tbl::oid),
           format('DELETE FROM integrity.guard_registry WHERE table_name::oid = %s AND guard = %L;', r.tbl::oid, r.guard)
      FROM registered r
     WHERE r.relkind IS NULL
    UNION ALL
    -- A debit or credit value that is no value of the entry type column any
    -- more (an enum label renamed): every entry is refused as of no known type.
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s %L of the ledger_credit guard is no value of column "%s": %s; remove the guard and register'
                  ' it again with values of the column', v.argument, v.value, r.options ->> 'entry_type_column',
                  p.problem),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     CROSS JOIN LATERAL (VALUES ('debit_value', r.options ->> 'debit_value'),
                                ('credit_value', r.options ->> 'credit_value')) AS v(argument, value)
     CROSS JOIN LATERAL (SELECT integrity._entry_value_problem(r.tbl, r.options ->> 'entry_type_column', v.value)
                          WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit') AS p(problem)
     WHERE p.problem IS NOT NULL
    UNION ALL
    -- Inheritance children, which the guards do not cover (the event trigger
    -- refuses new ones; these are older, or made while it was disabled).
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s inherits from %s, which has the %s guard: guards cover partitions, not inheritance'
                  ' children, yet UPDATE, DELETE and TRUNCATE of %s reach its rows', child, r.tbl, r.guard, r.tbl),
           format('ALTER TABLE %s NO INHERIT %s;', child, r.tbl)
      FROM registered r
     CROSS JOIN LATERAL integrity._inheritance_children(r.tbl) AS child
     WHERE r.relkind IS NOT NULL
    UNION ALL
    SELECT 'error', r.tbl, r.guard, 1,
           format('accounts table %s of the ledger_credit guard no longer exists (dropped or renamed):'
                  ' remove the guard, then register it again with the accounts table as it is now',
                  r.options ->> 'accounts'),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit' AND r.accounts IS NULL
    UNION ALL
    -- A registered column is gone (renamed or dropped while the event
    -- trigger was not watching).  A column guard is registered again with
    -- the columns it has left; other guards are removed.
    SELECT 'error', gc.rel, gc.guard, CASE WHEN left_over.columns IS NULL THEN 1 ELSE 2 END,
           format('column "%s" of %s, registered for the %s guard%s, no longer exists (renamed or dropped): %s',
                  gc.col, gc.rel, gc.guard, CASE WHEN gc.rel <> gc.tbl THEN format(' of %s', gc.tbl) ELSE '' END,
                  CASE WHEN left_over.columns IS NOT NULL
                       THEN 'the guard is registered again with the columns it has left; add the new name of a renamed column'
                       ELSE 'remove the guard, then register it again with the columns as they are now' END),
           CASE WHEN left_over.columns IS NOT NULL
                THEN format('BEGIN; %s %s%s COMMIT;', integrity._unprotect_sql(gc.tbl, gc.guard), tf.fix,
                            integrity._registration_sql(gc.tbl, gc.guard, left_over.columns, '{}'))
                ELSE integrity._unprotect_sql(gc.tbl, gc.guard) END
      FROM guard_columns gc
      JOIN tree_fix tf ON tf.tbl = gc.tbl
     CROSS JOIN LATERAL (SELECT array_agg(o.col ORDER BY o.n) AS columns
                           FROM guard_columns o
                          WHERE o.tbl = gc.tbl AND o.guard = gc.guard AND o.present
                            AND gc.guard IN ('immutable', 'write_once')) left_over
     WHERE NOT gc.present
    UNION ALL
    -- Guard triggers: missing, replaced, disabled, in the wrong mode.
    SELECT 'error', f.rel, f.guard, 3,
           CASE WHEN f.rel = f.tbl THEN format('trigger %s of the %s guard is missing', f.trigger_name, f.guard)
                ELSE format('partition %s of %s is not covered: trigger %s of the %s guard is missing',
                            f.rel, f.tbl, f.trigger_name, f.guard) END,
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NULL
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it runs %s %s, not integrity.%s() %s', f.what,
                  f.actual_function, integrity._tgtype_text(f.actual_tgtype), f.function_name,
                  integrity._tgtype_text(f.tgtype)),
           -- CREATE OR REPLACE TRIGGER repairs a row trigger; TRUNCATE triggers
           -- are only created where missing, so the guard is put back whole.
           CASE WHEN f.per_partition
                THEN format('BEGIN; %s%s %s COMMIT;', rg.fix, integrity._unprotect_sql(f.tbl, f.guard),
                            integrity._registration_sql(f.tbl, f.guard, f.columns, f.options))
                ELSE rg.sql END
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND (NOT f.own_function OR f.actual_tgtype <> f.tgtype)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: its arguments differ from the registered ones', f.what),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs <> integrity._trigger_args(f.trigger_name, f.columns, f.options)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it %s', f.what,
                  CASE WHEN f.actual_has_when THEN 'has a WHEN clause, which can keep it from firing'
                       ELSE 'lacks its WHEN clause' END),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs = integrity._trigger_args(f.trigger_name, f.columns, f.options)
       AND f.actual_has_when <> f.has_when
    UNION ALL
    SELECT CASE WHEN f.mode = 'O' AND f.tgenabled = 'A' THEN 'warning' ELSE 'error' END,
           f.rel, f.guard, 3,
           format('%s is %s', f.what,
                  CASE WHEN f.tgenabled = 'D' THEN 'disabled: the guard is not enforced'
                       WHEN f.mode = 'A' AND f.tgenabled = 'O'
                            THEN 'ENABLE (origin only), not ENABLE ALWAYS: sessions with session_replication_role = replica skip it'
                       WHEN f.tgenabled = 'R'
                            THEN format('ENABLE REPLICA, not %s: ordinary sessions skip it',
                                        CASE f.mode WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END)
                       ELSE 'ENABLE ALWAYS, not ENABLE (origin only): it also fires for rows that logical replication applies, which their origin already processed'
                  END),
           rf.fix
      FROM found f
      JOIN relation_fix rf ON rf.rel = f.rel
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
    UNION ALL
    -- Guard triggers that no registered guard needs.
    SELECT CASE WHEN s.registration IS NULL THEN 'warning' ELSE 'info' END, s.rel, s.guard, 3,
           CASE WHEN s.registration IS NULL
                THEN format('trigger %s of the %s guard is on a table the registry has no %s guard for'
                            ' (registry row deleted, or a partition detached from a guarded table): unprotect'
                            ' removes it; registering the guard again keeps it', s.tgname, s.guard, s.guard)
                ELSE format('trigger %s is not part of the %s guard as registered', s.tgname, s.guard) END,
           coalesce(s.registration, integrity._unprotect_sql(s.rel, s.guard))
      FROM stray s
    UNION ALL
    -- A guard function under a name the extension does not manage (a renamed guard trigger).
    SELECT 'warning', t.tgrelid::regclass, min(g.guard), 3,
           format('trigger %s runs guard function integrity.%s() under a name pg_integrity does not manage:'
                  ' neither the registry nor the event triggers watch it', t.tgname, p.proname),
           format('DROP TRIGGER %I ON %s;', t.tgname, t.tgrelid::regclass)
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
      JOIN integrity._guard_triggers(NULL) g ON g.function_name = p.proname
     WHERE t.tgparentid = 0
       AND t.tgname NOT IN (SELECT k.trigger_name FROM integrity._guard_triggers(NULL) k)
     GROUP BY t.tgrelid, t.tgname, p.proname
    UNION ALL
    -- Guarded tables without a primary key.
    SELECT 'warning', r.tbl, NULL, 3,
           format('guarded table %s has no primary key: guard errors and violations() cannot name its rows'
                  ' by a stable key', r.tbl),
           tf.fix
           || CASE WHEN r.relkind = 'r' AND candidate.index_name IS NOT NULL
                   THEN format('ALTER TABLE %s ADD PRIMARY KEY USING INDEX %I;', r.tbl, candidate.index_name)
                   ELSE format('ALTER TABLE %s ADD PRIMARY KEY (%s);', r.tbl,
                               coalesce(candidate.key_columns, '<columns that identify a row>')) END
      FROM (SELECT DISTINCT rr.tbl, rr.relkind FROM registered rr WHERE rr.relkind IS NOT NULL) r
      JOIN tree_fix tf ON tf.tbl = r.tbl
      LEFT JOIN LATERAL (
            -- a valid, unique, non-partial index on NOT NULL columns
            SELECT ic.relname AS index_name,
                   (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS key_columns
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = r.tbl AND i.indisunique AND i.indisvalid AND i.indimmediate
               AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = i.indnatts
               AND NOT EXISTS (SELECT FROM unnest(i.indkey::int2[]) AS k(attnum)
                                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                                WHERE NOT a.attnotnull)
             ORDER BY i.indnatts, ic.relname
             LIMIT 1) candidate ON true
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint con WHERE con.conrelid = r.tbl AND con.contype = 'p')
    UNION ALL
    -- The extension's event triggers: missing, disabled, or not ENABLE ALWAYS.
    SELECT CASE WHEN e.evtenabled = 'O' THEN 'warning' ELSE 'error' END, NULL, NULL, 1,
           format('event trigger %s %s%s', v.evtname,
                  CASE WHEN e.oid IS NULL THEN 'is missing: '
                       WHEN e.evtenabled = 'D' THEN 'is disabled: '
                       WHEN e.evtenabled = 'O' THEN 'is ENABLE (origin only), not ENABLE ALWAYS: in sessions with session_replication_role = replica, '
                       ELSE 'is ENABLE REPLICA, not ENABLE ALWAYS: in ordinary sessions, ' END,
                  v.consequence),
           CASE WHEN e.oid IS NULL
                THEN integrity._event_trigger_sql(v.evtname)
                     || format(' ALTER EXTENSION pg_integrity ADD EVENT TRIGGER %I;', v.evtname)
                ELSE format('ALTER EVENT TRIGGER %I ENABLE ALWAYS;', v.evtname) END
      FROM integrity._event_triggers() v
      LEFT JOIN pg_catalog.pg_event_trigger e ON e.evtname = v.evtname
     WHERE e.oid IS NULL OR e.evtenabled <> 'A'
    UNION ALL
    -- The triggers that keep the lifecycle events append-only: missing,
    -- replaced, disabled or skipped under session_replication_role = replica.
    SELECT 'error', e.rel, 'lifecycle', 1,
           format('trigger %s of %s is %s', l.trigger_name, e.rel,
                  CASE WHEN t.oid IS NULL THEN 'missing: events can be changed or removed'
                       WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                            OR t.tgtype <> l.tgtype
                            THEN format('replaced: it runs %s %s', t.tgfoid::regprocedure, integrity._tgtype_text(t.tgtype))
                       WHEN t.tgenabled = 'D' THEN 'disabled: events can be changed or removed'
                       ELSE 'not ENABLE ALWAYS: sessions with session_replication_role = replica can change or remove events' END),
           CASE WHEN t.oid IS NULL THEN l.create_sql
                WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                     OR t.tgtype <> l.tgtype
                     THEN format('DROP TRIGGER %I ON %s; %s', l.trigger_name, e.rel, l.create_sql)
                ELSE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I;', e.rel, l.trigger_name) END
      FROM (SELECT integrity._relation('integrity.lifecycle_events') AS rel) e
     CROSS JOIN integrity._lifecycle_events_triggers() l
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = l.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE e.rel IS NOT NULL
       AND (t.oid IS NULL OR t.tgenabled <> 'A' OR t.tgtype <> l.tgtype
            OR NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false))
    UNION ALL
    -- The compiled guard functions: replaced by other code, or gone.
    SELECT 'error', NULL, min(g.guard), 1,
           CASE WHEN min(p.oid::int8) IS NULL
                THEN format('guard function integrity.%s() is missing', g.function_name)
                ELSE format('guard function integrity.%s() is not the extension''s compiled code any more'
                            ' (it is LANGUAGE %s)', g.function_name, min(l.lanname)) END,
           format('CREATE OR REPLACE FUNCTION integrity.%I() RETURNS trigger LANGUAGE c AS %L, %L;%s',
                  g.function_name, 'pg_integrity', 'integrity_' || g.function_name,
                  CASE WHEN min(p.oid::int8) IS NULL
                       THEN format(' ALTER EXTENSION pg_integrity ADD FUNCTION integrity.%I();', g.function_name)
                       ELSE '' END)
      FROM integrity._guard_triggers(NULL) g
      LEFT JOIN (pg_catalog.pg_proc p
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
                 JOIN pg_catalog.pg_language l ON l.oid = p.prolang)
             ON p.proname = g.function_name AND p.pronargs = 0
     GROUP BY g.function_name
    HAVING min(p.oid::int8) IS NULL
        OR bool_or(l.lanname <> 'c' OR p.probin NOT IN ('pg_integrity', '$libdir/pg_integrity')
                   OR p.prosrc <> 'integrity_' || g.function_name)
    UNION ALL
    -- A maintained total's triggers on its sources: missing or disabled, the
    -- total is no longer maintained (registering it again puts them back); a
    -- source that is gone leaves the total behind.
    SELECT 'error', r.tbl, r.guard, 3,
           CASE WHEN x.source IS NULL
                THEN format('source table %s of the total of column "%s" no longer exists: remove the totals,'
                            ' then register them again with the tables as they are now', x.source_name, x.col)
                ELSE format('trigger %s of the total of column "%s" on %s is %s: the total is not maintained',
                            x.tgname, x.col, x.source, CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'disabled' END) END,
           CASE WHEN x.source IS NULL THEN integrity._unprotect_sql(r.tbl, r.guard)
                ELSE integrity._registration_sql(r.tbl, r.guard, r.columns, r.options) END
      FROM registered r
     CROSS JOIN LATERAL (SELECT tt ->> 'column' AS col, tt ->> 'source' AS source_name,
                                integrity._relation(tt ->> 'source') AS source,
                                (integrity._total_trigger_base(r.options ->> 'name', tt ->> 'column') || f.suffix)::name AS tgname
                           FROM pg_catalog.jsonb_array_elements(r.options -> 'totals') AS tt
                          CROSS JOIN (VALUES (''), ('_apply'), ('_truncate')) AS f(suffix)) x
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = x.source AND t.tgname = x.tgname
     WHERE r.guard = 'total' AND r.relkind IS NOT NULL
       AND (x.source IS NULL OR t.oid IS NULL OR t.tgenabled = 'D')
       AND (x.source IS NOT NULL OR x.tgname LIKE '%\_apply')
    UNION ALL
    -- Refused writes are counted (integrity.refusals) only with the preload.
    SELECT 'info', NULL, NULL, 1,
           'refused writes are not counted (integrity.refusals, LISTEN integrity_refusals): '
           'pg_integrity is not in shared_preload_libraries',
           pg_catalog.format('ALTER SYSTEM SET shared_preload_libraries = %L; -- then restart the server',
                             pg_catalog.concat_ws(', ', NULLIF(pg_catalog.current_setting('shared_preload_libraries'), ''),
                                                  'pg_integrity'))
     WHERE integrity._refusals_dropped() IS NULL
    UNION ALL
    SELECT 'warning', NULL, NULL, 1,
           pg_catalog.format('%s refused writes were not counted: all %s refusal counters are in use', d,
                             pg_catalog.current_setting('pg_integrity.max_refusal_entries')),
           'SELECT integrity.reset_refusals(); -- or raise pg_integrity.max_refusal_entries, then restart the server'
      FROM integrity._refusals_dropped() AS d
     WHERE d > 0
)
SELECT p.severity, p.table_name, p.guard, p.problem, p.remedy
  FROM problems p
 ORDER BY CASE p.severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          p.table_name::text COLLATE "C" NULLS FIRST, p.step, p.guard COLLATE "C" NULLS FIRST, p.problem COLLATE "C"
$$;
COMMENT ON FUNCTION integrity.health() IS
    'The registry against reality: missing, replaced, disabled or replica-skipped guard triggers, uncovered partitions, stray guard triggers, dropped tables and columns, guarded tables without a primary key, the extension''s event triggers and guard functions, the triggers that keep integrity.lifecycle_events append-only. Each row gives the SQL that repairs it; a healthy database returns no rows.';

CREATE OR REPLACE FUNCTION integrity._guard_needing(tbl regclass, trigger_name name)
RETURNS TABLE (guarded_table regclass, guard text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name, r.guard
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
     WHERE (r.table_name = tbl OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(tbl)))
       AND g.trigger_name = $2
       AND NOT (g.trigger_name = 'integrity_append_only_truncate'
                AND coalesce((r.options ->> 'allow_truncate')::boolean, false))
       AND NOT (g.recheck AND NOT integrity._needs_recheck(r.table_name, r.guard))
    UNION ALL
    -- the triggers of a maintained total on its source
    SELECT r.table_name, r.guard
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(r.options -> 'totals') AS t
     WHERE r.guard = 'total' AND integrity._relation(t ->> 'source') = tbl
       AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
       AND $2 LIKE integrity._total_trigger_base(r.options ->> 'name', t ->> 'column') || '%'
     LIMIT 1
$$;

CREATE OR REPLACE FUNCTION integrity._sync_rechecks(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stale record;
BEGIN
    FOR stale IN
        SELECT r.table_name, r.guard, r.columns, r.options, g.trigger_name, needed
          FROM integrity.guard_registry r
          -- A guard with two rechecks (totals: UPDATE and INSERT) creates them
          -- in one registration, the first by name first: that one stands for
          -- both, or the event fired between the two CREATEs would register
          -- the guard again, and again.
          JOIN (SELECT DISTINCT ON (t.guard) t.guard, t.trigger_name
                  FROM integrity._guard_triggers(NULL) t
                 WHERE t.recheck
                 ORDER BY t.guard, t.trigger_name) g ON g.guard = r.guard
         CROSS JOIN LATERAL integrity._needs_recheck(r.table_name, r.guard) needed
         WHERE (r.table_name = tbl OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(tbl)))
           AND needed <> EXISTS (SELECT FROM pg_catalog.pg_trigger t
                                  WHERE t.tgrelid = r.table_name AND t.tgname = g.trigger_name)
         ORDER BY r.table_name, r.guard
    LOOP
        IF stale.needed THEN
            PERFORM integrity._require_owner(stale.table_name,
                format('add a BEFORE UPDATE trigger that fires after the trigger of its %s guard (the guard then'
                       ' checks the final row again, with trigger %s)', stale.guard, stale.trigger_name));
        END IF;
        -- pg_restore brings the recheck back itself, and with -j it may
        -- create the trigger that needs it first: placing it here would make
        -- its own CREATE TRIGGER fail.  health() reports a dump without it.
        CONTINUE WHEN current_setting('application_name') = 'pg_restore';
        EXECUTE integrity._registration_sql(stale.table_name, stale.guard, stale.columns, stale.options);
    END LOOP;
END;
$$;

CREATE FUNCTION integrity._refuse_totals_ddl()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    broken record;
BEGIN
    SELECT r.table_name, r.options ->> 'name' AS registered_name, t ->> 'source' AS source,
           r.table_name::text <> r.options ->> 'name' AS target_moved
      INTO broken
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(r.options -> 'totals') AS t
     WHERE r.guard = 'total'
       AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
       AND (r.table_name::text <> r.options ->> 'name' OR integrity._relation(t ->> 'source') IS NULL)
     ORDER BY r.table_name
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table "%" %', CASE WHEN broken.target_moved THEN broken.registered_name ELSE broken.source END,
                        CASE WHEN broken.target_moved THEN 'holds maintained totals'
                             ELSE format('is the source of maintained totals of "%s"', broken.table_name) END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The totals find their tables by name: renamed, moved or dropped, they would stop being maintained.',
                  HINT = format('Call integrity.unprotect(%L, ''total'') first, then register the totals again.',
                                broken.registered_name);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION integrity._on_ddl_command_end()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    command record;
    guarded record;
    trg record;
BEGIN
    PERFORM integrity._check_trigger_ddl(c.objid)
       FROM pg_catalog.pg_event_trigger_ddl_commands() c
      WHERE c.classid = 'pg_catalog.pg_trigger'::regclass;
    PERFORM integrity._sync_rechecks(t.tgrelid)
       FROM pg_catalog.pg_event_trigger_ddl_commands() c
       JOIN pg_catalog.pg_trigger t ON t.oid = c.objid
      WHERE c.classid = 'pg_catalog.pg_trigger'::regclass;

    -- Tables renamed or moved, also with their schema.
    PERFORM integrity._refuse_accounts_ddl(ARRAY(
        SELECT t.oid::regclass
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_class t
            ON CASE WHEN c.classid = 'pg_catalog.pg_namespace'::regclass THEN t.relnamespace ELSE t.oid END = c.objid
         WHERE c.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_namespace'::regclass)
           AND t.relkind IN ('r', 'p')
           AND integrity._renames(c.command)), NULL);
    PERFORM integrity._refuse_totals_ddl()
      FROM pg_catalog.pg_event_trigger_ddl_commands() c
     WHERE integrity._renames(c.command)
     LIMIT 1;

    -- Tables created, altered or attached by the command, including those
    -- created inside CREATE SCHEMA, and the typed tables an ALTER TYPE …
    -- CASCADE changed along with their type.
    FOR command IN
        SELECT DISTINCT c.objid::regclass AS rel,
               c.command_tag IN ('CREATE TABLE', 'CREATE FOREIGN TABLE')
               OR integrity._attaches_partition(c.command) AS new_partitions
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.classid = 'pg_catalog.pg_class'::regclass
           AND c.object_type IN ('table', 'table column', 'foreign table', 'foreign table column')
           AND EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = c.objid)
        UNION
        -- (a composite type's attributes are reported as its pg_class row's)
        SELECT t.oid::regclass, false
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_class t
            ON t.reloftype = CASE WHEN c.classid = 'pg_catalog.pg_type'::regclass THEN c.objid
                                  ELSE (SELECT ct.reltype FROM pg_catalog.pg_class ct
                                         WHERE ct.oid = c.objid AND ct.relkind = 'c') END
         WHERE c.classid IN ('pg_catalog.pg_type'::regclass, 'pg_catalog.pg_class'::regclass)
    LOOP
        SELECT r.table_name, r.guard INTO guarded
          FROM pg_catalog.pg_inherits i
          JOIN integrity.guard_registry r ON r.table_name = i.inhparent
         WHERE i.inhrelid = command.rel
           AND command.rel IN (SELECT integrity._inheritance_children(r.table_name))
         ORDER BY r.guard
         LIMIT 1;
        IF FOUND THEN
            PERFORM integrity._refuse_inheritance(guarded.table_name, command.rel, guarded.guard);
        END IF;

        IF command.new_partitions THEN
            PERFORM integrity._sync_rechecks(command.rel);
            FOR guarded IN
                SELECT r.table_name, r.guard, r.options
                  FROM integrity.guard_registry r
                 WHERE r.table_name = command.rel
                    OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(command.rel))
            LOOP
                IF guarded.guard = 'append_only'
                   AND NOT coalesce((guarded.options ->> 'allow_truncate')::boolean, false) THEN
                    PERFORM integrity._cover_truncate(guarded.table_name);
                END IF;
                IF guarded.guard = 'lifecycle' THEN
                    PERFORM integrity._cover_lifecycle(guarded.table_name);
                END IF;
                PERFORM integrity._set_trigger_modes(guarded.table_name);
            END LOOP;
        END IF;

        FOR guarded IN
            SELECT r.table_name, r.guard, gc.col
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._guard_columns(r.table_name, r.guard, r.columns, r.options) gc
             WHERE gc.rel = command.rel
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid = command.rel AND a.attname = gc.col
                                  AND a.attnum > 0 AND NOT a.attisdropped)
        LOOP
            RAISE EXCEPTION 'cannot rename or drop column "%" of table "%"', guarded.col, command.rel
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('The column is protected by the %s guard of %s.', guarded.guard, guarded.table_name),
                      HINT = format('Call integrity.unprotect(%L, %L) first, then register the guard again.',
                                    guarded.table_name::text, guarded.guard);
        END LOOP;

        FOR trg IN
            SELECT t.tgname, t.tgenabled, needed.guarded_table, needed.guard
              FROM pg_catalog.pg_trigger t
              LEFT JOIN (SELECT DISTINCT k.trigger_name, k.mode FROM integrity._guard_triggers(NULL) k) g
                ON g.trigger_name = t.tgname
             CROSS JOIN LATERAL integrity._guard_needing(command.rel, t.tgname) needed
             WHERE t.tgrelid = command.rel
               -- (a maintained total's triggers on its sources fire on origin rows)
               AND t.tgenabled <> coalesce(g.mode, CASE WHEN needed.guard = 'total' THEN 'O'::"char" END)
        LOOP
            PERFORM integrity._refuse_guard_ddl(
                CASE trg.tgenabled WHEN 'D' THEN 'disable' ELSE 'change the firing mode of' END,
                trg.tgname, command.rel, trg.guarded_table, trg.guard);
        END LOOP;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION integrity._on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped record;
BEGIN
    FOR dropped IN
        SELECT o.rel, o.tgname, needed.guarded_table, needed.guard
          FROM (SELECT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel,
                       address_names[3]::name AS tgname
                  FROM pg_catalog.pg_event_trigger_dropped_objects()
                 WHERE object_type = 'trigger' AND address_names[3] LIKE 'integrity\_%') o
         CROSS JOIN LATERAL integrity._guard_needing(o.rel, o.tgname) needed
         WHERE o.rel IS NOT NULL
    LOOP
        PERFORM integrity._refuse_guard_ddl('drop', dropped.tgname, dropped.rel, dropped.guarded_table, dropped.guard);
    END LOOP;

    -- A trigger that fired after a guard's is gone: its recheck may go too.
    PERFORM integrity._sync_rechecks(o.rel)
       FROM (SELECT DISTINCT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel
               FROM pg_catalog.pg_event_trigger_dropped_objects()
              WHERE object_type = 'trigger') o
      WHERE o.rel IS NOT NULL;

    PERFORM integrity._refuse_history_drop();
    PERFORM integrity._refuse_accounts_ddl(NULL, ARRAY(
        SELECT o.object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() o WHERE o.object_type = 'table'));

    -- The totals of a dropped target go with it, their sources' triggers too
    -- (registry row first: dropping those triggers runs this again).
    FOR dropped IN
        DELETE FROM integrity.guard_registry r
         WHERE r.guard = 'total' AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
        RETURNING r.options
    LOOP
        PERFORM integrity._drop_total_triggers(dropped.options);
    END LOOP;
    PERFORM integrity._refuse_totals_ddl();

    -- The holds on a dropped table go with it.
    DELETE FROM integrity.hold_records h
     WHERE h.status IN ('pending', 'committed', 'released', 'expired')
       AND h.table_name::pg_catalog.oid IN (SELECT o.objid FROM pg_catalog.pg_event_trigger_dropped_objects() o
                                             WHERE o.object_type = 'table');
    DELETE FROM integrity.guard_registry r
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name);
    DELETE FROM integrity.chain_anchors a
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = a.table_name);
END;
$$;

-- ==== issue 17: maintained totals — end ====

-- ==== issue 16: index predicates ====
-- lint() reads the AND-ed terms of an index predicate from its node tree
-- (compiled) instead of cutting pg_get_expr's text by hand.

-- The top-level AND-ed terms of a stored expression over relation's columns
-- (pg_index.indpred, say), read from its node tree (src/predicates.rs): nested
-- ANDs flattened, each term deparsed as pg_get_expr does (on one line) and
-- without the parentheses that enclose it: '(a IS NULL) AND ((b = 1) OR
-- (c = 2))' gives {'a IS NULL', '(b = 1) OR (c = 2)'}, whatever the literals hold.
CREATE FUNCTION integrity._conjuncts(expr pg_node_tree, relation oid) RETURNS text[]
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'integrity_conjuncts';

CREATE OR REPLACE FUNCTION integrity.lint(schemas name[] DEFAULT '{public}')
RETURNS TABLE (severity text, rule text, object_name text, problem text, remedy text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF schemas IS NULL THEN
        RAISE EXCEPTION 'lint: argument "schemas" must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the schemas to check, e.g. ARRAY[''public''].';
    END IF;
    RETURN QUERY
    WITH tbl AS (
        SELECT c.oid, c.relkind, format('%I.%I', n.nspname, c.relname) AS qname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY (schemas) AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
    ),
    soft AS (
        SELECT t.*, integrity._soft_delete_column(t.oid) AS deleted_column
          FROM tbl t
    ),
    problems AS (
        -- 1. unique indexes (and unique constraints) of soft-delete tables that
        --    are not partial on "deleted IS NULL": a deleted row keeps its value
        --    and blocks a new row with the same one.
        SELECT 'error' AS severity, 'soft_delete_unique' AS rule,
               format('%s.%I', s.qname, ic.relname) AS object_name,
               format('unique %s %I on soft-delete table %s is not partial on %I IS NULL: a deleted row '
                      'still blocks a new row with the same %s',
                      CASE WHEN con.oid IS NULL THEN 'index' ELSE 'constraint' END,
                      coalesce(con.conname, ic.relname), s.qname, s.deleted_column,
                      CASE WHEN i.indnkeyatts = 1 THEN 'value' ELSE 'values' END) AS problem,
               CASE WHEN con.oid IS NULL
                    THEN format('DROP INDEX %I.%I; ', n.nspname, ic.relname)
                    ELSE format('ALTER TABLE %s DROP CONSTRAINT %I; ', s.qname, con.conname) END ||
               -- a partitioned index is deparsed "ON ONLY": the new one must cover the partitions
               pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid),
                                         '^(CREATE UNIQUE INDEX (\S+|"(""|[^"])*")) ON ONLY ', '\1 ON ') ||
               CASE WHEN i.indpred IS NULL THEN ' WHERE ' ELSE ' AND ' END ||
               format('(%I IS NULL);', s.deleted_column) AS remedy
          FROM soft s
          JOIN pg_catalog.pg_index i ON i.indrelid = s.oid
          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
          LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = s.oid
                                                 AND con.contype IN ('u', 'x')
         WHERE s.deleted_column IS NOT NULL
           AND i.indisunique AND NOT i.indisprimary
           -- the deleted column itself in the key makes the index unique per deletion
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = s.oid AND a.attname = s.deleted_column
                              AND a.attnum = ANY (i.indkey::int2[]))
           -- indexes of partitions that belong to an index of the parent are reported once, there
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits ih WHERE ih.inhrelid = i.indexrelid)
           -- partial on "deleted IS NULL": that test is one of the predicate's AND-ed terms
           AND NOT coalesce(format('%I IS NULL', s.deleted_column)
                            = ANY (integrity._conjuncts(i.indpred, i.indrelid)), false)
        UNION ALL
        -- 2. foreign keys whose columns lead no index of the referencing table:
        --    every DELETE or key UPDATE on the referenced table scans it.
        SELECT 'warning', 'foreign_key_without_index',
               format('%s.%I', t.qname, con.conname),
               format('foreign key %I of %s (%s) has no index with these leading columns: every DELETE or key '
                      'UPDATE on %s scans %s',
                      con.conname, t.qname, cols.list, con.confrelid::regclass, t.qname),
               format('CREATE INDEX ON %s (%s);', t.qname, cols.list)
          FROM tbl t
          JOIN pg_catalog.pg_constraint con ON con.conrelid = t.oid AND con.contype = 'f' AND con.conparentid = 0
         CROSS JOIN LATERAL (
               SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) AS list
                 FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) cols
         WHERE NOT EXISTS (
               SELECT FROM pg_catalog.pg_index i
                WHERE i.indrelid = t.oid AND i.indpred IS NULL
                  AND i.indnkeyatts >= cardinality(con.conkey)
                  AND (SELECT array_agg(x ORDER BY x)
                         FROM unnest((string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(con.conkey)]) x)
                      = (SELECT array_agg(x ORDER BY x) FROM unnest(con.conkey) x))
        UNION ALL
        -- 3. constraints added NOT VALID and never validated: existing rows may break them.
        SELECT 'warning', 'not_valid_constraint',
               format('%s.%I', t.qname, con.conname),
               format('%s constraint %I of %s is NOT VALID: rows inserted before it was added are not checked',
                      CASE con.contype WHEN 'f' THEN 'foreign key' WHEN 'n' THEN 'not-null' ELSE 'check' END,
                      con.conname, t.qname),
               format('ALTER TABLE %s VALIDATE CONSTRAINT %I;', t.qname, con.conname)
          FROM tbl t
          JOIN pg_catalog.pg_constraint con ON con.conrelid = t.oid
         WHERE NOT con.convalidated AND con.conparentid = 0 AND con.coninhcount = 0
        UNION ALL
        -- 4. guarded tables without a primary key: guard errors and violations()
        --    can only name rows by ctid.
        SELECT 'warning', 'guarded_table_without_primary_key', t.qname,
               format('%s has pg_integrity guards (%s) but no primary key: errors and reports cannot name its rows '
                      'by a stable key', t.qname,
                      (SELECT string_agg(g.guard, ', ' ORDER BY g.guard) FROM integrity.guard_registry g
                        WHERE g.table_name::oid = t.oid)),
               coalesce(
                   -- a unique index over NOT NULL columns can become the primary key
                   (SELECT CASE WHEN t.relkind = 'r'
                                THEN format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I;',
                                            t.qname, ic.relname, ic.relname)
                                ELSE format('ALTER TABLE %s ADD PRIMARY KEY (%s);', t.qname,
                                            (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
                                               FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                                               JOIN pg_catalog.pg_attribute a
                                                 ON a.attrelid = t.oid AND a.attnum = k.attnum)) END
                      FROM pg_catalog.pg_index i
                      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                     WHERE i.indrelid = t.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                       AND i.indexprs IS NULL AND i.indnatts = i.indnkeyatts
                       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                        WHERE a.attrelid = t.oid AND a.attnum = ANY (i.indkey::int2[])
                                          AND NOT a.attnotnull)
                     ORDER BY i.indnatts, ic.relname
                     LIMIT 1),
                   -- else an identity column, else a column named id (with the
                   -- partition key, which the primary key of a partitioned table includes)
                   (SELECT format('ALTER TABLE %s ADD PRIMARY KEY (%s);', t.qname,
                                  (SELECT string_agg(quote_ident(pa.attname), ', ' ORDER BY pa.attnum <> a.attnum, k.ord)
                                     FROM pg_catalog.pg_attribute pa
                                     LEFT JOIN (SELECT pk.attnum, pk.ord
                                                  FROM pg_catalog.pg_partitioned_table pt,
                                                       unnest(pt.partattrs::int2[]) WITH ORDINALITY pk(attnum, ord)
                                                 WHERE pt.partrelid = t.oid) k ON k.attnum = pa.attnum
                                    WHERE pa.attrelid = t.oid AND (pa.attnum = a.attnum OR k.attnum IS NOT NULL)))
                      FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND (a.attidentity <> '' OR a.attname = 'id')
                     ORDER BY a.attidentity = '', a.attnum
                     LIMIT 1),
                   format('ALTER TABLE %s ADD PRIMARY KEY (<key columns>);', t.qname))
          FROM tbl t
         WHERE EXISTS (SELECT FROM integrity.guard_registry g WHERE g.table_name::oid = t.oid)
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint con
                            WHERE con.conrelid = t.oid AND con.contype = 'p')
    )
    SELECT p.severity, p.rule, p.object_name, p.problem, p.remedy
      FROM problems p
     ORDER BY p.object_name COLLATE "C", p.rule COLLATE "C";
END;
$$;

DROP FUNCTION integrity._conjuncts(text);

-- ==== issue 16: index predicates — end ====

-- ==== issue 16: the stock operations, one implementation ====
-- The reservation of several rows runs on the compiled code and cached plans
-- of the single-row operations, and the SQL functions that need a table's
-- stock guard read it as they do.
CREATE OR REPLACE FUNCTION integrity._stock_target(tbl regclass, caller text,
                                                   OUT stock_column text, OUT reserved_column text,
                                                   OUT key_column text, OUT key_type text, OUT quantity_scale integer)
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'integrity_stock_target';

CREATE OR REPLACE FUNCTION integrity.reserve_stock(tbl regclass, ids anyarray, qtys numeric[])
RETURNS boolean
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'integrity_reserve_stock_rows';

DROP FUNCTION integrity._require_quantity(numeric, integer, text);
DROP FUNCTION integrity._unknown_row(regclass, text, text, text);
-- ==== end issue 16: the stock operations ====

-- ==== issue 16: SQL shapes ====
-- Each rule that registration, the event triggers and health() all need is
-- one function: the arguments of every guard trigger, the ALTER TABLE that
-- sets guard trigger modes, the stock and credit rules (violations() and the
-- recheck triggers), the foreign-partition check, the settling of a hold.

-- The arguments trigger trigger_name of a registry row's guard has: what its
-- registration creates it with, and what health() and the event triggers
-- check that it still has.
CREATE FUNCTION integrity._trigger_arguments(trigger_name name, columns text[], options jsonb)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN trigger_name IN ('integrity_immutable', 'integrity_immutable_recheck',
                              'integrity_write_once', 'integrity_write_once_recheck',
                              'integrity_soft_delete') THEN columns
        WHEN trigger_name = 'integrity_version_bump' THEN
            ARRAY[columns[1], CASE WHEN coalesce((options ->> 'strict')::boolean, true) THEN 'strict' ELSE 'lenient' END]
        WHEN trigger_name = 'integrity_version_check' THEN columns[1:1]
        WHEN trigger_name IN ('integrity_stock', 'integrity_stock_recheck',
                              'integrity_credit', 'integrity_credit_recheck') THEN columns[1:2]
        -- the accounts by name, which pg_dump keeps
        WHEN trigger_name = 'integrity_ledger_credit' THEN
            ARRAY[(SELECT format('%I.%I', n.nspname, c.relname)
                     FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = integrity._relation(options ->> 'accounts')),
                  options ->> 'amount_column', options ->> 'entry_type_column',
                  options ->> 'debit_value', options ->> 'credit_value',
                  options ->> 'limit_column', options ->> 'used_column'] || columns
        WHEN trigger_name = 'integrity_hash_chain' THEN
            ARRAY[options ->> 'seq_column', options ->> 'hash_column'] || columns
        -- the maintained columns, an empty string, the target's key columns
        WHEN trigger_name = 'integrity_total' THEN
            columns || ARRAY[''] || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'key'))
        ELSE '{}'::text[] END
$$;

-- Trigger arguments as the argument list of CREATE TRIGGER … EXECUTE FUNCTION.
CREATE FUNCTION integrity._arguments_sql(args text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(string_agg(quote_literal(a), ', ' ORDER BY n), '') FROM unnest(args) WITH ORDINALITY AS u(a, n) $$;

-- The arguments trigger trigger_name of a registry row must have, as
-- pg_trigger.tgargs stores them (each followed by a NUL byte).
CREATE OR REPLACE FUNCTION integrity._trigger_args(trigger_name name, columns text[], options jsonb)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(convert_to(arg, pg_catalog.getdatabaseencoding()) || '\x00'::bytea, ''::bytea
                               ORDER BY n), ''::bytea)
      FROM unnest(integrity._trigger_arguments(trigger_name, columns, options)) WITH ORDINALITY AS a(arg, n)
$$;

-- A foreign table among the partitions of tbl, if any: it cannot have the
-- statement triggers that some guards put on every partition.
CREATE FUNCTION integrity._foreign_partition(tbl regclass)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tree.relid
      FROM pg_catalog.pg_partition_tree(tbl) AS tree
      JOIN pg_catalog.pg_class c ON c.oid = tree.relid
     WHERE c.relkind = 'f'
     LIMIT 1
$$;

-- The ALTER TABLE that puts the named triggers of rel in their modes ('A':
-- ENABLE ALWAYS, 'O': ENABLE), for _set_trigger_modes and health().  All of
-- a relation's guard triggers are set in one ALTER TABLE, so that the event
-- trigger, which checks every guard trigger's mode at the end of each ALTER
-- TABLE, never sees a half-done relation.
CREATE FUNCTION integrity._enable_triggers_sql(rel regclass, triggers name[], modes "char"[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('ALTER TABLE %s %s;', rel,
                  string_agg(format('ENABLE %sTRIGGER %I', CASE t.mode WHEN 'A' THEN 'ALWAYS ' ELSE '' END, t.name),
                             ', ' ORDER BY t.name))
      FROM unnest(triggers, modes) AS t(name, mode)
$$;

-- Puts every guard trigger on the table and its partitions in its mode
-- (partitions inherit row triggers as clones with their own enabled state):
-- registering one guard also repairs the modes of the others.
CREATE OR REPLACE FUNCTION integrity._set_trigger_modes(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fix text;
BEGIN
    FOR fix IN
        SELECT integrity._enable_triggers_sql(t.tgrelid::regclass, array_agg(t.tgname), array_agg(g.mode))
          FROM integrity._guard_triggers(NULL) g
          JOIN pg_catalog.pg_trigger t ON t.tgname = g.trigger_name
         WHERE t.tgrelid IN (SELECT integrity._partition_tree(tbl))
           AND t.tgenabled <> g.mode
         GROUP BY t.tgrelid
    LOOP
        EXECUTE fix;
    END LOOP;
END;
$$;

-- TRUNCATE triggers are not inherited by partitions: each member of the tree
-- gets its own.
CREATE OR REPLACE FUNCTION integrity._cover_truncate(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    -- A foreign table cannot have a TRUNCATE trigger.
    rel := integrity._foreign_partition(tbl);
    IF rel IS NOT NULL THEN
        RAISE EXCEPTION 'foreign table "%" cannot be a partition of append-only table "%"', rel, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A foreign table cannot have the trigger that refuses TRUNCATE of a partition.',
                  HINT = 'Keep foreign tables out of the partition tree, or register the guard with allow_truncate => true.';
    END IF;
    FOR rel IN SELECT integrity._partition_tree(tbl) LOOP
        -- A trigger of that name that is not this one (planted before the
        -- registration, say) is replaced.
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger
                        WHERE tgrelid = rel AND tgname = 'integrity_append_only_truncate'
                          AND tgfoid = 'integrity.append_only_truncate_guard()'::pg_catalog.regprocedure
                          AND tgtype = 34 AND tgqual IS NULL AND tgnargs = 0) THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER integrity_append_only_truncate BEFORE TRUNCATE ON %s'
                           ' FOR EACH STATEMENT EXECUTE FUNCTION integrity.append_only_truncate_guard()', rel);
        END IF;
    END LOOP;
END;
$$;

-- The statement triggers are per relation: each member of the partition tree
-- gets its own (a statement that targets a partition fires the partition's
-- triggers, not its parent's).
CREATE OR REPLACE FUNCTION integrity._cover_lifecycle(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    g record;
BEGIN
    -- A foreign table cannot have triggers with transition tables.
    rel := integrity._foreign_partition(tbl);
    IF rel IS NOT NULL THEN
        RAISE EXCEPTION 'foreign table "%" cannot be a partition of table "%", whose lifecycle is tracked', rel, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A foreign table cannot have the statement triggers that record lifecycle events.';
    END IF;
    -- Replaced also when they are there: that is what tells every backend
    -- (through the relcache) to build the statements again when a
    -- re-registration changed the tracked columns.
    FOR rel IN SELECT integrity._partition_tree(tbl) LOOP
        FOR g IN SELECT * FROM integrity._guard_triggers('lifecycle') LOOP
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT'
                           ' EXECUTE FUNCTION integrity.lifecycle_guard()',
                           g.trigger_name,
                           CASE g.tgtype WHEN 4 THEN 'INSERT' WHEN 16 THEN 'UPDATE' ELSE 'DELETE' END, rel,
                           CASE g.tgtype WHEN 4 THEN 'NEW TABLE AS new_rows'
                                         WHEN 16 THEN 'OLD TABLE AS old_rows NEW TABLE AS new_rows'
                                         ELSE 'OLD TABLE AS old_rows' END);
        END LOOP;
    END LOOP;
END;
$$;

-- immutable and write_once differ only in their condition and function.
CREATE OR REPLACE FUNCTION integrity._protect_columns(tbl regclass, columns text[], guard text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := CASE guard WHEN 'immutable' THEN 'protect_immutable' ELSE 'protect_write_once' END;
    checked text[];
    condition text;
    trigger_name text := 'integrity_' || guard;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    checked := integrity._check_columns(tbl, columns, caller);
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY[guard], caller);
    SELECT string_agg(CASE guard
                          WHEN 'immutable' THEN integrity._changed_sql(tbl, col)
                          ELSE format('(OLD.%I IS NOT NULL AND %s)', col, integrity._changed_sql(tbl, col))
                      END, ' OR ')
      INTO condition
      FROM unnest(checked) AS col;

    PERFORM integrity._record_guard(tbl, guard, checked, '{}');
    PERFORM integrity._place_recheck(tbl, guard,
        format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW WHEN (%s)'
               ' EXECUTE FUNCTION integrity.%I(%s)',
               trigger_name || '_recheck', tbl, condition, guard || '_guard',
               integrity._arguments_sql(integrity._trigger_arguments(trigger_name || '_recheck', checked, '{}'))));
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION integrity.%I(%s)',
                   trigger_name, tbl, guard || '_guard',
                   integrity._arguments_sql(integrity._trigger_arguments(trigger_name, checked, '{}')));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

CREATE OR REPLACE FUNCTION integrity.enable_versioning(tbl regclass, version_column name DEFAULT 'version',
                                            strict boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
    options jsonb := jsonb_build_object('strict', strict);
BEGIN
    PERFORM integrity._check_table(tbl, 'enable_versioning');
    PERFORM integrity._require_argument(version_column, 'version_column', 'enable_versioning');
    PERFORM integrity._require_argument(strict, 'strict', 'enable_versioning');
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['versioning'], 'enable_versioning');
    PERFORM integrity._refuse_generated(tbl, version_column, 'enable_versioning');
    typ := integrity._column_type(tbl, version_column);
    IF typ NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'version column "%" of table "%" must be smallint, integer or bigint, not %',
                        version_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;

    PERFORM integrity._record_guard(tbl, 'versioning', ARRAY[version_column::text], options);
    PERFORM integrity._place_recheck(tbl, 'versioning',
        format('CREATE OR REPLACE TRIGGER integrity_version_check AFTER UPDATE ON %s FOR EACH ROW'
               ' WHEN (NEW.%2$I IS DISTINCT FROM COALESCE(OLD.%2$I + 1, 1))'
               ' EXECUTE FUNCTION integrity.version_check(%3$s)',
               tbl, version_column,
               integrity._arguments_sql(integrity._trigger_arguments('integrity_version_check',
                                                                     ARRAY[version_column::text], options))));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_version_bump BEFORE UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.version_bump(%s)',
                   tbl, integrity._arguments_sql(integrity._trigger_arguments('integrity_version_bump',
                                                                              ARRAY[version_column::text], options)));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

DROP FUNCTION integrity._row_rules(text, text[], boolean);

-- The row rules of one guard, over the row named row_alias: a condition that
-- is true for a row that breaks the rule, an SQL expression for the detail
-- (evaluated only for such rows), and the columns the rule reads.  Guards
-- without a rule on the data alone (append_only, write_once, ledger_credit)
-- have none here.  nan_possible: the guard's quantities are numeric, which can
-- be NaN.  The stock and credit guards' recheck triggers fire on these rules.
CREATE FUNCTION integrity._row_rules(guard text, columns text[], nan_possible boolean, row_alias text)
RETURNS TABLE (rule_guard text, condition text, detail text, uses text[])
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- An immutable column that is NULL: the guard keeps it NULL forever.
    SELECT 'immutable', format('%s.%I IS NULL', row_alias, col),
           quote_literal(format('immutable column "%s" is NULL: an immutable NULL can never be set', col)),
           ARRAY[col]
      FROM unnest(columns) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'immutable'
    UNION ALL
    SELECT 'versioning', format('(%1$s.%2$I IS NULL OR %1$s.%2$I < 1)', row_alias, columns[1]),
           format('%L || COALESCE(%s.%I::text, %L) || %L',
                  format('version column "%s" is ', columns[1]), row_alias, columns[1], 'NULL', ': versions start at 1'),
           ARRAY[columns[1]]
     WHERE guard = 'versioning'
    UNION ALL
    -- stock: columns = {stock, reserved}; credit: columns = {limit, used}.
    SELECT r.rule_guard, r.condition, r.detail, columns[1:2]
      FROM (SELECT guard AS rule_guard, format('%s.%I', row_alias, columns[1]) AS total,
                   format('%s.%I', row_alias, columns[2]) AS part, columns[1] AS total_name, columns[2] AS part_name,
                   CASE guard WHEN 'stock' THEN 'stock' ELSE 'the credit limit' END AS total_word,
                   CASE guard WHEN 'stock' THEN 'reserved stock' ELSE 'used credit' END AS part_word
             WHERE guard IN ('stock', 'credit')) q
     CROSS JOIN LATERAL (VALUES
        (1, q.rule_guard, format('%s < 0', q.total),
         format('%L || %s::text || %L', format('column "%s" is ', q.total_name), q.total,
                format(': %s must be >= 0', q.total_word))),
        (2, q.rule_guard, format('%s < 0', q.part),
         format('%L || %s::text || %L', format('column "%s" is ', q.part_name), q.part,
                format(': %s must be >= 0', q.part_word))),
        (3, q.rule_guard, format('%s > %s', q.part, q.total),
         format('%L || %s::text || %L || %s::text || %L', format('column "%s" (', q.part_name), q.part,
                format(') exceeds column "%s" (', q.total_name), q.total,
                format('): %s must be <= %s', q.part_word, CASE q.rule_guard WHEN 'stock' THEN 'stock' ELSE 'the limit' END))),
        -- NaN compares greater than every number, so it breaks none of the above.
        (4, q.rule_guard, CASE WHEN nan_possible THEN format('%s = ''NaN''', q.total) END,
         quote_literal(format('column "%s" is NaN: %s must be a number', q.total_name, q.total_word))),
        (5, q.rule_guard, CASE WHEN nan_possible THEN format('%s = ''NaN''', q.part) END,
         quote_literal(format('column "%s" is NaN: %s must be a number', q.part_name, q.part_word)))
        ) AS r(n, rule_guard, condition, detail)
     WHERE r.condition IS NOT NULL
$$;

-- One query that checks every row rule of the guards registered on owners
-- (rel itself, or rel and its partitioned ancestors) against the rows of rel
-- in a single scan: the OR of the rules filters the scan (what a hand-written
-- query would do), and only the rows it lets through are expanded into one
-- output row per broken rule, with their key and detail.  The query has the
-- shape a DBA would write by hand and no more expressions than that (on a
-- large table JIT compiles them, and its time counts).  Rules whose columns
-- no longer exist are left out (health() reports them).  NULL when there is
-- no rule to check.  $1 of the query is the table_name it reports.
CREATE OR REPLACE FUNCTION integrity._violations_sql(rel regclass, owners regclass[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    rules record;
BEGIN
    SELECT string_agg(format('(%L, %s, %s)', rs.rule_guard, rs.condition, rs.detail), ', ' ORDER BY rs.n) AS vals,
           string_agg(format('(%s)', rs.condition), ' OR ' ORDER BY rs.n) AS filter
      INTO rules
      FROM (SELECT row_number() OVER (ORDER BY r.guard, ru.ord) AS n, ru.rule_guard, ru.condition, ru.detail
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._row_rules(r.guard, r.columns, coalesce((
                            SELECT a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype
                              FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = rel AND a.attname = r.columns[1] AND NOT a.attisdropped), false), 't')
                        WITH ORDINALITY AS ru(rule_guard, condition, detail, uses, ord)
             WHERE r.table_name = ANY (owners)
               AND integrity._has_columns(rel, ru.uses)) rs;
    IF rules.vals IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN format('SELECT v.guard, $1, %s, v.detail'
                  ' FROM %s t CROSS JOIN LATERAL (VALUES %s) AS v(guard, broken, detail)'
                  ' WHERE (%s) AND v.broken',
                  integrity._row_key_sql(rel), rel, rules.vals, rules.filter);
END;
$$;

-- guard_stock and guard_credit: 0 <= part <= total and total >= 0, checked on
-- the final row like a NOT VALID CHECK constraint.
CREATE OR REPLACE FUNCTION integrity._guard_quantity(tbl regclass, total_column name, part_column name, guard text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'guard_' || guard;
    columns text[] := ARRAY[total_column::text, part_column::text];
    typ regtype;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    typ := integrity._check_quantity_column(tbl, total_column, caller);
    IF integrity._check_quantity_column(tbl, part_column, caller) <> typ THEN
        RAISE EXCEPTION '%: columns "%" and "%" of table "%" must have the same type', caller, total_column,
                        part_column, tbl
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, part_column, caller);
    IF guard = 'stock' THEN   -- commit_stock consumes stock too
        PERFORM integrity._refuse_generated(tbl, total_column, caller);
    END IF;
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY[guard], caller);
    PERFORM integrity._record_guard(tbl, guard, columns, '{}');
    -- The recheck fires for exactly the rows that violations() reports.
    PERFORM integrity._place_recheck(tbl, guard,
        format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE ON %s FOR EACH ROW WHEN (%s)'
               ' EXECUTE FUNCTION integrity.%I(%s)',
               'integrity_' || guard || '_recheck', tbl,
               (SELECT string_agg(format('(%s)', r.condition), ' OR ' ORDER BY r.n)
                  FROM integrity._row_rules(guard, columns, typ = 'numeric'::regtype, 'NEW')
                       WITH ORDINALITY AS r(rule_guard, condition, detail, uses, n)),
               guard || '_guard',
               integrity._arguments_sql(integrity._trigger_arguments('integrity_' || guard || '_recheck', columns, '{}'))));
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.%I(%s)',
                   'integrity_' || guard, tbl, guard || '_guard',
                   integrity._arguments_sql(integrity._trigger_arguments('integrity_' || guard, columns, '{}')));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

CREATE OR REPLACE FUNCTION integrity.guard_ledger_credit(ledger regclass, accounts regclass, key_columns text[],
                                              amount_column name DEFAULT 'amount',
                                              entry_type_column name DEFAULT 'entry_type',
                                              debit_value text DEFAULT 'DEBIT',
                                              credit_value text DEFAULT 'CREDIT',
                                              limit_column name DEFAULT 'credit_limit',
                                              used_column name DEFAULT 'used_credit')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'guard_ledger_credit';
    keys text[];
    key text;
    problem text;
    options jsonb;
BEGIN
    PERFORM integrity._check_table(ledger, caller);
    PERFORM integrity._require_argument(accounts, 'accounts', caller);
    PERFORM integrity._check_table(accounts, caller);
    IF ledger = accounts THEN
        RAISE EXCEPTION '%: the ledger and the accounts must be different tables', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    keys := integrity._check_columns(ledger, key_columns, caller);
    IF cardinality(keys) > 8 THEN
        RAISE EXCEPTION '%: an account key has at most 8 columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH key IN ARRAY keys LOOP
        IF integrity._column_type(accounts, key) <> integrity._column_type(ledger, key) THEN
            RAISE EXCEPTION '%: key column "%" has type % in "%" but % in "%"', caller, key,
                            integrity._column_type(ledger, key), ledger, integrity._column_type(accounts, key), accounts
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END LOOP;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_index i
         WHERE i.indrelid = accounts AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
           AND i.indnkeyatts = cardinality(keys)
           AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                  FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = accounts AND a.attnum = ANY (i.indkey::int2[]))
               = (SELECT array_agg(k ORDER BY k) FROM unnest(keys) k)) THEN
        RAISE EXCEPTION '%: there is no unique constraint on (%) in "%"', caller, array_to_string(keys, ', '), accounts
            USING ERRCODE = 'invalid_column_reference',
                  HINT = 'Each ledger entry must belong to exactly one account: add a primary key or unique constraint on the key columns.';
    END IF;
    PERFORM integrity._check_quantity_column(ledger, amount_column, caller);
    PERFORM integrity._refuse_generated(accounts, used_column, caller);
    IF integrity._check_quantity_column(accounts, limit_column, caller)
       <> integrity._check_quantity_column(accounts, used_column, caller) THEN
        RAISE EXCEPTION '%: columns "%" and "%" of table "%" must have the same type', caller, limit_column,
                        used_column, accounts
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    -- The account must hold every amount exactly, or it drifts from its ledger.
    IF NOT integrity._holds_exactly(accounts, used_column, ledger, amount_column) THEN
        RAISE EXCEPTION '%: amounts of type % would be rounded into "%" of type %', caller,
                        integrity._column_format(ledger, amount_column), used_column,
                        integrity._column_format(accounts, used_column)
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Give the account''s used and limit columns the type of the ledger''s amounts.';
    END IF;
    PERFORM integrity._require_argument(entry_type_column, 'entry_type_column', caller);
    IF integrity._column_type(ledger, entry_type_column) = 'bpchar'::regtype THEN
        RAISE EXCEPTION '%: entry type column "%" of table "%" must not be char(n)', caller, entry_type_column, ledger
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'char(n) pads its values with spaces, so they would not equal the debit and credit values.',
                  HINT = 'Use text, varchar or an enum for the entry type.';
    END IF;
    PERFORM integrity._require_argument(debit_value, 'debit_value', caller);
    PERFORM integrity._require_argument(credit_value, 'credit_value', caller);
    FOR problem IN
        SELECT format('%s %L is not a value of entry type column "%s" of table "%s": %s', v.argument, v.value,
                      entry_type_column, ledger, p.problem)
          FROM (VALUES ('debit_value', debit_value), ('credit_value', credit_value)) AS v(argument, value)
         CROSS JOIN LATERAL (SELECT integrity._entry_value_problem(ledger, entry_type_column, v.value)) AS p(problem)
         WHERE p.problem IS NOT NULL
    LOOP
        RAISE EXCEPTION '%: %', caller, problem USING ERRCODE = 'invalid_text_representation';
    END LOOP;
    IF debit_value = credit_value THEN
        RAISE EXCEPTION '%: debit_value and credit_value must differ', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._refuse_if_inherited(ledger, ARRAY['ledger_credit'], caller);

    options := jsonb_build_object('accounts', accounts::text, 'amount_column', amount_column,
                                  'entry_type_column', entry_type_column, 'debit_value', debit_value,
                                  'credit_value', credit_value, 'limit_column', limit_column, 'used_column', used_column);
    PERFORM integrity._record_guard(ledger, 'ledger_credit', keys, options);
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_ledger_credit AFTER INSERT OR UPDATE OR DELETE ON %s'
                   ' FOR EACH ROW EXECUTE FUNCTION integrity.ledger_credit_guard(%s)',
                   ledger, integrity._arguments_sql(integrity._trigger_arguments('integrity_ledger_credit', keys, options)));
    PERFORM integrity._set_trigger_modes(ledger);
END;
$$;

CREATE OR REPLACE FUNCTION integrity.enable_hash_chain(tbl regclass, chain_columns text[] DEFAULT NULL,
                                            seq_column name DEFAULT 'chain_seq', hash_column name DEFAULT 'row_hash')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'enable_hash_chain';
    chain text[] := '{}';
    hashed text[];
    options jsonb;
    problem text;
    rel record;
    registered record;
    unchained boolean;
    append_only jsonb;
    chain_index record;
    current_chain jsonb;
    last_seq bigint;
    last_hash bytea;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(seq_column, 'seq_column', caller);
    PERFORM integrity._require_argument(hash_column, 'hash_column', caller);
    IF integrity._column_type(tbl, seq_column) <> 'bigint'::regtype THEN
        RAISE EXCEPTION '%: sequence column "%" of table "%" must be bigint, not %', caller, seq_column, tbl,
                        integrity._column_type(tbl, seq_column)
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF integrity._column_type(tbl, hash_column) <> 'bytea'::regtype THEN
        RAISE EXCEPTION '%: hash column "%" of table "%" must be bytea, not %', caller, hash_column, tbl,
                        integrity._column_type(tbl, hash_column)
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, seq_column, caller);
    PERFORM integrity._refuse_generated(tbl, hash_column, caller);
    IF seq_column = hash_column THEN
        RAISE EXCEPTION '%: seq_column and hash_column must differ', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(chain_columns) > 0 THEN
        chain := integrity._check_columns(tbl, chain_columns, caller);
    END IF;
    IF seq_column = ANY (chain) OR hash_column = ANY (chain) THEN
        RAISE EXCEPTION '%: the sequence and hash columns cannot be chain columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.attname INTO problem
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = ANY (chain) AND NOT a.attnotnull
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: chain column "%" of table "%" must be NOT NULL', caller, problem, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', tbl, problem);
    END IF;
    -- Every other column is hashed, in column order: those the table has at
    -- the first registration.  Registering again keeps them (the rows were
    -- hashed with them), and cannot regroup or renumber the rows.
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'hash_chain';
    IF FOUND THEN
        IF registered.columns IS DISTINCT FROM chain OR registered.options ->> 'seq_column' <> seq_column
           OR registered.options ->> 'hash_column' <> hash_column THEN
            RAISE EXCEPTION '%: table "%" is chained already, by other columns', caller, tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('It is chained by (%s), numbered in %s and hashed in %s.',
                                      array_to_string(registered.columns, ', '), registered.options ->> 'seq_column',
                                      registered.options ->> 'hash_column'),
                      HINT = format('To chain it otherwise, lift the chain first: SELECT integrity.unprotect(%L, ''hash_chain'');',
                                    tbl::text);
        END IF;
        hashed := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(registered.options -> 'hashed_columns'));
    ELSE
        hashed := ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
                           AND a.attname NOT IN (seq_column, hash_column)
                         ORDER BY a.attnum);
    END IF;
    SELECT p INTO problem FROM unnest(hashed) AS col, integrity._chain_column_problem(tbl, col) AS p
     WHERE p IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: %', caller, problem
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'A row is hashed in a form that must not depend on the settings of the session that reads it.';
    END IF;

    options := jsonb_build_object('seq_column', seq_column, 'hash_column', hash_column, 'hashed_columns', to_jsonb(hashed));
    PERFORM integrity._record_guard(tbl, 'hash_chain', chain, options);
    -- Rows that are there already without a place in a chain are chained in
    -- key order.  An append-only guard is lifted for that and put back as it
    -- was, in the same transaction: the caller owns the table.
    EXECUTE format('SELECT EXISTS (SELECT FROM %s t WHERE t.%I IS NULL AND t.%I IS NULL)', tbl, seq_column, hash_column)
       INTO unchained;
    SELECT r.options INTO append_only
      FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'append_only';
    IF unchained THEN
        IF append_only IS NOT NULL THEN
            PERFORM integrity.unprotect(tbl, 'append_only');
        END IF;
        FOR rel IN EXECUTE format('SELECT t.ctid AS row_id, t.tableoid::regclass AS part, %s AS chain FROM %s t'
                                  ' WHERE t.%I IS NULL AND t.%I IS NULL ORDER BY 3, %s',
                                  integrity._chain_values_sql(tbl, chain, 't'), tbl, seq_column, hash_column,
                                  coalesce((SELECT string_agg(format('t.%I', k), ', ')
                                              FROM unnest(integrity._key_columns(tbl)) AS k), 't.ctid'))
        LOOP
            IF current_chain IS DISTINCT FROM rel.chain THEN
                current_chain := rel.chain;
                EXECUTE format('SELECT t.%1$I, t.%2$I FROM %3$s t WHERE %4$s = $1 AND t.%1$I IS NOT NULL'
                               ' ORDER BY t.%1$I DESC LIMIT 1',
                               seq_column, hash_column, tbl, integrity._chain_values_sql(tbl, chain, 't'))
                   INTO last_seq, last_hash USING rel.chain;
            END IF;
            last_seq := coalesce(last_seq, 0) + 1;
            EXECUTE format('UPDATE %s t SET %I = $1, %I = pg_catalog.sha256($2 || %s) WHERE t.ctid = $3 RETURNING t.%I',
                           rel.part, seq_column, hash_column, integrity._chain_encoding_sql(tbl, hashed, 't'),
                           hash_column)
               INTO last_hash USING last_seq, coalesce(last_hash, '\x'::bytea), rel.row_id;
        END LOOP;
    END IF;

    -- The trigger reads the last row of a chain by this index.
    SELECT left(c.relname || '_chain', 63) AS name, c.relnamespace INTO chain_index
      FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class
                    WHERE relname = chain_index.name AND relnamespace = chain_index.relnamespace) THEN
        EXECUTE format('CREATE INDEX %I ON %s (%s)', chain_index.name, tbl,
                       (SELECT string_agg(format('%I', col), ', ') FROM unnest(chain || seq_column::text) AS col));
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_hash_chain BEFORE INSERT ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.hash_chain_guard(%s)',
                   tbl, integrity._arguments_sql(integrity._trigger_arguments('integrity_hash_chain', chain, options)));
    IF append_only IS NULL OR unchained THEN
        PERFORM integrity.protect_append_only(tbl, coalesce((append_only ->> 'allow_truncate')::boolean, false));
    END IF;
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

CREATE OR REPLACE FUNCTION integrity.enable_soft_delete(tbl regclass, deleted_column name DEFAULT 'deleted_at',
                                             flag_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller constant text := 'enable_soft_delete';
    typ regtype;
    contradicting text;
    columns text[];
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(deleted_column, 'deleted_column', caller);
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['soft_delete'], caller);
    typ := integrity._column_type(tbl, deleted_column);
    IF typ NOT IN ('timestamp'::regtype, 'timestamptz'::regtype) THEN
        RAISE EXCEPTION '%: deleted column "%" of table % must be timestamp or timestamptz, not %',
                        caller, deleted_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, deleted_column, caller);
    IF flag_column IS NOT NULL THEN
        typ := integrity._column_type(tbl, flag_column);
        IF typ <> 'boolean'::regtype THEN
            RAISE EXCEPTION '%: flag column "%" of table % must be boolean, not %', caller, flag_column, tbl, typ
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        PERFORM integrity._refuse_generated(tbl, flag_column, caller);
        IF flag_column = deleted_column THEN
            RAISE EXCEPTION '%: deleted_column and flag_column must differ', caller
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    SELECT r.guard INTO contradicting
      FROM integrity.guard_registry r
     WHERE r.table_name IN (SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
       AND r.guard IN ('append_only', 'hash_chain')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: table % is append-only; its rows cannot be marked deleted', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The %s guard refuses every UPDATE and DELETE of its rows.', contradicting),
                  HINT = 'Record a deletion as a new entry instead.';
    END IF;

    columns := ARRAY[deleted_column::text] || ARRAY(SELECT flag_column::text WHERE flag_column IS NOT NULL);
    PERFORM integrity._record_guard(tbl, 'soft_delete', columns,
                                    jsonb_build_object('deleted_column', deleted_column, 'flag_column', flag_column));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_soft_delete BEFORE DELETE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.soft_delete_guard(%s)', tbl,
                   integrity._arguments_sql(integrity._trigger_arguments('integrity_soft_delete', columns, '{}')));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

CREATE OR REPLACE FUNCTION integrity.maintain_total(target regclass, target_column name, source regclass, key_columns text[],
                                         value_column name DEFAULT NULL, filter text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'maintain_total';
    key text[];
    keys text[];
    registered jsonb;
    total jsonb;
    base text;
    source_name text;
    target_name text;
    filter_sql text;
    filter_columns text[];
    apply_args text;
    source_args text;
    i int;
BEGIN
    PERFORM integrity._check_table(target, caller);
    PERFORM integrity._require_argument(source, 'source', caller);
    PERFORM integrity._check_table(source, caller);
    PERFORM integrity._require_argument(target_column, 'target_column', caller);
    PERFORM integrity._require_argument(key_columns, 'key_columns', caller);
    IF target = source THEN
        RAISE EXCEPTION '%: the target and the source must be different tables', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = source) = 'p'
       OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = target) = 'p' THEN
        RAISE EXCEPTION '%: partitioned tables cannot hold or feed maintained totals yet', caller
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT FROM integrity._inheritance_children(source)) THEN
        RAISE EXCEPTION '%: table "%" has inheritance children', caller, source
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Rows of the children would not reach the total.';
    END IF;
    key := integrity._primary_key(target);
    IF key IS NULL THEN
        RAISE EXCEPTION '%: table "%" has no primary key', caller, target
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'The source rows reference the target row by its primary key.';
    END IF;
    IF cardinality(key) > 8 THEN
        RAISE EXCEPTION '%: a target key has at most 8 columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._check_quantity_column(target, target_column, caller);
    PERFORM integrity._refuse_generated(target, target_column, caller);
    IF target_column = ANY (key) THEN
        RAISE EXCEPTION '%: column "%" is part of the primary key of "%"', caller, target_column, target
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    keys := integrity._check_columns(source, key_columns, caller);
    IF cardinality(keys) <> cardinality(key_columns) OR cardinality(keys) <> cardinality(key) THEN
        RAISE EXCEPTION '%: key_columns must name % distinct column(s) of "%", one for each column of the primary key (%) of "%"',
                        caller, cardinality(key), source, array_to_string(key, ', '), target
            USING ERRCODE = 'invalid_column_reference';
    END IF;
    FOR i IN 1 .. cardinality(key) LOOP
        IF integrity._column_type(source, keys[i]) <> integrity._column_type(target, key[i]) THEN
            RAISE EXCEPTION '%: key column "%" has type % in "%" but "%" has type % in "%"', caller, keys[i],
                            integrity._column_type(source, keys[i]), source, key[i],
                            integrity._column_type(target, key[i]), target
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END LOOP;
    IF value_column IS NOT NULL THEN
        PERFORM integrity._check_quantity_column(source, value_column, caller);
        -- The total must hold every sum exactly, or it drifts from its sources.
        IF NOT integrity._holds_exactly(target, target_column, source, value_column) THEN
            RAISE EXCEPTION '%: values of type % would be rounded into "%" of type %', caller,
                            integrity._column_format(source, value_column), target_column,
                            integrity._column_format(target, target_column)
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Give the total the type of the values it adds up.';
        END IF;
    END IF;
    IF filter IS NOT NULL THEN
        filter_sql := integrity._total_filter(source, filter);
        filter_columns := integrity._total_filter_columns(source, filter);
    END IF;

    source_name := source::text;
    target_name := target::text;
    total := pg_catalog.jsonb_build_object('column', target_column, 'source', source_name, 'key_columns', keys,
                                           'value_column', value_column, 'filter', filter_sql,
                                           'filter_columns', coalesce(filter_columns, '{}'));
    -- A total registered again loses its old triggers first, which the event
    -- trigger lets go only once the registry no longer needs them.
    SELECT r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    registered := pg_catalog.jsonb_build_object(
        'name', target_name,
        'key', key,
        'totals', coalesce((SELECT pg_catalog.jsonb_agg(t ORDER BY t ->> 'column', t ->> 'source')
                              FROM pg_catalog.jsonb_array_elements(registered -> 'totals') t
                             WHERE (t ->> 'column', integrity._relation(t ->> 'source'))
                                   IS DISTINCT FROM (target_column::text, source)), '[]'));
    PERFORM integrity._record_total(target, registered);
    PERFORM integrity._drop_total_triggers(pg_catalog.jsonb_build_object('name', target_name,
                                                                         'totals', pg_catalog.jsonb_build_array(total)));
    registered := pg_catalog.jsonb_set(registered, '{totals}', (registered -> 'totals') || pg_catalog.jsonb_build_array(total));
    PERFORM integrity._record_total(target, registered);

    -- The source's triggers.
    base := integrity._total_trigger_base(target_name, target_column);
    source_args := integrity._arguments_sql(ARRAY[target_name, target_column, coalesce(value_column, ''),
                                                  coalesce(filter_sql, '')] || keys);
    apply_args := integrity._arguments_sql(ARRAY[target_name, target_column] || key);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_source(%s)', base, source, source_args);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT'
                   ' EXECUTE FUNCTION integrity.total_apply(%s)', base || '_apply', source, apply_args);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %s FOR EACH STATEMENT'
                   ' EXECUTE FUNCTION integrity._total_truncate(%L, %L)', base || '_truncate', source,
                   target_name, target_column);

    -- The target's triggers, for every maintained column.
    PERFORM integrity._place_total_guard(target);
END;
$$;

-- (Re)creates the target's triggers from its registry row.
CREATE OR REPLACE FUNCTION integrity._place_total_guard(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registered record;
BEGIN
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total BEFORE UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_guard(%s)', target,
                   integrity._arguments_sql(integrity._trigger_arguments('integrity_total', registered.columns,
                                                                         registered.options)));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total_start BEFORE INSERT ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_start()', target);
END;
$$;

DROP FUNCTION integrity._total_guard_args(text[], jsonb);

-- Settles pending hold $1 as $2 ('committed': qty of it, all of it when
-- NULL; 'released') unless it has expired, and returns what it held; no row
-- when it cannot be settled so (_settled_status says why).
CREATE FUNCTION integrity._settle_hold(hold_id bigint, status text, qty numeric, caller text)
RETURNS TABLE (kind text, table_name regclass, row_id jsonb, quantity numeric, committed_quantity numeric)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._require_argument($1, 'hold_id', caller);
    UPDATE integrity.hold_records r
       SET status = $2, settled_at = pg_catalog.now(),
           committed_quantity = CASE WHEN $2 = 'committed' THEN coalesce(qty, r.quantity) END
     WHERE r.hold_id = $1 AND r.status = 'pending'
       AND (r.expires_at IS NULL OR r.expires_at > pg_catalog.now())
       AND (qty IS NULL OR (qty > 0 AND qty <= r.quantity))
    RETURNING r.kind, r.table_name, r.row_id, r.quantity, r.committed_quantity
$$;

CREATE OR REPLACE FUNCTION integrity.commit_hold(hold_id bigint, qty numeric DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
BEGIN
    SELECT * INTO h FROM integrity._settle_hold(hold_id, 'committed', qty, 'commit_hold');
    IF NOT FOUND THEN
        RETURN integrity._settled_status(hold_id, qty, 'commit_hold');
    END IF;
    IF h.kind = 'stock' THEN
        PERFORM integrity.commit_stock(h.table_name, h.row_id #>> '{}', h.committed_quantity);
        IF h.committed_quantity < h.quantity THEN
            PERFORM integrity.release_stock(h.table_name, h.row_id #>> '{}', h.quantity - h.committed_quantity);
        END IF;
    ELSE
        -- The DEBIT entry the caller inserts next takes the credit over: it is
        -- counted once, by the ledger.
        PERFORM integrity._give_back(h.kind, h.table_name, h.row_id, h.quantity, 'commit_hold');
    END IF;
    RETURN 'committed';
END;
$$;

CREATE OR REPLACE FUNCTION integrity.release_hold(hold_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
BEGIN
    SELECT * INTO h FROM integrity._settle_hold(hold_id, 'released', NULL, 'release_hold');
    IF NOT FOUND THEN
        RETURN integrity._settled_status(hold_id, NULL, 'release_hold');
    END IF;
    PERFORM integrity._give_back(h.kind, h.table_name, h.row_id, h.quantity, 'release_hold');
    RETURN 'released';
END;
$$;

-- ==== end issue 16: SQL shapes ====

-- ==== issue 16: compiled functions declared once ====
-- sql/compiled_functions.sql declares every LANGUAGE c function from one list,
-- which health() now reads for the symbol and declaration of a guard trigger
-- function (it rebuilt them from the function's name).  The compiled
-- functions themselves are unchanged.
CREATE FUNCTION integrity._compiled_functions()
RETURNS TABLE (name text, arguments text, result text, symbol text, declaration text, comment_sql text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT f.name, f.arguments, f.result, f.symbol,
       concat_ws(' ', format('FUNCTION integrity.%I(%s) RETURNS %s LANGUAGE c', f.name, f.arguments, f.result),
                 f.attributes, format('AS %L, %L', 'MODULE_PATHNAME', f.symbol)),
       CASE WHEN f.description IS NOT NULL
            THEN format('COMMENT ON FUNCTION integrity.%I(%s) IS %L', f.name, f.arguments, f.description) END
  FROM (VALUES
    -- The guards' triggers.  They run on every guarded row: they take no
    -- search_path setting, and what SQL they run is schema-qualified.
    ('append_only_guard', '', 'trigger', NULL, 'integrity_append_only_guard',
     'Trigger: refuses UPDATE and DELETE of rows of an append-only table (23001).'),
    ('append_only_truncate_guard', '', 'trigger', NULL, 'integrity_append_only_truncate_guard',
     'Trigger: refuses TRUNCATE of an append-only table (23001).'),
    ('immutable_guard', '', 'trigger', NULL, 'integrity_immutable_guard',
     'Trigger: refuses a change of the immutable columns named in its arguments (23001).'),
    ('write_once_guard', '', 'trigger', NULL, 'integrity_write_once_guard',
     'Trigger: refuses a change of the write-once columns named in its arguments once set (23001).'),
    ('version_bump', '', 'trigger', NULL, 'integrity_version_bump',
     'Trigger: sets the version column to OLD + 1; in strict mode refuses stale versions (40001).'),
    ('version_check', '', 'trigger', NULL, 'integrity_version_check',
     'Trigger: refuses a row whose version a later BEFORE trigger moved off OLD + 1 (23001).'),
    ('stock_guard', '', 'trigger', NULL, 'integrity_stock_guard',
     'Trigger: refuses a row whose stock is negative or whose reserved stock is negative or above stock (23514).'),
    ('credit_guard', '', 'trigger', NULL, 'integrity_credit_guard',
     'Trigger: refuses a row whose credit limit is negative or whose used credit is negative or above the limit (23514).'),
    ('ledger_credit_guard', '', 'trigger', NULL, 'integrity_ledger_credit_guard',
     'Trigger: applies each ledger entry to its account''s used credit, refusing to leave it above the limit or below zero (23514).'),
    ('hash_chain_guard', '', 'trigger', NULL, 'integrity_hash_chain_guard',
     'Trigger: numbers each inserted row within its chain and sets its hash from the chain''s last row.'),
    ('lifecycle_guard', '', 'trigger', NULL, 'integrity_lifecycle_guard',
     'Trigger: AFTER INSERT, UPDATE or DELETE FOR EACH STATEMENT with transition tables; writes the statement''s lifecycle events.'),
    ('lifecycle_events_guard', '', 'trigger', NULL, 'integrity_lifecycle_events_guard',
     'Trigger: refuses UPDATE, DELETE and TRUNCATE of integrity.lifecycle_events (23001), except the deletes of purge_lifecycle_events().'),
    ('soft_delete_guard', '', 'trigger', NULL, 'integrity_soft_delete_guard',
     'Trigger: turns the DELETE of a row into setting its deleted column to now() (and its flag column to true).'),
    ('total_source', '', 'trigger', NULL, 'integrity_total_source',
     'Trigger: collects the contribution of each source row to its target row''s maintained total.'),
    ('total_apply', '', 'trigger', NULL, 'integrity_total_apply',
     'Trigger: applies what a statement on a source table collected, one update per target row, in key order.'),
    ('total_start', '', 'trigger', NULL, 'integrity_total_start',
     'Trigger: starts a new target row''s maintained totals at the total of the source rows that already reference it.'),
    ('total_guard', '', 'trigger', NULL, 'integrity_total_guard',
     'Trigger: refuses a direct change of a maintained total or of its row''s key (23001).'),

    -- The stock operations (src/stock_operations.rs): they are called once
    -- per order line, and keep their prepared statements per table.
    ('reserve_stock', 'tbl regclass, id anyelement, qty numeric', 'boolean', 'SET search_path = pg_catalog, pg_temp',
     'integrity_reserve_stock',
     'Reserves qty of the row''s available stock (stock - reserved): true when reserved, false when not enough is available.'),
    ('reserve_stock', 'tbl regclass, ids anyarray, qtys numeric[]', 'boolean', 'SET search_path = pg_catalog, pg_temp',
     'integrity_reserve_stock_rows',
     'Reserves qtys[i] of row ids[i] for every i, or nothing: true when all were reserved, false when any lacks stock. Locks rows in key order.'),
    ('release_stock', 'tbl regclass, id anyelement, qty numeric', 'void', 'SET search_path = pg_catalog, pg_temp',
     'integrity_release_stock',
     'Gives back qty of the row''s reservation (reserved goes down); more than is reserved raises 23514.'),
    ('commit_stock', 'tbl regclass, id anyelement, qty numeric', 'void', 'SET search_path = pg_catalog, pg_temp',
     'integrity_commit_stock',
     'Consumes qty of the row''s reservation (stock and reserved both go down); more than is reserved raises 23514.'),
    -- The stock guard of tbl, read as the operations read it (from its
    -- trigger): its columns, its single-column primary key, and the scale a
    -- quantity must fit (0 for integer columns, NULL for unconstrained numeric).
    ('_stock_target', 'tbl regclass, caller text, OUT stock_column text, OUT reserved_column text, '
     'OUT key_column text, OUT key_type text, OUT quantity_scale integer', 'record',
     'STABLE SET search_path = pg_catalog, pg_temp', 'integrity_stock_target', NULL),

    -- The ddl_command_start event trigger, and what the other event triggers
    -- ask of a DDL command (src/ddl_commands.rs).
    ('_on_ddl_command_start', '', 'event_trigger', NULL, 'integrity_on_ddl_command_start', NULL),
    ('_attaches_partition', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_attaches_partition', NULL),
    ('_renames', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_renames', NULL),
    ('_drops_expired_partition', 'pg_catalog.oid', 'boolean', 'STRICT', 'integrity_drops_expired_partition', NULL),

    -- Runs a statement that the extension built to delete guarded rows for
    -- good (src/sanctioned.rs): only for the owner of tbl, and only the guards
    -- of the relations _cascade_reach(tbl) lists let its deletes through.
    ('_execute_sanctioned', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_sanctioned', NULL),
    -- Runs a statement with the maintained totals of tbl writable (src/sanctioned.rs).
    ('_execute_total_writes', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_total_writes', NULL),

    -- One row's lifecycle events, in order, for a caller who may read the
    -- table (src/lifecycle.rs checks the privilege and reads the events as
    -- their table's owner).
    ('_lifecycle_events_of', 'tbl regclass, row_key jsonb', 'integrity.lifecycle_events[]', 'STABLE STRICT',
     'integrity_lifecycle_events_of', NULL),

    -- A maintained total's filter, analyzed as a boolean, immutable expression
    -- over its source's columns and written back by PostgreSQL's deparser;
    -- and the source columns it reads (src/totals.rs).
    ('_total_filter', 'source regclass, filter text', 'text', 'STRICT STABLE', 'integrity_total_filter', NULL),
    ('_total_filter_columns', 'source regclass, filter text', 'text[]', 'STRICT STABLE',
     'integrity_total_filter_columns', NULL),

    -- The top-level AND-ed terms of a stored expression over relation's
    -- columns (pg_index.indpred, say), read from its node tree
    -- (src/predicates.rs): nested ANDs flattened, each term deparsed as
    -- pg_get_expr does (on one line) and without the parentheses that enclose
    -- it: '(a IS NULL) AND ((b = 1) OR (c = 2))' gives {'a IS NULL',
    -- '(b = 1) OR (c = 2)'}, whatever the literals hold.
    ('_conjuncts', 'expr pg_node_tree, relation oid', 'text[]', 'STABLE STRICT', 'integrity_conjuncts', NULL),

    -- Refusal counting (src/refusals.rs), in shared memory with pg_integrity
    -- in shared_preload_libraries: the counters, a reset, and the refusals
    -- that found every counter in use (NULL without the preload).
    ('_refusal_counters', '',
     'TABLE (table_oid oid, guard text, sqlstate text, refusals bigint, first_at timestamptz, '
     'last_at timestamptz, last_role text, last_detail text)',
     NULL, 'refusal_counters_wrapper', NULL),
    ('reset_refusals', '', 'void', NULL, 'reset_refusal_counters_wrapper',
     'Forgets every refusal counter (of every database). Superusers, and roles granted EXECUTE on it.'),
    ('_refusals_dropped', '', 'bigint', NULL, 'refusals_dropped_wrapper', NULL)
  ) AS f(name, arguments, result, attributes, symbol, description)
$$;

CREATE OR REPLACE FUNCTION integrity.health()
RETURNS TABLE (severity text, table_name regclass, guard text, problem text, remedy text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
-- The catalog query is small but its estimates are not: without this, JIT
-- compilation would take seconds.
SET jit = off
AS $$
WITH registered AS (
    SELECT r.table_name AS tbl, r.guard, r.columns, r.options, c.relkind,
           CASE WHEN r.guard = 'ledger_credit' THEN integrity._relation(r.options ->> 'accounts') END AS accounts
      FROM integrity.guard_registry r
      LEFT JOIN pg_catalog.pg_class c ON c.oid = r.table_name
),
-- Every column a registered guard reads, with the relation it is read from.
guard_columns AS (
    SELECT r.tbl, r.guard, u.rel, u.col, u.n,
           EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = u.rel AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped) AS present
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_columns(r.tbl, r.guard, r.columns, r.options) u
     WHERE r.relkind IS NOT NULL AND u.col IS NOT NULL
),
-- Registry rows whose triggers can be checked: the table, the accounts table
-- and every column are there.
sound AS (
    SELECT r.*
      FROM registered r
     WHERE r.relkind IS NOT NULL
       AND (r.guard <> 'ledger_credit' OR r.accounts IS NOT NULL)
       AND NOT EXISTS (SELECT FROM guard_columns gc
                        WHERE gc.tbl = r.tbl AND gc.guard = r.guard AND NOT gc.present)
),
-- The triggers each registered guard needs, on the table and on every
-- partition (row triggers as clones, TRUNCATE triggers of their own).
expected AS (
    SELECT r.tbl, r.guard, r.columns, r.options, m.rel,
           g.trigger_name, g.function_name, g.tgtype, g.mode, g.per_partition, g.has_when
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
     WHERE r.relkind IS NOT NULL
       AND NOT (g.recheck AND NOT integrity._needs_recheck(r.tbl, r.guard))
       AND NOT (g.trigger_name = 'integrity_append_only_truncate'
                AND coalesce((r.options ->> 'allow_truncate')::boolean, false))
),
found AS (
    SELECT e.*, t.oid AS tgoid, t.tgenabled, t.tgtype AS actual_tgtype, t.tgargs,
           t.tgqual IS NOT NULL AS actual_has_when,
           t.tgfoid::regprocedure AS actual_function,
           coalesce(p.proname = e.function_name AND n.nspname = 'integrity', false) AS own_function,
           format('trigger %s of the %s guard', e.trigger_name, e.guard)
           || CASE WHEN e.rel = e.tbl THEN '' ELSE format(' on partition %s of %s', e.rel, e.tbl) END AS what
      FROM expected e
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = e.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE (e.tbl, e.guard) IN (SELECT s.tbl, s.guard FROM sound s)
),
-- One ALTER TABLE per relation that puts every guard trigger on it that is
-- disabled or in the wrong mode back in its mode.
relation_fix AS (
    SELECT f.rel, integrity._enable_triggers_sql(f.rel, array_agg(f.trigger_name), array_agg(f.mode)) AS fix
      FROM found f
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
     GROUP BY f.rel
),
-- The same for a whole partition tree, followed by a space ('' when none).
tree_fix AS (
    SELECT r.tbl, coalesce(string_agg(rf.fix || ' ', '' ORDER BY rf.rel::text COLLATE "C"), '') AS fix
      FROM (SELECT DISTINCT rr.tbl FROM registered rr WHERE rr.relkind IS NOT NULL) r
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
      LEFT JOIN relation_fix rf ON rf.rel = m.rel
     GROUP BY r.tbl
),
-- The registration of each guard, after the mode fixes of its table.
registration AS (
    SELECT r.tbl, r.guard, tf.fix,
           tf.fix || integrity._registration_sql(r.tbl, r.guard, r.columns, r.options) AS sql
      FROM registered r
      JOIN tree_fix tf ON tf.tbl = r.tbl
),
-- Triggers that carry a guard trigger's name but that no registered guard needs.
stray AS (
    SELECT t.tgrelid::regclass AS rel, t.tgname, g.guard,
           (SELECT rg.sql
              FROM registration rg
             WHERE rg.guard = g.guard
               AND (rg.tbl = t.tgrelid
                    OR rg.tbl IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(t.tgrelid) a))
             LIMIT 1) AS registration
      FROM pg_catalog.pg_trigger t
      JOIN (SELECT DISTINCT k.trigger_name, k.guard FROM integrity._guard_triggers(NULL) k) g
        ON g.trigger_name = t.tgname
     WHERE t.tgparentid = 0
       AND NOT EXISTS (SELECT FROM expected e WHERE e.rel = t.tgrelid AND e.trigger_name = t.tgname)
),
-- step orders the problems of one table: registry rows that must go (1),
-- guards re-registered with the columns they have left (2), the rest (3).
problems (severity, table_name, guard, step, problem, remedy) AS (
    -- The registry outlived the table.
    SELECT 'error', r.tbl, r.guard, 1,
           format('the %s guard is registered for a table that no longer exists (OID %s)', r.guard, r.tbl::oid),
           format('DELETE FROM integrity.guard_registry WHERE table_name::oid = %s AND guard = %L;', r.tbl::oid, r.guard)
      FROM registered r
     WHERE r.relkind IS NULL
    UNION ALL
    -- A debit or credit value that is no value of the entry type column any
    -- more (an enum label renamed): every entry is refused as of no known type.
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s %L of the ledger_credit guard is no value of column "%s": %s; remove the guard and register'
                  ' it again with values of the column', v.argument, v.value, r.options ->> 'entry_type_column',
                  p.problem),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     CROSS JOIN LATERAL (VALUES ('debit_value', r.options ->> 'debit_value'),
                                ('credit_value', r.options ->> 'credit_value')) AS v(argument, value)
     CROSS JOIN LATERAL (SELECT integrity._entry_value_problem(r.tbl, r.options ->> 'entry_type_column', v.value)
                          WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit') AS p(problem)
     WHERE p.problem IS NOT NULL
    UNION ALL
    -- Inheritance children, which the guards do not cover (the event trigger
    -- refuses new ones; these are older, or made while it was disabled).
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s inherits from %s, which has the %s guard: guards cover partitions, not inheritance'
                  ' children, yet UPDATE, DELETE and TRUNCATE of %s reach its rows', child, r.tbl, r.guard, r.tbl),
           format('ALTER TABLE %s NO INHERIT %s;', child, r.tbl)
      FROM registered r
     CROSS JOIN LATERAL integrity._inheritance_children(r.tbl) AS child
     WHERE r.relkind IS NOT NULL
    UNION ALL
    SELECT 'error', r.tbl, r.guard, 1,
           format('accounts table %s of the ledger_credit guard no longer exists (dropped or renamed):'
                  ' remove the guard, then register it again with the accounts table as it is now',
                  r.options ->> 'accounts'),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit' AND r.accounts IS NULL
    UNION ALL
    -- A registered column is gone (renamed or dropped while the event
    -- trigger was not watching).  A column guard is registered again with
    -- the columns it has left; other guards are removed.
    SELECT 'error', gc.rel, gc.guard, CASE WHEN left_over.columns IS NULL THEN 1 ELSE 2 END,
           format('column "%s" of %s, registered for the %s guard%s, no longer exists (renamed or dropped): %s',
                  gc.col, gc.rel, gc.guard, CASE WHEN gc.rel <> gc.tbl THEN format(' of %s', gc.tbl) ELSE '' END,
                  CASE WHEN left_over.columns IS NOT NULL
                       THEN 'the guard is registered again with the columns it has left; add the new name of a renamed column'
                       ELSE 'remove the guard, then register it again with the columns as they are now' END),
           CASE WHEN left_over.columns IS NOT NULL
                THEN format('BEGIN; %s %s%s COMMIT;', integrity._unprotect_sql(gc.tbl, gc.guard), tf.fix,
                            integrity._registration_sql(gc.tbl, gc.guard, left_over.columns, '{}'))
                ELSE integrity._unprotect_sql(gc.tbl, gc.guard) END
      FROM guard_columns gc
      JOIN tree_fix tf ON tf.tbl = gc.tbl
     CROSS JOIN LATERAL (SELECT array_agg(o.col ORDER BY o.n) AS columns
                           FROM guard_columns o
                          WHERE o.tbl = gc.tbl AND o.guard = gc.guard AND o.present
                            AND gc.guard IN ('immutable', 'write_once')) left_over
     WHERE NOT gc.present
    UNION ALL
    -- Guard triggers: missing, replaced, disabled, in the wrong mode.
    SELECT 'error', f.rel, f.guard, 3,
           CASE WHEN f.rel = f.tbl THEN format('trigger %s of the %s guard is missing', f.trigger_name, f.guard)
                ELSE format('partition %s of %s is not covered: trigger %s of the %s guard is missing',
                            f.rel, f.tbl, f.trigger_name, f.guard) END,
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NULL
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it runs %s %s, not integrity.%s() %s', f.what,
                  f.actual_function, integrity._tgtype_text(f.actual_tgtype), f.function_name,
                  integrity._tgtype_text(f.tgtype)),
           -- CREATE OR REPLACE TRIGGER repairs a row trigger; TRUNCATE triggers
           -- are only created where missing, so the guard is put back whole.
           CASE WHEN f.per_partition
                THEN format('BEGIN; %s%s %s COMMIT;', rg.fix, integrity._unprotect_sql(f.tbl, f.guard),
                            integrity._registration_sql(f.tbl, f.guard, f.columns, f.options))
                ELSE rg.sql END
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND (NOT f.own_function OR f.actual_tgtype <> f.tgtype)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: its arguments differ from the registered ones', f.what),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs <> integrity._trigger_args(f.trigger_name, f.columns, f.options)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it %s', f.what,
                  CASE WHEN f.actual_has_when THEN 'has a WHEN clause, which can keep it from firing'
                       ELSE 'lacks its WHEN clause' END),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs = integrity._trigger_args(f.trigger_name, f.columns, f.options)
       AND f.actual_has_when <> f.has_when
    UNION ALL
    SELECT CASE WHEN f.mode = 'O' AND f.tgenabled = 'A' THEN 'warning' ELSE 'error' END,
           f.rel, f.guard, 3,
           format('%s is %s', f.what,
                  CASE WHEN f.tgenabled = 'D' THEN 'disabled: the guard is not enforced'
                       WHEN f.mode = 'A' AND f.tgenabled = 'O'
                            THEN 'ENABLE (origin only), not ENABLE ALWAYS: sessions with session_replication_role = replica skip it'
                       WHEN f.tgenabled = 'R'
                            THEN format('ENABLE REPLICA, not %s: ordinary sessions skip it',
                                        CASE f.mode WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END)
                       ELSE 'ENABLE ALWAYS, not ENABLE (origin only): it also fires for rows that logical replication applies, which their origin already processed'
                  END),
           rf.fix
      FROM found f
      JOIN relation_fix rf ON rf.rel = f.rel
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
    UNION ALL
    -- Guard triggers that no registered guard needs.
    SELECT CASE WHEN s.registration IS NULL THEN 'warning' ELSE 'info' END, s.rel, s.guard, 3,
           CASE WHEN s.registration IS NULL
                THEN format('trigger %s of the %s guard is on a table the registry has no %s guard for'
                            ' (registry row deleted, or a partition detached from a guarded table): unprotect'
                            ' removes it; registering the guard again keeps it', s.tgname, s.guard, s.guard)
                ELSE format('trigger %s is not part of the %s guard as registered', s.tgname, s.guard) END,
           coalesce(s.registration, integrity._unprotect_sql(s.rel, s.guard))
      FROM stray s
    UNION ALL
    -- A guard function under a name the extension does not manage (a renamed guard trigger).
    SELECT 'warning', t.tgrelid::regclass, min(g.guard), 3,
           format('trigger %s runs guard function integrity.%s() under a name pg_integrity does not manage:'
                  ' neither the registry nor the event triggers watch it', t.tgname, p.proname),
           format('DROP TRIGGER %I ON %s;', t.tgname, t.tgrelid::regclass)
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
      JOIN integrity._guard_triggers(NULL) g ON g.function_name = p.proname
     WHERE t.tgparentid = 0
       AND t.tgname NOT IN (SELECT k.trigger_name FROM integrity._guard_triggers(NULL) k)
     GROUP BY t.tgrelid, t.tgname, p.proname
    UNION ALL
    -- Guarded tables without a primary key.
    SELECT 'warning', r.tbl, NULL, 3,
           format('guarded table %s has no primary key: guard errors and violations() cannot name its rows'
                  ' by a stable key', r.tbl),
           tf.fix
           || CASE WHEN r.relkind = 'r' AND candidate.index_name IS NOT NULL
                   THEN format('ALTER TABLE %s ADD PRIMARY KEY USING INDEX %I;', r.tbl, candidate.index_name)
                   ELSE format('ALTER TABLE %s ADD PRIMARY KEY (%s);', r.tbl,
                               coalesce(candidate.key_columns, '<columns that identify a row>')) END
      FROM (SELECT DISTINCT rr.tbl, rr.relkind FROM registered rr WHERE rr.relkind IS NOT NULL) r
      JOIN tree_fix tf ON tf.tbl = r.tbl
      LEFT JOIN LATERAL (
            -- a valid, unique, non-partial index on NOT NULL columns
            SELECT ic.relname AS index_name,
                   (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS key_columns
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = r.tbl AND i.indisunique AND i.indisvalid AND i.indimmediate
               AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = i.indnatts
               AND NOT EXISTS (SELECT FROM unnest(i.indkey::int2[]) AS k(attnum)
                                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                                WHERE NOT a.attnotnull)
             ORDER BY i.indnatts, ic.relname
             LIMIT 1) candidate ON true
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint con WHERE con.conrelid = r.tbl AND con.contype = 'p')
    UNION ALL
    -- The extension's event triggers: missing, disabled, or not ENABLE ALWAYS.
    SELECT CASE WHEN e.evtenabled = 'O' THEN 'warning' ELSE 'error' END, NULL, NULL, 1,
           format('event trigger %s %s%s', v.evtname,
                  CASE WHEN e.oid IS NULL THEN 'is missing: '
                       WHEN e.evtenabled = 'D' THEN 'is disabled: '
                       WHEN e.evtenabled = 'O' THEN 'is ENABLE (origin only), not ENABLE ALWAYS: in sessions with session_replication_role = replica, '
                       ELSE 'is ENABLE REPLICA, not ENABLE ALWAYS: in ordinary sessions, ' END,
                  v.consequence),
           CASE WHEN e.oid IS NULL
                THEN integrity._event_trigger_sql(v.evtname)
                     || format(' ALTER EXTENSION pg_integrity ADD EVENT TRIGGER %I;', v.evtname)
                ELSE format('ALTER EVENT TRIGGER %I ENABLE ALWAYS;', v.evtname) END
      FROM integrity._event_triggers() v
      LEFT JOIN pg_catalog.pg_event_trigger e ON e.evtname = v.evtname
     WHERE e.oid IS NULL OR e.evtenabled <> 'A'
    UNION ALL
    -- The triggers that keep the lifecycle events append-only: missing,
    -- replaced, disabled or skipped under session_replication_role = replica.
    SELECT 'error', e.rel, 'lifecycle', 1,
           format('trigger %s of %s is %s', l.trigger_name, e.rel,
                  CASE WHEN t.oid IS NULL THEN 'missing: events can be changed or removed'
                       WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                            OR t.tgtype <> l.tgtype
                            THEN format('replaced: it runs %s %s', t.tgfoid::regprocedure, integrity._tgtype_text(t.tgtype))
                       WHEN t.tgenabled = 'D' THEN 'disabled: events can be changed or removed'
                       ELSE 'not ENABLE ALWAYS: sessions with session_replication_role = replica can change or remove events' END),
           CASE WHEN t.oid IS NULL THEN l.create_sql
                WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                     OR t.tgtype <> l.tgtype
                     THEN format('DROP TRIGGER %I ON %s; %s', l.trigger_name, e.rel, l.create_sql)
                ELSE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I;', e.rel, l.trigger_name) END
      FROM (SELECT integrity._relation('integrity.lifecycle_events') AS rel) e
     CROSS JOIN integrity._lifecycle_events_triggers() l
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = l.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE e.rel IS NOT NULL
       AND (t.oid IS NULL OR t.tgenabled <> 'A' OR t.tgtype <> l.tgtype
            OR NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false))
    UNION ALL
    -- The compiled guard functions: replaced by other code, or gone.  What
    -- they should be, and the remedy, is their declaration.
    SELECT 'error', NULL, min(g.guard), 1,
           CASE WHEN min(p.oid::int8) IS NULL
                THEN format('guard function integrity.%s() is missing', g.function_name)
                ELSE format('guard function integrity.%s() is not the extension''s compiled code any more'
                            ' (it is %s)', g.function_name,
                            CASE WHEN min(l.lanname) = 'c' THEN format('symbol %s of %s', min(p.prosrc), min(p.probin))
                                 ELSE 'LANGUAGE ' || min(l.lanname) END) END,
           'CREATE OR REPLACE ' || c.declaration || ';'
           || CASE WHEN min(p.oid::int8) IS NULL
                   THEN concat(' ' || c.comment_sql || ';',
                               format(' ALTER EXTENSION pg_integrity ADD FUNCTION integrity.%I(%s);', c.name, c.arguments))
                   ELSE '' END
      FROM integrity._guard_triggers(NULL) g
      JOIN integrity._compiled_functions() c ON c.name = g.function_name
      LEFT JOIN (pg_catalog.pg_proc p
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
                 JOIN pg_catalog.pg_language l ON l.oid = p.prolang)
             ON p.proname = g.function_name AND p.pronargs = 0
     GROUP BY g.function_name, c.name, c.arguments, c.symbol, c.declaration, c.comment_sql
    HAVING min(p.oid::int8) IS NULL
        OR bool_or(l.lanname <> 'c' OR p.probin NOT IN ('pg_integrity', '$libdir/pg_integrity')
                   OR p.prosrc <> c.symbol)
    UNION ALL
    -- A maintained total's triggers on its sources: missing or disabled, the
    -- total is no longer maintained (registering it again puts them back); a
    -- source that is gone leaves the total behind.
    SELECT 'error', r.tbl, r.guard, 3,
           CASE WHEN x.source IS NULL
                THEN format('source table %s of the total of column "%s" no longer exists: remove the totals,'
                            ' then register them again with the tables as they are now', x.source_name, x.col)
                ELSE format('trigger %s of the total of column "%s" on %s is %s: the total is not maintained',
                            x.tgname, x.col, x.source, CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'disabled' END) END,
           CASE WHEN x.source IS NULL THEN integrity._unprotect_sql(r.tbl, r.guard)
                ELSE integrity._registration_sql(r.tbl, r.guard, r.columns, r.options) END
      FROM registered r
     CROSS JOIN LATERAL (SELECT tt ->> 'column' AS col, tt ->> 'source' AS source_name,
                                integrity._relation(tt ->> 'source') AS source,
                                (integrity._total_trigger_base(r.options ->> 'name', tt ->> 'column') || f.suffix)::name AS tgname
                           FROM pg_catalog.jsonb_array_elements(r.options -> 'totals') AS tt
                          CROSS JOIN (VALUES (''), ('_apply'), ('_truncate')) AS f(suffix)) x
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = x.source AND t.tgname = x.tgname
     WHERE r.guard = 'total' AND r.relkind IS NOT NULL
       AND (x.source IS NULL OR t.oid IS NULL OR t.tgenabled = 'D')
       AND (x.source IS NOT NULL OR x.tgname LIKE '%\_apply')
    UNION ALL
    -- Refused writes are counted (integrity.refusals) only with the preload.
    SELECT 'info', NULL, NULL, 1,
           'refused writes are not counted (integrity.refusals, LISTEN integrity_refusals): '
           'pg_integrity is not in shared_preload_libraries',
           pg_catalog.format('ALTER SYSTEM SET shared_preload_libraries = %L; -- then restart the server',
                             pg_catalog.concat_ws(', ', NULLIF(pg_catalog.current_setting('shared_preload_libraries'), ''),
                                                  'pg_integrity'))
     WHERE integrity._refusals_dropped() IS NULL
    UNION ALL
    SELECT 'warning', NULL, NULL, 1,
           pg_catalog.format('%s refused writes were not counted: all %s refusal counters are in use', d,
                             pg_catalog.current_setting('pg_integrity.max_refusal_entries')),
           'SELECT integrity.reset_refusals(); -- or raise pg_integrity.max_refusal_entries, then restart the server'
      FROM integrity._refusals_dropped() AS d
     WHERE d > 0
)
SELECT p.severity, p.table_name, p.guard, p.problem, p.remedy
  FROM problems p
 ORDER BY CASE p.severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          p.table_name::text COLLATE "C" NULLS FIRST, p.step, p.guard COLLATE "C" NULLS FIRST, p.problem COLLATE "C"
$$;
-- ==== end issue 16: compiled functions declared once ====

-- ==== soft delete performance ====

-- The soft delete of a row of a table without cascading foreign keys is a
-- plain UPDATE without RETURNING.
CREATE OR REPLACE FUNCTION integrity._soft_delete_statement(rel regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN parents.present IS NULL AND children.deletes IS NULL
                THEN format('UPDATE ONLY %s AS t SET %s WHERE t.ctid OPERATOR(pg_catalog.=) $1', rel, g.set_list)
                ELSE format('WITH parents AS (SELECT %s AS present FROM ONLY %s AS c WHERE c.ctid = $1),'
                            ' deleted AS (UPDATE ONLY %s AS t SET %s FROM parents WHERE t.ctid = $1 AND parents.present'
                            ' RETURNING t.*)%s'
                            ' SELECT NOT present FROM parents',
                            coalesce(parents.present, 'true'), rel, rel, g.set_list, coalesce(children.deletes, ''))
           END
      FROM (SELECT s.registered,
                   integrity._soft_delete_set_sql(s.deleted_column, s.flag_column, true) AS set_list
              FROM integrity._soft_delete_of(rel) s) g
     CROSS JOIN LATERAL (
            -- MATCH SIMPLE: a key with a NULL references nothing.
            SELECT string_agg(format('(%s OR EXISTS (SELECT FROM %s AS p WHERE %s))',
                                     (SELECT string_agg(format('c.%I IS NULL', col), ' OR ')
                                        FROM unnest(k.child_columns) AS col),
                                     k.parent, integrity._references_sql('c', k.child_columns, k.parent_columns)),
                              ' AND ' ORDER BY k.parent::text, k.child_columns) AS present
              FROM integrity._foreign_keys() k
             WHERE k.child = g.registered AND k.cascades) parents
     CROSS JOIN LATERAL (
            SELECT string_agg(format(', cascade_%s AS (DELETE FROM %s AS c USING deleted AS p WHERE %s AND c.%I IS NULL)',
                                     k.n, k.child, integrity._references_sql('c', k.child_columns, k.parent_columns),
                                     s.deleted_column),
                              '' ORDER BY k.n) AS deletes
              FROM (SELECT k.*, row_number() OVER (ORDER BY k.child::text, k.child_columns) AS n
                      FROM integrity._foreign_keys() k
                     WHERE k.parent = g.registered AND k.cascades) k
             CROSS JOIN LATERAL integrity._soft_delete_of(k.child) s
             WHERE s.registered = k.child) children
$$;

-- ==== end soft delete performance ====

-- ==== issue 10: lifecycle statements on tables with a column named t ====
-- The whole row is (t.*)::rel: a bare t was the column of that name.
CREATE OR REPLACE FUNCTION integrity._lifecycle_statement(rel regclass, operation text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('INSERT INTO integrity.lifecycle_events (table_name, row_key, operation, changes, actor) ')
           || CASE operation
              WHEN 'UPDATE' THEN
                  format('SELECT %1$L, n.row_key, ''UPDATE'', %3$s, (SELECT pg_catalog.pg_get_userbyid($1))'
                         ' FROM (SELECT pg_catalog.row_number() OVER () AS pair, (t.*)::%2$s AS r FROM old_rows t) AS o'
                         ' JOIN (SELECT pg_catalog.row_number() OVER () AS pair, (t.*)::%2$s AS r, %4$s AS row_key'
                         ' FROM new_rows t) AS n ON o.pair = n.pair'
                         ' CROSS JOIN LATERAL (SELECT (o.r).*) AS old CROSS JOIN LATERAL (SELECT (n.r).*) AS new'
                         ' WHERE %5$s',
                         l.tracked_table::text, rel,
                         (SELECT string_agg(format('CASE WHEN %s THEN pg_catalog.jsonb_build_object(%L,'
                                                   ' pg_catalog.jsonb_build_object(''old'', %s, ''new'', %s))'
                                                   ' ELSE ''{}''::pg_catalog.jsonb END',
                                                   integrity._changed_sql(l.tracked_table, c), c,
                                                   integrity._lifecycle_value_sql(l.tracked_table, c, 'OLD'),
                                                   integrity._lifecycle_value_sql(l.tracked_table, c, 'NEW')),
                                            ' || ' ORDER BY n)
                            FROM unnest(l.tracked) WITH ORDINALITY AS u(c, n)),
                         integrity._lifecycle_key_sql(l.tracked_table, 't'),
                         (SELECT string_agg(integrity._changed_sql(l.tracked_table, c), ' OR ')
                            FROM unnest(l.tracked) AS c))
              ELSE
                  format('SELECT %L, %s, %L, %s, (SELECT pg_catalog.pg_get_userbyid($1)) FROM %s t',
                         l.tracked_table::text, integrity._lifecycle_key_sql(l.tracked_table, 't'), operation,
                         integrity._jsonb_object_sql(l.tracked,
                             ARRAY(SELECT format('pg_catalog.jsonb_build_object(%L, %s)', s.side,
                                                 integrity._lifecycle_value_sql(l.tracked_table, c, 't'))
                                     FROM unnest(l.tracked) WITH ORDINALITY AS u(c, n) ORDER BY n)),
                         CASE operation WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
              END
      FROM integrity._lifecycle_of(rel) l
     CROSS JOIN (SELECT CASE operation WHEN 'INSERT' THEN 'new' ELSE 'old' END) AS s(side)
     WHERE operation IN ('INSERT', 'UPDATE', 'DELETE') AND cardinality(l.tracked) > 0
$$;
-- ==== end issue 10: lifecycle statements ====

-- ==== issue 10: restore() and hard_delete() of a row with a key of several columns ====
CREATE FUNCTION integrity._key_filter(tbl regclass, id anyelement, caller text, OUT filter text, OUT key text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_columns text[] := integrity._key_columns(tbl);
    given jsonb;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = tbl AND i.indisprimary) THEN
        RAISE EXCEPTION '%: table % has no primary key', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The id argument is a value of the primary key.';
    END IF;
    IF pg_typeof(id) <> 'jsonb'::regtype THEN
        IF cardinality(key_columns) > 1 THEN
            RAISE EXCEPTION '%: table % has a primary key of % columns', caller, tbl, cardinality(key_columns)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Pass the key as a jsonb object: %s.',
                                    (SELECT jsonb_object_agg(k, '…') FROM unnest(key_columns) AS k));
        END IF;
        filter := format('t.%I = %L::%s', key_columns[1], id, pg_typeof(id));
        key := format('%s = %s', key_columns[1], id);
        RETURN;
    END IF;
    given := id::text::jsonb;
    IF jsonb_typeof(given) <> 'object'
       OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(given) AS k)
          IS DISTINCT FROM (SELECT array_agg(k ORDER BY k) FROM unnest(key_columns) AS k)
       OR EXISTS (SELECT FROM unnest(key_columns) AS k WHERE given ->> k IS NULL) THEN
        RAISE EXCEPTION '%: id % does not name the primary key of table %', caller, given, tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A jsonb id is an object of every key column, none NULL: %s.',
                                (SELECT jsonb_object_agg(k, '…') FROM unnest(key_columns) AS k));
    END IF;
    SELECT string_agg(format('t.%I = %L::%s', k, given ->> k, integrity._column_type(tbl, k)), ' AND ' ORDER BY n),
           format('(%s) = (%s)', string_agg(k, ', ' ORDER BY n), string_agg(given ->> k, ', ' ORDER BY n))
      INTO filter, key
      FROM unnest(key_columns) WITH ORDINALITY AS u(k, n);
END;
$$;

CREATE OR REPLACE FUNCTION integrity.restore(tbl regclass, id anyelement)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guard record;
    target record;
    deleted_at text;
    found_rows bigint;
BEGIN
    SELECT * INTO guard FROM integrity._require_soft_delete(tbl, 'restore');
    PERFORM integrity._require_argument(id, 'id', 'restore');
    target := integrity._key_filter(tbl, id, 'restore');
    EXECUTE format('SELECT t.%I::text FROM %s AS t WHERE %s FOR UPDATE', guard.deleted_column, tbl, target.filter)
       INTO deleted_at;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF found_rows = 0 THEN
        RAISE EXCEPTION 'restore: no row of table % has %', tbl, target.key
            USING ERRCODE = 'no_data_found';
    END IF;
    IF deleted_at IS NULL THEN
        RETURN false;
    END IF;
    -- A live row that took the restored row's place under a partial unique
    -- index makes the UPDATE fail with 23505, naming the index and the key;
    -- the rows restored before it are rolled back with it.
    RETURN integrity._restore_rows(tbl, target.filter, deleted_at) > 0;
END;
$$;

CREATE OR REPLACE FUNCTION integrity.hard_delete(tbl regclass, id anyelement)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target record;
BEGIN
    PERFORM integrity._require_soft_delete(tbl, 'hard_delete');
    PERFORM integrity._require_argument(id, 'id', 'hard_delete');
    target := integrity._key_filter(tbl, id, 'hard_delete');
    PERFORM integrity._require_owner(tbl, 'delete its rows for good');
    IF integrity._execute_sanctioned(tbl, format('DELETE FROM %s AS t WHERE %s', tbl, target.filter)) = 0 THEN
        RAISE EXCEPTION 'hard_delete: no row of table % has %', tbl, target.key
            USING ERRCODE = 'no_data_found';
    END IF;
END;
$$;

DROP FUNCTION integrity._single_key(regclass, text);
-- ==== end issue 10: restore() and hard_delete() ====

-- ==== issue 11: a partition of a hash-chained ledger past the retention can be detached or dropped ====
-- _expired_partition() no longer answers false for chained tables;
-- _release_partition() checks that the partition starts its chains and moves
-- their anchors (the statement shared with purge_expired(), _chain_anchor_sql());
-- _refuse_detach() takes whether the detach is CONCURRENTLY, and writes.
COMMENT ON TABLE integrity.chain_anchors IS
    'Where each purged hash chain starts: the sequence number and hash of its last purged row. Written by purge_expired() and by the detach or drop of a partition past the retention.';
-- The statement that moves the anchors of chained table tbl's chains to the
-- last of the rows that source (a table, or a WITH query, read as t) holds
-- of each: run by purge_expired() on the rows it deletes, and for a
-- partition that is detached or dropped, before its rows are gone.  An
-- anchor only moves forward.
CREATE FUNCTION integrity._chain_anchor_sql(tbl regclass, source text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('INSERT INTO integrity.chain_anchors AS a (table_name, chain, seq, hash)'
                  ' SELECT DISTINCT ON (2) %1$L::pg_catalog.regclass, %2$s, t.%3$I, t.%4$I FROM %5$s AS t ORDER BY 2, 3 DESC'
                  ' ON CONFLICT (table_name, chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,'
                  ' purged_at = pg_catalog.now() WHERE a.seq < excluded.seq',
                  c.chained::oid, integrity._chain_values_sql(c.chained, c.chain_columns, 't'), c.seq_column,
                  c.hash_column, source)
      FROM integrity._chain_of(tbl) c
     WHERE c.chained = tbl
$$;

-- Whether partition part of an append-only table (partitioned by range on
-- its time column) holds only rows past the retention: its upper bound is
-- not later than the cutoff.
CREATE OR REPLACE FUNCTION integrity._expired_partition(part regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent regclass := (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = part);
    retention record;
    upper_bound text;
    expired boolean;
BEGIN
    SELECT * INTO retention FROM integrity._retention_of(parent);
    IF NOT FOUND
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_partitioned_table p
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                      WHERE p.partrelid = parent AND p.partstrat = 'r' AND p.partnatts = 1
                        AND a.attname = retention.time_column) THEN
        RETURN false;
    END IF;
    upper_bound := substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM ' TO \((.*)\)$')
      FROM pg_catalog.pg_class c WHERE c.oid = part;
    IF upper_bound IS NULL OR upper_bound = 'MAXVALUE' THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT %s::%s <= %L::%s', upper_bound, retention.time_type, now() - retention.keep,
                   retention.time_type)
       INTO expired;
    RETURN expired;
END;
$$;

-- Whether partition part of an append-only table may be detached or dropped
-- (action): it holds only rows past the retention and, on a hash-chained
-- table, the first rows of every chain it has rows of, all of them chained.
-- Then the anchors of those chains move to its last rows, as purge_expired()
-- moves them, before the rows are gone: the chains still verify, and a
-- detached partition keeps the rows with their hashes.  Called by the
-- ddl_command_start event trigger; a chained partition that is not the start
-- of its chains is refused (55000).  The chained table down to the partition
-- is locked first, top-down as an INSERT locks it, so that no row joins a
-- chain between the check and the command.  Earlier partitions that the same
-- command drops are behind the anchors already.
CREATE FUNCTION integrity._release_partition(part regclass, action text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    rel record;
    row_key jsonb;
    chain jsonb;
    outside bigint;
    inside bigint;
    last_rows text;
    refusal text;
BEGIN
    IF NOT integrity._expired_partition(part) THEN
        RETURN false;
    END IF;
    SELECT * INTO c FROM integrity._chain_of(part);
    IF NOT FOUND THEN
        RETURN true;
    END IF;
    PERFORM integrity._require_owner(c.chained, format('%s partition %s, which moves the anchors of its chains',
                                                       action, part));
    FOR rel IN
        SELECT a.relid, a.n FROM pg_catalog.pg_partition_ancestors(part) WITH ORDINALITY AS a(relid, n)
         WHERE a.n <= (SELECT b.n FROM pg_catalog.pg_partition_ancestors(part) WITH ORDINALITY AS b(relid, n)
                        WHERE b.relid = c.chained)
         ORDER BY a.n DESC
    LOOP
        EXECUTE format('LOCK TABLE %s%s IN ACCESS EXCLUSIVE MODE', CASE WHEN rel.n > 1 THEN 'ONLY ' END, rel.relid);
    END LOOP;

    EXECUTE format('SELECT %s FROM %s AS t WHERE t.%I IS NULL OR t.%I IS NULL LIMIT 1',
                   integrity._row_key_sql(c.chained), part, c.seq_column, c.hash_column)
       INTO row_key;
    IF row_key IS NOT NULL THEN
        refusal := format('Row %s in it is not chained: it was inserted while the chain trigger did not run.',
                          row_key);
    ELSE
        -- The last row of each chain in the partition, found by the chain
        -- columns (in the order of the chain index: no sort of the partition).
        last_rows := format('(SELECT DISTINCT ON (%1$s) t.* FROM %2$s AS t ORDER BY %1$s, t.%3$I DESC)',
                            coalesce((SELECT string_agg(format('t.%I', col), ', ') FROM unnest(c.chain_columns) AS col),
                                     integrity._chain_values_sql(c.chained, c.chain_columns, 't')),
                            part, c.seq_column);
        -- The first chain whose rows outside the partition (and past its
        -- anchor) start before the partition's last row.
        EXECUTE format('SELECT %1$s, l.%2$I, m.%2$I FROM %3$s AS m'
                       '  LEFT JOIN integrity.chain_anchors AS a'
                       '    ON a.table_name = %4$L::pg_catalog.regclass AND a.chain = %1$s'
                       ' CROSS JOIN LATERAL (SELECT l.%2$I FROM %5$s AS l WHERE %6$s AND l.%2$I < m.%2$I'
                       '                        AND l.%2$I > coalesce(a.seq, 0) AND l.tableoid <> ALL ($1)'
                       '                      ORDER BY l.%2$I LIMIT 1) AS l'
                       ' ORDER BY 1 LIMIT 1',
                       integrity._chain_values_sql(c.chained, c.chain_columns, 'm'), c.seq_column, last_rows,
                       c.chained::oid, c.chained,
                       coalesce((SELECT string_agg(format('l.%1$I = m.%1$I', col), ' AND ')
                                   FROM unnest(c.chain_columns) AS col), 'true'))
           INTO chain, outside, inside
          USING ARRAY(SELECT t.relid::oid FROM pg_catalog.pg_partition_tree(part) t);
        IF chain IS NOT NULL THEN
            refusal := format('Chain %s has row %s outside it, before its row %s: without the partition the chain'
                              ' would have a gap.', chain, outside, inside);
        END IF;
    END IF;
    IF refusal IS NOT NULL THEN
        SELECT n.nspname, g.relname, p.relname AS part_name INTO rel
          FROM pg_catalog.pg_class g
          JOIN pg_catalog.pg_namespace n ON n.oid = g.relnamespace
         CROSS JOIN pg_catalog.pg_class p
         WHERE g.oid = c.chained AND p.oid = part;
        RAISE EXCEPTION 'cannot % partition "%" of hash-chained table "%"', action, rel.part_name, c.chained
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = refusal,
                  HINT = format('Detach or drop the older partitions first, or remove the expired rows, which keeps'
                                ' the chains linked: SELECT integrity.purge_expired(%L);', c.chained::text),
                  SCHEMA = rel.nspname, TABLE = rel.relname;
    END IF;
    EXECUTE integrity._chain_anchor_sql(c.chained, last_rows);
    RETURN true;
END;
$$;

-- DETACH PARTITION of an append-only table: allowed for a partition past the
-- retention (_release_partition), refused (55000) otherwise.  A hash-chained
-- table's partition cannot be detached CONCURRENTLY: that commits in two
-- transactions, and its chains' anchors must move in the one that takes its
-- rows away.
DROP FUNCTION integrity._refuse_detach(regclass, regclass);
CREATE FUNCTION integrity._refuse_detach(parent regclass, part regclass, detach_concurrently boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := coalesce((SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = part), '?');
BEGIN
    IF detach_concurrently AND EXISTS (SELECT FROM integrity._chain_of(part)) THEN
        RAISE EXCEPTION 'cannot detach partition "%" of hash-chained table "%" concurrently', name,
                        (SELECT c.chained FROM integrity._chain_of(part) c)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A concurrent detach commits in two transactions; the anchors of the chains must move in the'
                           ' one that takes the rows away.',
                  HINT = format('Detach it without CONCURRENTLY: ALTER TABLE %s DETACH PARTITION %s;', parent, part);
    END IF;
    IF part IS NULL OR NOT integrity._release_partition(part, 'detach') THEN
        PERFORM integrity._refuse_history_ddl(parent, format('detach partition "%s"', name));
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION integrity.purge_expired(tbl regclass, archive regclass DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller constant text := 'purge_expired';
    chain record;
    expired text;
    purge text;
    mismatch text;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    expired := integrity._expired_sql(tbl, 't');
    IF expired IS NULL THEN
        RAISE EXCEPTION '%: table % has no retention', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Set one first, e.g. SELECT integrity.set_retention(%L, ''2 years'');', tbl::text);
    END IF;
    PERFORM integrity._require_owner(tbl, 'purge its rows');
    IF archive IS NOT NULL THEN
        IF archive = tbl OR archive IN (SELECT integrity._partition_tree(tbl)) THEN
            RAISE EXCEPTION '%: the archive must be another table than %', caller, tbl
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = archive) NOT IN ('r', 'p') THEN
            RAISE EXCEPTION '%: archive "%" is not a table', caller, archive
                USING ERRCODE = 'wrong_object_type';
        END IF;
        -- The archive has the table's columns, in the same order.
        SELECT format('column %s is %s in %s but %s in %s', coalesce(t.n, a.n),
                      CASE WHEN t.n IS NULL THEN 'missing' ELSE format('%I %s', t.attname, t.typ) END, tbl,
                      CASE WHEN a.n IS NULL THEN 'missing' ELSE format('%I %s', a.attname, a.typ) END, archive)
          INTO mismatch
          FROM (SELECT row_number() OVER (ORDER BY attnum) AS n, attname, format_type(atttypid, atttypmod) AS typ
                  FROM pg_catalog.pg_attribute WHERE attrelid = tbl AND attnum > 0 AND NOT attisdropped) t
          FULL JOIN (SELECT row_number() OVER (ORDER BY attnum) AS n, attname, format_type(atttypid, atttypmod) AS typ
                       FROM pg_catalog.pg_attribute WHERE attrelid = archive AND attnum > 0 AND NOT attisdropped) a
            ON a.n = t.n
         WHERE (t.attname, t.typ) IS DISTINCT FROM (a.attname, a.typ)
         ORDER BY coalesce(t.n, a.n)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION '%: archive % does not have the columns of %', caller, archive, tbl
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = initcap(left(mismatch, 1)) || substr(mismatch, 2) || '.';
        END IF;
    END IF;

    SELECT * INTO chain FROM integrity._chain_of(tbl) c WHERE c.chained = tbl;
    IF FOUND THEN
        -- A prefix of each chain: rows whose chain holds no younger row at or
        -- before them (all of its rows when all are past the retention); the
        -- last purged row becomes the anchor, which the next row links to.
        purge := format(
            'WITH purged AS (DELETE FROM %1$s AS t WHERE %2$s'
            '   AND NOT EXISTS (SELECT FROM %1$s AS l WHERE %3$s AND l.%4$I <= t.%4$I AND NOT coalesce(%5$s, false))'
            '   RETURNING t.*),'
            ' anchored AS (%6$s) ',
            tbl, expired,
            coalesce((SELECT string_agg(format('l.%1$I = t.%1$I', col), ' AND ') FROM unnest(chain.chain_columns) AS col),
                     'true'),
            chain.seq_column, integrity._expired_sql(tbl, 'l'), integrity._chain_anchor_sql(tbl, 'purged'));
    ELSIF archive IS NOT NULL THEN
        purge := format('WITH purged AS (DELETE FROM %s AS t WHERE %s RETURNING t.*) ', tbl, expired);
    ELSE
        RETURN integrity._execute_sanctioned(tbl, format('DELETE FROM %s AS t WHERE %s', tbl, expired));
    END IF;
    RETURN integrity._execute_sanctioned(tbl, purge || CASE WHEN archive IS NULL THEN 'SELECT FROM purged'
                                                            ELSE format('INSERT INTO %s SELECT * FROM purged', archive) END);
END;
$$;
-- ==== end issue 11: a partition of a hash-chained ledger ====

-- ==== issue 11: chained INSERT serializes on a chain lock (one statement per row) ====
-- The trigger locks the chain itself instead of its last row, and reads the
-- last row by the chain index and hashes the row itself (the link statement
-- remains for the other cases): _chain_statements() returns the row's
-- encoding instead of lock_tail.
DROP FUNCTION integrity._chain_statements(regclass);
-- What the trigger runs for each row of tbl, holding the lock of the row's
-- chain (src/hash_chain.rs).  link: the row's sequence number and hash, from
-- the chain's last row or, in a chain whose rows were all purged, from its
-- anchor; $1 … $k are the values of the chain columns, $k+1 is the row.
-- encoding: the row's encoding alone ($1 is the row), which the trigger
-- hashes with the last row's hash itself when it reads that row by the chain
-- index.
CREATE FUNCTION integrity._chain_statements(tbl regclass)
RETURNS TABLE (chained regclass, link text, encoding text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.chained,
           format('SELECT coalesce(tail.seq, (SELECT a.seq FROM integrity.chain_anchors a WHERE %6$s), 0) + 1,'
                  ' pg_catalog.sha256(coalesce(tail.hash, (SELECT a.hash FROM integrity.chain_anchors a WHERE %6$s),'
                  ' ''\x''::bytea) || %1$s)'
                  ' FROM (SELECT) AS here LEFT JOIN LATERAL'
                  ' (SELECT t.%2$I AS seq, t.%3$I AS hash FROM %4$s t%5$s ORDER BY t.%2$I DESC LIMIT 1) AS tail ON true',
                  integrity._chain_encoding_sql(c.chained, c.hashed, format('($%s)', cardinality(c.chain_columns) + 1)),
                  c.seq_column, c.hash_column, c.chained, w.clause,
                  format('a.table_name = %s::pg_catalog.regclass AND a.chain = %s', c.chained::oid,
                         integrity._chain_values_sql(c.chained, c.chain_columns,
                                                     format('($%s)', cardinality(c.chain_columns) + 1)))),
           'SELECT ' || integrity._chain_encoding_sql(c.chained, c.hashed, '($1)')
      FROM integrity._chain_of(tbl) c
     CROSS JOIN LATERAL (SELECT ' WHERE ' || string_agg(format('t.%I = $%s', col, n), ' AND ' ORDER BY n)
                           FROM unnest(c.chain_columns) WITH ORDINALITY AS u(col, n)) AS w(clause)
$$;
-- ==== end issue 11: chain lock ====

-- ==== issue 13: holds performance ====
-- place_hold of one row, commit_hold and release_hold are compiled
-- (src/holds.rs) on the stock operations' kept statements, and declared in
-- the list of compiled functions (here the whole list of this release, with
-- the hash chain's functions, which the verify_chain() section below
-- creates); the PL/pgSQL versions and their
-- _settle_hold go.  The pending holds have an index of their own, which a
-- settled hold leaves; a dropped table's holds are deleted with a scan.
DROP FUNCTION integrity.place_hold(regclass, anyelement, numeric, interval, text);
DROP FUNCTION integrity.commit_hold(bigint, numeric);
DROP FUNCTION integrity.release_hold(bigint);
DROP FUNCTION integrity._settle_hold(bigint, text, numeric, text);

CREATE OR REPLACE FUNCTION integrity._compiled_functions()
RETURNS TABLE (name text, arguments text, result text, symbol text, declaration text, comment_sql text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT f.name, f.arguments, f.result, f.symbol,
       concat_ws(' ', format('FUNCTION integrity.%I(%s) RETURNS %s LANGUAGE c', f.name, f.arguments, f.result),
                 f.attributes, format('AS %L, %L', 'MODULE_PATHNAME', f.symbol)),
       CASE WHEN f.description IS NOT NULL
            THEN format('COMMENT ON FUNCTION integrity.%I(%s) IS %L', f.name,
                        pg_catalog.regexp_replace(f.arguments, ' DEFAULT [^,]+', '', 'g'), f.description) END
  FROM (VALUES
    -- The guards' triggers.  They run on every guarded row: they take no
    -- search_path setting, and what SQL they run is schema-qualified.
    ('append_only_guard', '', 'trigger', NULL, 'integrity_append_only_guard',
     'Trigger: refuses UPDATE and DELETE of rows of an append-only table (23001).'),
    ('append_only_truncate_guard', '', 'trigger', NULL, 'integrity_append_only_truncate_guard',
     'Trigger: refuses TRUNCATE of an append-only table (23001).'),
    ('immutable_guard', '', 'trigger', NULL, 'integrity_immutable_guard',
     'Trigger: refuses a change of the immutable columns named in its arguments (23001).'),
    ('write_once_guard', '', 'trigger', NULL, 'integrity_write_once_guard',
     'Trigger: refuses a change of the write-once columns named in its arguments once set (23001).'),
    ('version_bump', '', 'trigger', NULL, 'integrity_version_bump',
     'Trigger: sets the version column to OLD + 1; in strict mode refuses stale versions (40001).'),
    ('version_check', '', 'trigger', NULL, 'integrity_version_check',
     'Trigger: refuses a row whose version a later BEFORE trigger moved off OLD + 1 (23001).'),
    ('stock_guard', '', 'trigger', NULL, 'integrity_stock_guard',
     'Trigger: refuses a row whose stock is negative or whose reserved stock is negative or above stock (23514).'),
    ('credit_guard', '', 'trigger', NULL, 'integrity_credit_guard',
     'Trigger: refuses a row whose credit limit is negative or whose used credit is negative or above the limit (23514).'),
    ('ledger_credit_guard', '', 'trigger', NULL, 'integrity_ledger_credit_guard',
     'Trigger: applies each ledger entry to its account''s used credit, refusing to leave it above the limit or below zero (23514).'),
    ('hash_chain_guard', '', 'trigger', NULL, 'integrity_hash_chain_guard',
     'Trigger: numbers each inserted row within its chain and sets its hash from the chain''s last row.'),
    ('lifecycle_guard', '', 'trigger', NULL, 'integrity_lifecycle_guard',
     'Trigger: AFTER INSERT, UPDATE or DELETE FOR EACH STATEMENT with transition tables; writes the statement''s lifecycle events.'),
    ('lifecycle_events_guard', '', 'trigger', NULL, 'integrity_lifecycle_events_guard',
     'Trigger: refuses UPDATE, DELETE and TRUNCATE of integrity.lifecycle_events (23001), except the deletes of purge_lifecycle_events().'),
    ('soft_delete_guard', '', 'trigger', NULL, 'integrity_soft_delete_guard',
     'Trigger: turns the DELETE of a row into setting its deleted column to now() (and its flag column to true).'),
    ('total_source', '', 'trigger', NULL, 'integrity_total_source',
     'Trigger: collects the contribution of each source row to its target row''s maintained total.'),
    ('total_apply', '', 'trigger', NULL, 'integrity_total_apply',
     'Trigger: applies what a statement on a source table collected, one update per target row, in key order.'),
    ('total_start', '', 'trigger', NULL, 'integrity_total_start',
     'Trigger: starts a new target row''s maintained totals at the total of the source rows that already reference it.'),
    ('total_guard', '', 'trigger', NULL, 'integrity_total_guard',
     'Trigger: refuses a direct change of a maintained total or of its row''s key (23001).'),

    -- The stock operations (src/stock_operations.rs): they are called once
    -- per order line, and keep their prepared statements per table.
    ('reserve_stock', 'tbl regclass, id anyelement, qty numeric', 'boolean', 'SET search_path = pg_catalog, pg_temp',
     'integrity_reserve_stock',
     'Reserves qty of the row''s available stock (stock - reserved): true when reserved, false when not enough is available.'),
    ('reserve_stock', 'tbl regclass, ids anyarray, qtys numeric[]', 'boolean', 'SET search_path = pg_catalog, pg_temp',
     'integrity_reserve_stock_rows',
     'Reserves qtys[i] of row ids[i] for every i, or nothing: true when all were reserved, false when any lacks stock. Locks rows in key order.'),
    ('release_stock', 'tbl regclass, id anyelement, qty numeric', 'void', 'SET search_path = pg_catalog, pg_temp',
     'integrity_release_stock',
     'Gives back qty of the row''s reservation (reserved goes down); more than is reserved raises 23514.'),
    ('commit_stock', 'tbl regclass, id anyelement, qty numeric', 'void', 'SET search_path = pg_catalog, pg_temp',
     'integrity_commit_stock',
     'Consumes qty of the row''s reservation (stock and reserved both go down); more than is reserved raises 23514.'),
    -- The stock guard of tbl, read as the operations read it (from its
    -- trigger): its columns, its single-column primary key, and the scale a
    -- quantity must fit (0 for integer columns, NULL for unconstrained numeric).
    ('_stock_target', 'tbl regclass, caller text, OUT stock_column text, OUT reserved_column text, '
     'OUT key_column text, OUT key_type text, OUT quantity_scale integer', 'record',
     'STABLE SET search_path = pg_catalog, pg_temp', 'integrity_stock_target', NULL),

    -- The hot paths of holds (src/holds.rs), on the stock operations' kept
    -- statements: a hold placed on one row, and settled.
    ('place_hold', 'tbl regclass, id anyelement, qty numeric, ttl interval DEFAULT NULL, '
     'idempotency_key text DEFAULT NULL', 'bigint', 'SET search_path = pg_catalog, pg_temp', 'integrity_place_hold',
     'Reserves qty of the row as reserve_stock does and records the hold: its id, or NULL when not enough is available. The same idempotency key returns the same hold.'),
    ('commit_hold', 'hold_id bigint, qty numeric DEFAULT NULL', 'text', 'SET search_path = pg_catalog, pg_temp',
     'integrity_commit_hold',
     'Consumes a pending hold (all of it, or qty and releases the rest); returns the hold''s status. A credit hold hands its amount to the DEBIT entry inserted next in the same transaction.'),
    ('release_hold', 'hold_id bigint', 'text', 'SET search_path = pg_catalog, pg_temp', 'integrity_release_hold',
     'Gives a pending hold back; returns the hold''s status.'),

    -- The ddl_command_start event trigger, and what the other event triggers
    -- ask of a DDL command (src/ddl_commands.rs).
    ('_on_ddl_command_start', '', 'event_trigger', NULL, 'integrity_on_ddl_command_start', NULL),
    ('_attaches_partition', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_attaches_partition', NULL),
    ('_renames', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_renames', NULL),
    ('_drops_expired_partition', 'pg_catalog.oid', 'boolean', 'STRICT', 'integrity_drops_expired_partition', NULL),

    -- Runs a statement that the extension built to delete guarded rows for
    -- good (src/sanctioned.rs): only for the owner of tbl, and only the guards
    -- of the relations _cascade_reach(tbl) lists let its deletes through.
    ('_execute_sanctioned', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_sanctioned', NULL),
    -- Runs a statement with the maintained totals of tbl writable (src/sanctioned.rs).
    ('_execute_total_writes', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_total_writes', NULL),

    -- One row's lifecycle events, in order, for a caller who may read the
    -- table (src/lifecycle.rs checks the privilege and reads the events as
    -- their table's owner).
    ('_lifecycle_events_of', 'tbl regclass, row_key jsonb', 'integrity.lifecycle_events[]', 'STABLE STRICT',
     'integrity_lifecycle_events_of', NULL),

    -- A maintained total's filter, analyzed as a boolean, immutable expression
    -- over its source's columns and written back by PostgreSQL's deparser;
    -- and the source columns it reads (src/totals.rs).
    ('_total_filter', 'source regclass, filter text', 'text', 'STRICT STABLE', 'integrity_total_filter', NULL),
    ('_total_filter_columns', 'source regclass, filter text', 'text[]', 'STRICT STABLE',
     'integrity_total_filter_columns', NULL),

    -- The top-level AND-ed terms of a stored expression over relation's
    -- columns (pg_index.indpred, say), read from its node tree
    -- (src/predicates.rs): nested ANDs flattened, each term deparsed as
    -- pg_get_expr does (on one line) and without the parentheses that enclose
    -- it: '(a IS NULL) AND ((b = 1) OR (c = 2))' gives {'a IS NULL',
    -- '(b = 1) OR (c = 2)'}, whatever the literals hold.
    ('_conjuncts', 'expr pg_node_tree, relation oid', 'text[]', 'STABLE STRICT', 'integrity_conjuncts', NULL),

    -- The canonical encoding of a chained row (src/chain_encoding.rs):
    -- convert_to(jsonb_build_array(<values>)::text, 'UTF8'), written directly.
    ('_chain_encoding', 'VARIADIC "any"', 'bytea', 'STABLE', 'integrity_chain_encoding', NULL),
    -- verify_chain()'s pass over a chained table (src/chain_verify.rs): the
    -- problems it found, at most one per chain and one per chain of the
    -- digest, each with its row's key and sequence number.
    ('_chain_problems', 'tbl regclass, scan text, ordered text, row_of text, digest_chains text[], '
     'digest_seqs bigint[], digest_hashes bytea[]', 'TABLE (chain text, row_key text, seq bigint, problem text)', 'STABLE',
     'chain_problems_wrapper', NULL),

    -- Refusal counting (src/refusals.rs), in shared memory with pg_integrity
    -- in shared_preload_libraries: the counters, a reset, and the refusals
    -- that found every counter in use (NULL without the preload).
    ('_refusal_counters', '',
     'TABLE (table_oid oid, guard text, sqlstate text, refusals bigint, first_at timestamptz, '
     'last_at timestamptz, last_role text, last_detail text)',
     NULL, 'refusal_counters_wrapper', NULL),
    ('reset_refusals', '', 'void', NULL, 'reset_refusal_counters_wrapper',
     'Forgets every refusal counter (of every database). Superusers, and roles granted EXECUTE on it.'),
    ('_refusals_dropped', '', 'bigint', NULL, 'refusals_dropped_wrapper', NULL)
  ) AS f(name, arguments, result, attributes, symbol, description)
$$;

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM integrity._compiled_functions()
              WHERE name IN ('place_hold', 'commit_hold', 'release_hold') LOOP
        EXECUTE 'CREATE ' || f.declaration;
        EXECUTE f.comment_sql;
    END LOOP;
END
$$;

DROP INDEX integrity.hold_records_status;
CREATE INDEX hold_records_pending ON integrity.hold_records (table_name, row_id, expires_at)
    WHERE status = 'pending';

CREATE OR REPLACE FUNCTION integrity._on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped record;
BEGIN
    FOR dropped IN
        SELECT o.rel, o.tgname, needed.guarded_table, needed.guard
          FROM (SELECT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel,
                       address_names[3]::name AS tgname
                  FROM pg_catalog.pg_event_trigger_dropped_objects()
                 WHERE object_type = 'trigger' AND address_names[3] LIKE 'integrity\_%') o
         CROSS JOIN LATERAL integrity._guard_needing(o.rel, o.tgname) needed
         WHERE o.rel IS NOT NULL
    LOOP
        PERFORM integrity._refuse_guard_ddl('drop', dropped.tgname, dropped.rel, dropped.guarded_table, dropped.guard);
    END LOOP;

    -- A trigger that fired after a guard's is gone: its recheck may go too.
    PERFORM integrity._sync_rechecks(o.rel)
       FROM (SELECT DISTINCT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel
               FROM pg_catalog.pg_event_trigger_dropped_objects()
              WHERE object_type = 'trigger') o
      WHERE o.rel IS NOT NULL;

    PERFORM integrity._refuse_history_drop();
    PERFORM integrity._refuse_accounts_ddl(NULL, ARRAY(
        SELECT o.object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() o WHERE o.object_type = 'table'));

    -- The totals of a dropped target go with it, their sources' triggers too
    -- (registry row first: dropping those triggers runs this again).
    FOR dropped IN
        DELETE FROM integrity.guard_registry r
         WHERE r.guard = 'total' AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
        RETURNING r.options
    LOOP
        PERFORM integrity._drop_total_triggers(dropped.options);
    END LOOP;
    PERFORM integrity._refuse_totals_ddl();

    -- The holds on a dropped table go with it (a scan: only pending holds
    -- are indexed by table).
    DELETE FROM integrity.hold_records h
     WHERE h.table_name::pg_catalog.oid IN (SELECT o.objid FROM pg_catalog.pg_event_trigger_dropped_objects() o
                                             WHERE o.object_type = 'table');
    DELETE FROM integrity.guard_registry r
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name);
    DELETE FROM integrity.chain_anchors a
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = a.table_name);
END;
$$;

-- ==== end issue 13: holds performance ====

-- ==== issue 11: verify_chain() in one pass over the table ====
-- The encoding a chained row is hashed with is written by a compiled
-- function, integrity._chain_encoding() (src/chain_encoding.rs), which the
-- trigger's statements and verify_chain() both call through
-- _chain_encoding_sql(); its bytes are those of the jsonb expression it
-- replaces.  verify_chain() links the rows in a compiled pass
-- (integrity._chain_problems, src/chain_verify.rs) over the table in the
-- order it holds them, instead of a window over the chain order.  Both are
-- in the list of compiled functions that the holds section above replaced.

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM integrity._compiled_functions() WHERE name IN ('_chain_encoding', '_chain_problems') LOOP
        EXECUTE 'CREATE ' || f.declaration;
    END LOOP;
END
$$;

-- The columns of the row rowref (`t`, `($3)`), comma-separated, every value
-- written as the session settings cannot change it.
CREATE FUNCTION integrity._chain_arguments_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(format(coalesce(s.expression, '%s'), format('%s.%I', rowref, u.col)), ', '
                               ORDER BY u.n), '')
      FROM unnest(columns) WITH ORDINALITY AS u(col, n)
      LEFT JOIN pg_catalog.pg_attribute a
        ON a.attrelid = tbl AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
      LEFT JOIN integrity._chain_settled_types() s
        ON s.type_oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
$$;

-- A jsonb array of those columns: the chain key.
CREATE OR REPLACE FUNCTION integrity._chain_values_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('pg_catalog.jsonb_build_array(%s)', integrity._chain_arguments_sql(tbl, columns, rowref))
$$;

-- The encoding a row is hashed with: that jsonb array as text, in UTF-8,
-- written by integrity._chain_encoding() (src/chain_encoding.rs).
CREATE OR REPLACE FUNCTION integrity._chain_encoding_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN cardinality(columns) > 0
                THEN format('integrity._chain_encoding(%s)', integrity._chain_arguments_sql(tbl, columns, rowref))
                ELSE 'pg_catalog.convert_to(''[]'', ''UTF8'')' END
$$;

CREATE OR REPLACE FUNCTION integrity.verify_chain(tbl regclass, digest jsonb DEFAULT NULL)
RETURNS TABLE (chain jsonb, row_key jsonb, problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    rows_sql text;
    digest_chains text[];
    digest_seqs bigint[];
    digest_hashes bytea[];
BEGIN
    SELECT * INTO c FROM integrity._registered_chain(tbl, 'verify_chain');
    IF digest IS NOT NULL AND (jsonb_typeof(digest -> 'chains') IS DISTINCT FROM 'array'
                               OR digest ->> 'table' IS DISTINCT FROM tbl::text) THEN
        RAISE EXCEPTION 'verify_chain: argument "digest" is not a digest of table "%"', tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass what integrity.chain_digest(%L) returned.', tbl::text);
    END IF;
    -- The digest's chains, as three arrays in one order.
    SELECT array_agg(d.chain::text), array_agg(d.seq), array_agg(pg_catalog.decode(d.hash, 'hex'))
      INTO digest_chains, digest_seqs, digest_hashes
      FROM pg_catalog.jsonb_to_recordset(digest -> 'chains') AS d(chain jsonb, seq bigint, hash text);
    -- Each row's chain columns, sequence number, hash, the encoding it was
    -- hashed with, and where it is (for its chain as jsonb and its row key,
    -- which row_of reads).
    rows_sql := format('SELECT %s t.%I, t.%I, %s, t.tableoid, t.ctid FROM %s t',
                       (SELECT string_agg(format('t.%I, ', col), '') FROM unnest(c.chain_columns) AS col),
                       c.seq_column, c.hash_column, integrity._chain_encoding_sql(tbl, c.hashed, 't'), tbl);
    RETURN QUERY
        SELECT DISTINCT ON (p.chain::jsonb) p.chain::jsonb, p.row_key::jsonb, p.problem
          FROM integrity._chain_problems(tbl, rows_sql,
                   rows_sql || ' ORDER BY ' || (SELECT string_agg(format('t.%I', col), ', ')
                                                  FROM unnest(c.chain_columns || c.seq_column) AS col),
                   format('SELECT %s::pg_catalog.text, %s::pg_catalog.text FROM %s t'
                          ' WHERE t.tableoid = $1 AND t.ctid = $2',
                          integrity._chain_values_sql(tbl, c.chain_columns, 't'), integrity._row_key_sql(tbl), tbl),
                   digest_chains, digest_seqs, digest_hashes) AS p
         ORDER BY p.chain::jsonb, p.seq NULLS FIRST;
END;
$$;
-- ==== end issue 11: verify_chain() in one pass ====

-- ==== issue 11: the chain's last row is its last with a sequence number ====
-- The link statement passes over rows inserted out of band (no sequence
-- number), as the trigger's own read of the chain index does now: after such
-- a row the chain goes on from its last chained row instead of starting again
-- at 1 with every insert.
-- What the trigger runs for each row of tbl, holding the lock of the row's
-- chain (src/hash_chain.rs).  link: the row's sequence number and hash, from
-- the chain's last row with a sequence number (a row inserted out of band has
-- none) or, in a chain whose rows were all purged, from its anchor; $1 … $k
-- are the values of the chain columns, $k+1 is the row.
-- encoding: the row's encoding alone ($1 is the row), which the trigger
-- hashes with the last row's hash itself when it reads that row by the chain
-- index.
CREATE OR REPLACE FUNCTION integrity._chain_statements(tbl regclass)
RETURNS TABLE (chained regclass, link text, encoding text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.chained,
           format('SELECT coalesce(tail.seq, (SELECT a.seq FROM integrity.chain_anchors a WHERE %6$s), 0) + 1,'
                  ' pg_catalog.sha256(coalesce(tail.hash, (SELECT a.hash FROM integrity.chain_anchors a WHERE %6$s),'
                  ' ''\x''::bytea) || %1$s)'
                  ' FROM (SELECT) AS here LEFT JOIN LATERAL'
                  ' (SELECT t.%2$I AS seq, t.%3$I AS hash FROM %4$s t WHERE t.%2$I IS NOT NULL%5$s ORDER BY t.%2$I DESC LIMIT 1)'
                  ' AS tail ON true',
                  integrity._chain_encoding_sql(c.chained, c.hashed, format('($%s)', cardinality(c.chain_columns) + 1)),
                  c.seq_column, c.hash_column, c.chained, w.clause,
                  format('a.table_name = %s::pg_catalog.regclass AND a.chain = %s', c.chained::oid,
                         integrity._chain_values_sql(c.chained, c.chain_columns,
                                                     format('($%s)', cardinality(c.chain_columns) + 1)))),
           'SELECT ' || integrity._chain_encoding_sql(c.chained, c.hashed, '($1)')
      FROM integrity._chain_of(tbl) c
     CROSS JOIN LATERAL (SELECT string_agg(format(' AND t.%I = $%s', col, n), '' ORDER BY n)
                           FROM unnest(c.chain_columns) WITH ORDINALITY AS u(col, n)) AS w(clause)
$$;
-- ==== end issue 11: the chain's last row ====

-- ==== issue 17: a maintained total cannot be changed by a trigger that fires after its guard ====
-- The guard lets through exactly the write the extension makes (src/totals.rs,
-- src/sanctioned.rs); integrity_total_recheck, AFTER UPDATE, checks the final
-- row while a BEFORE UPDATE trigger of the target sorts after the guard's, and
-- integrity_total_start_recheck, AFTER INSERT, the starting total of a new row
-- while a BEFORE INSERT trigger sorts after integrity_total_start.
-- (Totals are new in 0.2.0: no registered target predates this section.)
CREATE OR REPLACE FUNCTION integrity._guard_triggers(guard text)
RETURNS TABLE (trigger_name name, function_name name, tgtype smallint, mode "char", per_partition boolean,
               guard text, has_when boolean, recheck boolean)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.trigger_name::name, t.function_name::name, t.tgtype::smallint, t.mode::"char", t.per_partition,
           t.guard, t.has_when, t.recheck
      FROM (VALUES -- tgtype: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32
            ('append_only',   'integrity_append_only',             'append_only_guard',          27, 'A', false, false, false),
            ('append_only',   'integrity_append_only_truncate',    'append_only_truncate_guard', 34, 'A', true,  false, false),
            ('immutable',     'integrity_immutable',               'immutable_guard',            19, 'A', false, false, false),
            ('immutable',     'integrity_immutable_recheck',       'immutable_guard',            17, 'A', false, true,  true),
            ('write_once',    'integrity_write_once',              'write_once_guard',           19, 'A', false, false, false),
            ('write_once',    'integrity_write_once_recheck',      'write_once_guard',           17, 'A', false, true,  true),
            ('versioning',    'integrity_version_bump',            'version_bump',               19, 'O', false, false, false),
            ('versioning',    'integrity_version_check',           'version_check',              17, 'O', false, true,  true),
            ('stock',         'integrity_stock',                   'stock_guard',                23, 'A', false, false, false),
            ('stock',         'integrity_stock_recheck',           'stock_guard',                21, 'A', false, true,  true),
            ('credit',        'integrity_credit',                  'credit_guard',               23, 'A', false, false, false),
            ('credit',        'integrity_credit_recheck',          'credit_guard',               21, 'A', false, true,  true),
            ('ledger_credit', 'integrity_ledger_credit',           'ledger_credit_guard',        29, 'O', false, false, false),
            ('hash_chain',    'integrity_hash_chain',              'hash_chain_guard',            7, 'O', false, false, false),
            ('soft_delete',   'integrity_soft_delete',             'soft_delete_guard',          11, 'O', false, false, false),
            -- on the target of maintained totals (their sources' triggers: sql/totals.sql)
            ('total',         'integrity_total',                   'total_guard',                19, 'O', false, false, false),
            ('total',         'integrity_total_recheck',           'total_guard',                17, 'O', false, true,  true),
            ('total',         'integrity_total_start',             'total_start',                 7, 'O', false, false, false),
            ('total',         'integrity_total_start_recheck',     'total_start',                 5, 'O', false, false, true),
            -- AFTER … FOR EACH STATEMENT with transition tables, one event each
            ('lifecycle',     'integrity_lifecycle_insert',        'lifecycle_guard',             4, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_update',        'lifecycle_guard',            16, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_delete',        'lifecycle_guard',             8, 'O', true,  false, false)
           ) AS t(guard, trigger_name, function_name, tgtype, mode, per_partition, has_when, recheck)
     WHERE $1 IS NULL OR t.guard = $1
$$;

CREATE OR REPLACE FUNCTION integrity._trigger_arguments(trigger_name name, columns text[], options jsonb)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN trigger_name IN ('integrity_immutable', 'integrity_immutable_recheck',
                              'integrity_write_once', 'integrity_write_once_recheck',
                              'integrity_soft_delete') THEN columns
        WHEN trigger_name = 'integrity_version_bump' THEN
            ARRAY[columns[1], CASE WHEN coalesce((options ->> 'strict')::boolean, true) THEN 'strict' ELSE 'lenient' END]
        WHEN trigger_name = 'integrity_version_check' THEN columns[1:1]
        WHEN trigger_name IN ('integrity_stock', 'integrity_stock_recheck',
                              'integrity_credit', 'integrity_credit_recheck') THEN columns[1:2]
        -- the accounts by name, which pg_dump keeps
        WHEN trigger_name = 'integrity_ledger_credit' THEN
            ARRAY[(SELECT format('%I.%I', n.nspname, c.relname)
                     FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = integrity._relation(options ->> 'accounts')),
                  options ->> 'amount_column', options ->> 'entry_type_column',
                  options ->> 'debit_value', options ->> 'credit_value',
                  options ->> 'limit_column', options ->> 'used_column'] || columns
        WHEN trigger_name = 'integrity_hash_chain' THEN
            ARRAY[options ->> 'seq_column', options ->> 'hash_column'] || columns
        -- the maintained columns, an empty string, the target's key columns
        WHEN trigger_name IN ('integrity_total', 'integrity_total_recheck') THEN
            columns || ARRAY[''] || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'key'))
        ELSE '{}'::text[] END
$$;

CREATE OR REPLACE FUNCTION integrity._place_total_guard(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registered record;
BEGIN
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    PERFORM integrity._place_recheck(target, 'total',
        format('CREATE OR REPLACE TRIGGER integrity_total_recheck AFTER UPDATE ON %1$s FOR EACH ROW WHEN (%2$s)'
               ' EXECUTE FUNCTION integrity.total_guard(%3$s);'
               ' CREATE OR REPLACE TRIGGER integrity_total_start_recheck AFTER INSERT ON %1$s FOR EACH ROW'
               ' EXECUTE FUNCTION integrity.total_start()', target,
               (SELECT string_agg(integrity._changed_sql(target, col), ' OR ' ORDER BY n)
                  FROM unnest(registered.columns || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(registered.options -> 'key')))
                       WITH ORDINALITY AS c(col, n)),
               integrity._arguments_sql(integrity._trigger_arguments('integrity_total_recheck', registered.columns,
                                                                     registered.options))));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total BEFORE UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_guard(%s)', target,
                   integrity._arguments_sql(integrity._trigger_arguments('integrity_total', registered.columns,
                                                                         registered.options)));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total_start BEFORE INSERT ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_start()', target);
END;
$$;
-- ==== end issue 17: a maintained total cannot be changed by a trigger that fires after its guard ====

-- ==== issue 12: an UPDATE that assigns neither the version nor a protected column runs without their triggers ====
-- The planner gives such an UPDATE its next version with _next_version
-- (src/update_plans.rs); the function list gains its three declarations.
-- The single-row stock operations pin search_path only where they run SQL.
CREATE OR REPLACE FUNCTION integrity._compiled_functions()
RETURNS TABLE (name text, arguments text, result text, symbol text, declaration text, comment_sql text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT f.name, f.arguments, f.result, f.symbol,
       concat_ws(' ', format('FUNCTION integrity.%I(%s) RETURNS %s LANGUAGE c', f.name, f.arguments, f.result),
                 f.attributes, format('AS %L, %L', 'MODULE_PATHNAME', f.symbol)),
       CASE WHEN f.description IS NOT NULL
            THEN format('COMMENT ON FUNCTION integrity.%I(%s) IS %L', f.name,
                        pg_catalog.regexp_replace(f.arguments, ' DEFAULT [^,]+', '', 'g'), f.description) END
  FROM (VALUES
    -- The guards' triggers.  They run on every guarded row: they take no
    -- search_path setting, and what SQL they run is schema-qualified.
    ('append_only_guard', '', 'trigger', NULL, 'integrity_append_only_guard',
     'Trigger: refuses UPDATE and DELETE of rows of an append-only table (23001).'),
    ('append_only_truncate_guard', '', 'trigger', NULL, 'integrity_append_only_truncate_guard',
     'Trigger: refuses TRUNCATE of an append-only table (23001).'),
    ('immutable_guard', '', 'trigger', NULL, 'integrity_immutable_guard',
     'Trigger: refuses a change of the immutable columns named in its arguments (23001).'),
    ('write_once_guard', '', 'trigger', NULL, 'integrity_write_once_guard',
     'Trigger: refuses a change of the write-once columns named in its arguments once set (23001).'),
    ('version_bump', '', 'trigger', NULL, 'integrity_version_bump',
     'Trigger: sets the version column to OLD + 1; in strict mode refuses stale versions (40001).'),
    ('version_check', '', 'trigger', NULL, 'integrity_version_check',
     'Trigger: refuses a row whose version a later BEFORE trigger moved off OLD + 1 (23001).'),
    -- The version an UPDATE that does not assign it gives each row, in the
    -- target list the planner hook adds it to (src/update_plans.rs): what
    -- version_bump would set.  Every role may run it (the statement calls it
    -- with the privileges of whoever updates).
    ('_next_version', 'version smallint, tbl regclass, version_column name', 'smallint', 'STABLE PARALLEL SAFE',
     'integrity_next_version_int2', NULL),
    ('_next_version', 'version integer, tbl regclass, version_column name', 'integer', 'STABLE PARALLEL SAFE',
     'integrity_next_version_int4', NULL),
    ('_next_version', 'version bigint, tbl regclass, version_column name', 'bigint', 'STABLE PARALLEL SAFE',
     'integrity_next_version_int8', NULL),
    ('stock_guard', '', 'trigger', NULL, 'integrity_stock_guard',
     'Trigger: refuses a row whose stock is negative or whose reserved stock is negative or above stock (23514).'),
    ('credit_guard', '', 'trigger', NULL, 'integrity_credit_guard',
     'Trigger: refuses a row whose credit limit is negative or whose used credit is negative or above the limit (23514).'),
    ('ledger_credit_guard', '', 'trigger', NULL, 'integrity_ledger_credit_guard',
     'Trigger: applies each ledger entry to its account''s used credit, refusing to leave it above the limit or below zero (23514).'),
    ('hash_chain_guard', '', 'trigger', NULL, 'integrity_hash_chain_guard',
     'Trigger: numbers each inserted row within its chain and sets its hash from the chain''s last row.'),
    ('lifecycle_guard', '', 'trigger', NULL, 'integrity_lifecycle_guard',
     'Trigger: AFTER INSERT, UPDATE or DELETE FOR EACH STATEMENT with transition tables; writes the statement''s lifecycle events.'),
    ('lifecycle_events_guard', '', 'trigger', NULL, 'integrity_lifecycle_events_guard',
     'Trigger: refuses UPDATE, DELETE and TRUNCATE of integrity.lifecycle_events (23001), except the deletes of purge_lifecycle_events().'),
    ('soft_delete_guard', '', 'trigger', NULL, 'integrity_soft_delete_guard',
     'Trigger: turns the DELETE of a row into setting its deleted column to now() (and its flag column to true).'),
    ('total_source', '', 'trigger', NULL, 'integrity_total_source',
     'Trigger: collects the contribution of each source row to its target row''s maintained total.'),
    ('total_apply', '', 'trigger', NULL, 'integrity_total_apply',
     'Trigger: applies what a statement on a source table collected, one update per target row, in key order.'),
    ('total_start', '', 'trigger', NULL, 'integrity_total_start',
     'Trigger: starts a new target row''s maintained totals at the total of the source rows that already reference it.'),
    ('total_guard', '', 'trigger', NULL, 'integrity_total_guard',
     'Trigger: refuses a direct change of a maintained total or of its row''s key (23001).'),

    -- The stock operations (src/stock_operations.rs): they are called once
    -- per order line, and keep their prepared statements per table.  They
    -- pin search_path only where they run SQL (when the rows are not
    -- updated directly): a SET clause costs every call a GUC level.
    ('reserve_stock', 'tbl regclass, id anyelement, qty numeric', 'boolean', NULL,
     'integrity_reserve_stock',
     'Reserves qty of the row''s available stock (stock - reserved): true when reserved, false when not enough is available.'),
    ('reserve_stock', 'tbl regclass, ids anyarray, qtys numeric[]', 'boolean', NULL,
     'integrity_reserve_stock_rows',
     'Reserves qtys[i] of row ids[i] for every i, or nothing: true when all were reserved, false when any lacks stock. Locks rows in key order.'),
    ('release_stock', 'tbl regclass, id anyelement, qty numeric', 'void', NULL,
     'integrity_release_stock',
     'Gives back qty of the row''s reservation (reserved goes down); more than is reserved raises 23514.'),
    ('commit_stock', 'tbl regclass, id anyelement, qty numeric', 'void', NULL,
     'integrity_commit_stock',
     'Consumes qty of the row''s reservation (stock and reserved both go down); more than is reserved raises 23514.'),
    -- The stock guard of tbl, read as the operations read it (from its
    -- trigger): its columns, its single-column primary key, and the scale a
    -- quantity must fit (0 for integer columns, NULL for unconstrained numeric).
    ('_stock_target', 'tbl regclass, caller text, OUT stock_column text, OUT reserved_column text, '
     'OUT key_column text, OUT key_type text, OUT quantity_scale integer', 'record',
     'STABLE SET search_path = pg_catalog, pg_temp', 'integrity_stock_target', NULL),

    -- The hot paths of holds (src/holds.rs), on the stock operations' kept
    -- statements: a hold placed on one row, and settled.
    ('place_hold', 'tbl regclass, id anyelement, qty numeric, ttl interval DEFAULT NULL, '
     'idempotency_key text DEFAULT NULL', 'bigint', NULL, 'integrity_place_hold',
     'Reserves qty of the row as reserve_stock does and records the hold: its id, or NULL when not enough is available. The same idempotency key returns the same hold.'),
    ('commit_hold', 'hold_id bigint, qty numeric DEFAULT NULL', 'text', NULL,
     'integrity_commit_hold',
     'Consumes a pending hold (all of it, or qty and releases the rest); returns the hold''s status. A credit hold hands its amount to the DEBIT entry inserted next in the same transaction.'),
    ('release_hold', 'hold_id bigint', 'text', NULL, 'integrity_release_hold',
     'Gives a pending hold back; returns the hold''s status.'),

    -- The ddl_command_start event trigger, and what the other event triggers
    -- ask of a DDL command (src/ddl_commands.rs).
    ('_on_ddl_command_start', '', 'event_trigger', NULL, 'integrity_on_ddl_command_start', NULL),
    ('_attaches_partition', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_attaches_partition', NULL),
    ('_renames', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_renames', NULL),
    ('_drops_expired_partition', 'pg_catalog.oid', 'boolean', 'STRICT', 'integrity_drops_expired_partition', NULL),

    -- Runs a statement that the extension built to delete guarded rows for
    -- good (src/sanctioned.rs): only for the owner of tbl, and only the guards
    -- of the relations _cascade_reach(tbl) lists let its deletes through.
    ('_execute_sanctioned', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_sanctioned', NULL),
    -- Runs a statement with the maintained totals of tbl writable (src/sanctioned.rs).
    ('_execute_total_writes', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_total_writes', NULL),

    -- One row's lifecycle events, in order, for a caller who may read the
    -- table (src/lifecycle.rs checks the privilege and reads the events as
    -- their table's owner).
    ('_lifecycle_events_of', 'tbl regclass, row_key jsonb', 'integrity.lifecycle_events[]', 'STABLE STRICT',
     'integrity_lifecycle_events_of', NULL),

    -- A maintained total's filter, analyzed as a boolean, immutable expression
    -- over its source's columns and written back by PostgreSQL's deparser;
    -- and the source columns it reads (src/totals.rs).
    ('_total_filter', 'source regclass, filter text', 'text', 'STRICT STABLE', 'integrity_total_filter', NULL),
    ('_total_filter_columns', 'source regclass, filter text', 'text[]', 'STRICT STABLE',
     'integrity_total_filter_columns', NULL),

    -- The top-level AND-ed terms of a stored expression over relation's
    -- columns (pg_index.indpred, say), read from its node tree
    -- (src/predicates.rs): nested ANDs flattened, each term deparsed as
    -- pg_get_expr does (on one line) and without the parentheses that enclose
    -- it: '(a IS NULL) AND ((b = 1) OR (c = 2))' gives {'a IS NULL',
    -- '(b = 1) OR (c = 2)'}, whatever the literals hold.
    ('_conjuncts', 'expr pg_node_tree, relation oid', 'text[]', 'STABLE STRICT', 'integrity_conjuncts', NULL),

    -- The canonical encoding of a chained row (src/chain_encoding.rs):
    -- convert_to(jsonb_build_array(<values>)::text, 'UTF8'), written directly.
    ('_chain_encoding', 'VARIADIC "any"', 'bytea', 'STABLE', 'integrity_chain_encoding', NULL),
    -- verify_chain()'s pass over a chained table (src/chain_verify.rs): the
    -- problems it found, at most one per chain and one per chain of the
    -- digest, each with its row's key and sequence number.
    ('_chain_problems', 'tbl regclass, scan text, ordered text, row_of text, digest_chains text[], '
     'digest_seqs bigint[], digest_hashes bytea[]', 'TABLE (chain text, row_key text, seq bigint, problem text)', 'STABLE',
     'chain_problems_wrapper', NULL),

    -- Refusal counting (src/refusals.rs), in shared memory with pg_integrity
    -- in shared_preload_libraries: the counters, a reset, and the refusals
    -- that found every counter in use (NULL without the preload).
    ('_refusal_counters', '',
     'TABLE (table_oid oid, guard text, sqlstate text, refusals bigint, first_at timestamptz, '
     'last_at timestamptz, last_role text, last_detail text)',
     NULL, 'refusal_counters_wrapper', NULL),
    ('reset_refusals', '', 'void', NULL, 'reset_refusal_counters_wrapper',
     'Forgets every refusal counter (of every database). Superusers, and roles granted EXECUTE on it.'),
    ('_refusals_dropped', '', 'bigint', NULL, 'refusals_dropped_wrapper', NULL)
  ) AS f(name, arguments, result, attributes, symbol, description)
$$;

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM integrity._compiled_functions() WHERE name = '_next_version' LOOP
        EXECUTE 'CREATE ' || f.declaration;
    END LOOP;
END
$$;

ALTER FUNCTION integrity.reserve_stock(regclass, anyelement, numeric) RESET search_path;
ALTER FUNCTION integrity.release_stock(regclass, anyelement, numeric) RESET search_path;
ALTER FUNCTION integrity.commit_stock(regclass, anyelement, numeric) RESET search_path;
ALTER FUNCTION integrity.reserve_stock(regclass, anyarray, numeric[]) RESET search_path;
-- ==== end issue 12: an UPDATE that assigns neither the version nor a protected column runs without their triggers ====

-- ==== issue 13: hold records written without SPI ====
-- place_hold, commit_hold and release_hold write integrity.hold_records
-- directly (src/hold_records.rs) and pin search_path only where they run SQL.
ALTER FUNCTION integrity.place_hold(regclass, anyelement, numeric, interval, text) RESET search_path;
ALTER FUNCTION integrity.commit_hold(bigint, numeric) RESET search_path;
ALTER FUNCTION integrity.release_hold(bigint) RESET search_path;

-- The index of pending holds finds the row by its jsonb hash.
DROP INDEX integrity.hold_records_pending;
CREATE INDEX hold_records_pending
    ON integrity.hold_records (table_name, pg_catalog.jsonb_hash_extended(row_id, 0), expires_at)
    WHERE status = 'pending';

-- Expires the overdue pending holds of the given rows of tbl: the hold
-- records first, then the rows, in key order.  A placement on several rows
-- locks all of them (lock_all) before it gives anything back: locking only
-- the rows that had overdue holds, and the others later, would take them out
-- of key order, and two such placements could deadlock.
CREATE OR REPLACE FUNCTION integrity._expire_overdue(tbl regclass, row_ids jsonb[], lock_all boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    due record;
    expired bigint := 0;
BEGIN
    FOR due IN
        WITH settled AS (
            UPDATE integrity.hold_records h SET status = 'expired', settled_at = pg_catalog.now()
             WHERE h.table_name = tbl
               AND pg_catalog.jsonb_hash_extended(h.row_id, 0)
                   = ANY (ARRAY(SELECT pg_catalog.jsonb_hash_extended(r, 0) FROM pg_catalog.unnest(row_ids) AS r))
               AND h.row_id = ANY (row_ids)
               AND h.status = 'pending' AND h.expires_at <= pg_catalog.now()
            RETURNING h.kind, h.row_id, h.quantity)
        SELECT s.kind, s.row_id, sum(s.quantity) AS quantity, count(*) AS holds
          FROM settled s GROUP BY s.kind, s.row_id ORDER BY s.row_id
    LOOP
        IF lock_all AND expired = 0 THEN
            PERFORM integrity._lock_stock_rows(tbl, row_ids);
        END IF;
        PERFORM integrity._give_back(due.kind, tbl, due.row_id, due.quantity, 'expire_holds');
        expired := expired + due.holds;
    END LOOP;
    RETURN expired;
END;
$$;
-- ==== end issue 13: hold records written without SPI ====
