-- Holds: reservations that are rows.  A hold raises a stock row's reserved
-- quantity (with reserve_stock's statements, the one implementation of a
-- reservation) or an account's used credit, and integrity.hold_records says who holds
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
-- The pending holds, the only ones searched for but by id: a row's overdue
-- holds (placing a hold expires them first, and finds none without reading
-- the table), all overdue holds (expire_holds) and a table's pending holds
-- (violations).  Settled holds leave it: settling a hold writes no entry
-- into it.  A dropped table's holds are deleted with a scan of the table.
-- The row is in it by its jsonb hash, equal for equal keys (as jsonb
-- compares them: 1.0 = 1), which a search tests with the row itself: a
-- placement compares some thirty entries to insert its own and to probe the
-- row's, and a bigint compares in a small fraction of a jsonb's time.
CREATE INDEX hold_records_pending
    ON integrity.hold_records (table_name, pg_catalog.jsonb_hash_extended(row_id, 0), expires_at)
    WHERE status = 'pending';
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

-- integrity.place_hold of one row is compiled (src/holds.rs, declared in
-- sql/compiled_functions.sql): the same steps as below, with the expiry probe,
-- the reservation and the hold record in one statement.

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

-- integrity.commit_hold and release_hold are compiled (src/holds.rs, declared
-- in sql/compiled_functions.sql): the hold record is settled first, unless it
-- has expired, then the stock row's reservation moves (commit_stock, then
-- release_stock of what a partial commit leaves) or the account's credit is
-- given back (_give_back); _settled_status says why a hold was not settled.

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
