-- 49_holds: holds are reservations recorded as rows (integrity.hold_records,
-- read through integrity.holds): placed on stock (place_hold, one row or
-- several) or on an account's credit (place_credit_hold), settled exactly
-- once (commit_hold, release_hold) or expired (expire_holds, or a new hold on
-- the same row), idempotent by key.  Guide 000's checkout: reserve on order,
-- commit on delivery, expire abandoned carts.  The races are in
-- tests/specs/holds_concurrent.spec and pgrx-tests/holds_stress.sh.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE SCHEMA checkout;
SET search_path = checkout, public;

CREATE TABLE wholesaler_products (
    id             bigint  PRIMARY KEY,
    name           text    NOT NULL,
    stock          integer NOT NULL,
    reserved_stock integer NOT NULL DEFAULT 0
);
INSERT INTO wholesaler_products VALUES
    (1, 'PVC pipe 1/2"', 10, 0), (2, 'Sprinkler head', 5, 0), (3, 'Drip line 100 m', 2, 0);
SELECT integrity.guard_stock('wholesaler_products');

-- What a test looks at: the holds without their times.
CREATE VIEW hold_states AS
SELECT hold_id, hold_id - (SELECT min(hold_id) FROM integrity.hold_records) + 1 AS n, table_name, row_key, quantity,
       status, idempotency_key, committed_quantity, expires_at IS NOT NULL AS expires,
       settled_at IS NOT NULL AS settled, actor, txid IS NOT NULL AS has_txid
  FROM integrity.holds ORDER BY hold_id;
CREATE FUNCTION stock() RETURNS TABLE (id bigint, stock integer, reserved_stock integer)
LANGUAGE sql AS $$ SELECT id, stock, reserved_stock FROM checkout.wholesaler_products ORDER BY id $$;

------------------------------------------------------------------------------
-- Placing: reserved goes up as with reserve_stock, and the hold is recorded.
SELECT integrity.place_hold('wholesaler_products', 1, 3) IS NOT NULL AS placed;
SELECT * FROM stock();
SELECT n, table_name, row_key, quantity, status, idempotency_key, committed_quantity, expires, settled, actor, has_txid
  FROM hold_states;
-- Not enough available: NULL, nothing reserved, nothing recorded.
SELECT integrity.place_hold('wholesaler_products', 3, 5) AS not_enough;
SELECT count(*) AS holds FROM integrity.holds;

-- Settling: commit consumes (stock and reserved go down), release gives back.
-- A hold is settled once: settling it again, either way, returns the status
-- it has and changes nothing.
SELECT integrity.commit_hold(min(hold_id)) FROM integrity.hold_records;
SELECT * FROM stock();
SELECT integrity.commit_hold(min(hold_id)) AS again, integrity.release_hold(min(hold_id)) AS other_way
  FROM integrity.hold_records;
SELECT * FROM stock();
SELECT integrity.place_hold('wholesaler_products', 2, 2) AS second \gset
SELECT integrity.release_hold(:second), integrity.release_hold(:second) AS again,
       integrity.commit_hold(:second) AS other_way;
SELECT * FROM stock();
-- A partial commit consumes that much and releases the rest.
SELECT integrity.place_hold('wholesaler_products', 1, 4) AS partial \gset
SELECT integrity.commit_hold(:partial, 1);
SELECT * FROM stock();
SELECT n, status, quantity, committed_quantity, settled FROM hold_states;

-- Errors, and nothing changed by any of them.
SELECT integrity.place_hold('wholesaler_products', 2, 2) AS open \gset
SELECT * FROM expect_error(format('SELECT integrity.commit_hold(%s, 3)', :open));
SELECT * FROM expect_error(format('SELECT integrity.commit_hold(%s, 0)', :open));
SELECT * FROM expect_error(format('SELECT integrity.commit_hold(%s, 1.5)', :open));
SELECT * FROM expect_error('SELECT integrity.commit_hold(NULL)');
SELECT * FROM expect_error('SELECT integrity.release_hold(NULL)');
SELECT * FROM expect_error('SELECT integrity.commit_hold(-1)');
SELECT * FROM expect_error('SELECT integrity.release_hold(-1)');
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 2, 1, interval '0 s')$$);
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 2, 1, interval '-1 minute')$$);
SELECT * FROM expect_error($$SELECT integrity.place_hold(NULL::regclass, 2, 1)$$);
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 2, 0)$$);
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 2, 0.5)$$);
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 99, 1)$$);
CREATE TABLE unguarded (id int PRIMARY KEY, stock int, reserved_stock int);
INSERT INTO unguarded VALUES (1, 5, 0);
SELECT * FROM expect_error($$SELECT integrity.place_hold('unguarded', 1, 1)$$);
SELECT * FROM stock();
SELECT n, status, quantity FROM hold_states WHERE status = 'pending';

------------------------------------------------------------------------------
-- Idempotency: the same key on the same table returns the same hold and
-- reserves once; the key used for another row or quantity is refused
-- (23505); another table has keys of its own.
SELECT integrity.place_hold('wholesaler_products', 2, 1, idempotency_key => 'order-1001') AS first \gset
SELECT integrity.place_hold('wholesaler_products', 2, 1, idempotency_key => 'order-1001') = :first AS same_hold;
SELECT integrity.place_hold('wholesaler_products', 2::integer, 1.0, idempotency_key => 'order-1001') = :first
       AS same_hold_other_types;
SELECT * FROM stock();
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 3, 1, idempotency_key => 'order-1001')$$);
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 2, 2, idempotency_key => 'order-1001')$$);
-- The key stays the hold's after it was settled: a retry of the placement
-- still returns it, and reserves nothing.
SELECT integrity.commit_hold(:first);
SELECT integrity.place_hold('wholesaler_products', 2, 1, idempotency_key => 'order-1001') = :first AS same_hold;
SELECT * FROM stock();

------------------------------------------------------------------------------
-- Several rows: one hold per row, all or nothing, in the order of ids.
SELECT integrity.place_hold('wholesaler_products', ARRAY[3, 1], ARRAY[1, 2], interval '1 hour', 'cart-77') AS cart \gset
SELECT cardinality(:'cart'::bigint[]) AS holds;
SELECT row_key, quantity, status, idempotency_key, expires FROM hold_states
 WHERE hold_id = ANY (:'cart'::bigint[]) ORDER BY array_position(:'cart'::bigint[], hold_id);
SELECT integrity.place_hold('wholesaler_products', ARRAY[3, 1], ARRAY[1, 2], interval '1 hour', 'cart-77') = :'cart'
       AS same_holds;
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', ARRAY[3], ARRAY[1], NULL, 'cart-77')$$);
SELECT * FROM stock();
-- One row short: nothing is held.
SELECT integrity.place_hold('wholesaler_products', ARRAY[1, 3], ARRAY[1, 5]) AS short_cart;
SELECT * FROM stock();
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', ARRAY[1, 2], ARRAY[1])$$);
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', ARRAY[1, 99], ARRAY[1, 1])$$);
SELECT integrity.release_hold(h) FROM unnest(:'cart'::bigint[]) h;
SELECT * FROM stock();

------------------------------------------------------------------------------
-- Expiry: a pending hold past its ttl no longer counts.  It shows as
-- expired at once, cannot be settled (55000), and gives its quantity back
-- when expire_holds() runs or when a new hold is placed on its row.
SELECT integrity.place_hold('wholesaler_products', 3, 2, interval '10 milliseconds') AS abandoned \gset
SELECT integrity.place_hold('wholesaler_products', 1, 1, interval '10 milliseconds') AS abandoned_too \gset
SELECT pg_sleep(0.05);
SELECT n, status, settled FROM hold_states WHERE hold_id IN (:abandoned, :abandoned_too);
SELECT sqlstate, message, hint FROM expect_error(format('SELECT integrity.commit_hold(%s)', :abandoned));
SELECT sqlstate, message, hint FROM expect_error(format('SELECT integrity.release_hold(%s)', :abandoned));
SELECT * FROM stock();
-- Row 3 has nothing available until its abandoned hold expires, which the
-- next placement on it does first.
SELECT integrity.place_hold('wholesaler_products', 3, 2) IS NOT NULL AS placed_after_expiry;
SELECT * FROM stock();
SELECT status, settled FROM hold_states WHERE hold_id = :abandoned;
-- expire_holds() takes the rest (row 1's), and nothing the second time.
SELECT integrity.expire_holds() AS expired, integrity.expire_holds() AS expired_again;
SELECT * FROM stock();
SELECT sqlstate, message, hint FROM expect_error(format('SELECT integrity.commit_hold(%s)', :abandoned_too));

------------------------------------------------------------------------------
-- violations(): a row that reserves less than its pending holds hold (its
-- reservation was released behind the holds' back), and pending holds of a
-- row that is gone.
SELECT * FROM integrity.violations('wholesaler_products');
UPDATE wholesaler_products SET reserved_stock = 0 WHERE id = 3;
INSERT INTO wholesaler_products VALUES (4, 'Valve', 3, 0);
SELECT integrity.place_hold('wholesaler_products', 4, 1) IS NOT NULL AS placed;
DELETE FROM wholesaler_products WHERE id = 4;
SELECT * FROM integrity.violations('wholesaler_products');
SELECT * FROM integrity.violations() WHERE table_name = 'wholesaler_products'::regclass;
UPDATE wholesaler_products SET reserved_stock = 2 WHERE id = 3;

------------------------------------------------------------------------------
-- Who may do what.  A clerk who may update the table places and settles
-- holds; a viewer who may only read it sees them but settles none (42501);
-- an outsider sees none.  Nobody but a superuser can write a hold record
-- directly into a state the functions would not make, or touch a settled one.
CREATE ROLE holds_clerk;
CREATE ROLE holds_viewer;
CREATE ROLE holds_outsider;
GRANT USAGE ON SCHEMA checkout TO holds_clerk, holds_viewer, holds_outsider;
GRANT CREATE ON SCHEMA checkout TO holds_clerk;
GRANT SELECT, UPDATE ON wholesaler_products TO holds_clerk;
GRANT SELECT ON wholesaler_products TO holds_viewer;
SET ROLE holds_clerk;
SELECT integrity.place_hold('wholesaler_products', 1, 1, interval '1 day', 'clerk-1') AS clerks \gset
SELECT actor, status FROM integrity.holds WHERE hold_id = :clerks;
SELECT integrity.release_hold(:clerks);
-- Direct writes: a settled hold cannot be updated (no row is visible to the
-- update), a pending one cannot be given a status or quantity the functions
-- would not give it, and a hold cannot be invented as settled.
UPDATE integrity.hold_records SET status = 'pending', settled_at = NULL WHERE hold_id = :clerks;
SELECT integrity.place_hold('wholesaler_products', 1, 1) AS clerks2 \gset
SELECT * FROM expect_error(format($$UPDATE integrity.hold_records SET status = 'gone', settled_at = now() WHERE hold_id = %s$$, :clerks2));
SELECT * FROM expect_error(format($$UPDATE integrity.hold_records SET status = 'committed', settled_at = now(), committed_quantity = 5 WHERE hold_id = %s$$, :clerks2));
SELECT * FROM expect_error(format($$UPDATE integrity.hold_records SET quantity = 100 WHERE hold_id = %s$$, :clerks2));
SELECT * FROM expect_error($$INSERT INTO integrity.hold_records (table_name, kind, row_id, quantity, status, settled_at)
                             VALUES ('checkout.wholesaler_products', 'stock', '1', 1, 'committed', now())$$);
-- Only the holds of dropped tables can be deleted: the sql_drop event trigger
-- does it, as whoever drops the table.
WITH gone AS (DELETE FROM integrity.hold_records RETURNING 1) SELECT count(*) AS deleted FROM gone;
CREATE TABLE clerks_shelf (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
INSERT INTO clerks_shelf VALUES (1, 5, 0);
SELECT integrity.guard_stock('clerks_shelf');
SELECT integrity.place_hold('clerks_shelf', 1, 2) AS shelf_hold \gset
SELECT integrity.unprotect('clerks_shelf');
DROP TABLE clerks_shelf;
RESET ROLE;
SELECT count(*) AS shelf_holds FROM integrity.hold_records WHERE hold_id = :shelf_hold;
SET ROLE holds_clerk;
RESET ROLE;
SET ROLE holds_viewer;
SELECT count(*) > 0 AS sees_holds FROM integrity.holds WHERE table_name = 'wholesaler_products'::regclass;
SELECT * FROM expect_error(format('SELECT integrity.commit_hold(%s)', :clerks2));
SELECT * FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 1, 1)$$);
RESET ROLE;
SET ROLE holds_outsider;
SELECT count(*) AS sees_holds FROM integrity.holds;
SELECT * FROM expect_error(format('SELECT integrity.commit_hold(%s)', :clerks2));
RESET ROLE;
-- A superuser is not bound by row-level security: it can put a settled hold
-- back to pending.  violations() then shows the units that hold claims but
-- the row does not reserve.
UPDATE integrity.hold_records SET status = 'pending', settled_at = NULL WHERE hold_id = :clerks;
SELECT * FROM integrity.violations('wholesaler_products');
UPDATE integrity.hold_records SET status = 'released', settled_at = now() WHERE hold_id = :clerks;
SELECT integrity.release_hold(:clerks2);

------------------------------------------------------------------------------
-- The record of a hold is what the table's defaults make of it (the
-- functions write it without SQL where they can): this transaction, its
-- start, the role, line 1; settling it writes the status and the time.  What
-- the DBA adds to integrity.hold_records binds the functions' writes as any
-- other: a policy of their own, a trigger.
INSERT INTO wholesaler_products VALUES (4, 'Valve box', 20, 0);
BEGIN;
SET LOCAL ROLE holds_clerk;
SELECT integrity.place_hold('wholesaler_products', 4, 1, interval '1 hour') AS recorded \gset
SELECT txid = pg_current_xact_id() AS this_transaction, created_at = now() AS created_now,
       expires_at = now() + interval '1 hour' AS expires_in_an_hour, actor = current_user AS by_the_clerk,
       line, kind, status, quantity, idempotency_key IS NULL AS no_key, settled_at IS NULL AS unsettled
  FROM integrity.hold_records WHERE hold_id = :recorded;
SELECT integrity.commit_hold(:recorded);
SELECT status, committed_quantity, settled_at = now() AS settled_now FROM integrity.hold_records WHERE hold_id = :recorded;
COMMIT;
-- A restrictive policy: holds of more than 3 units are refused (42501).
CREATE POLICY hold_records_small ON integrity.hold_records AS RESTRICTIVE FOR INSERT WITH CHECK (quantity <= 3);
SET ROLE holds_clerk;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.place_hold('wholesaler_products', 4, 4)$$);
SELECT integrity.place_hold('wholesaler_products', 4, 3) AS small_hold \gset
SELECT integrity.release_hold(:small_hold);
RESET ROLE;
DROP POLICY hold_records_small ON integrity.hold_records;
-- A trigger sees every record written and settled.
CREATE TABLE hold_audit (hold_id bigint, op text, status text);
CREATE FUNCTION audit_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO checkout.hold_audit VALUES (NEW.hold_id, TG_OP, NEW.status); RETURN NULL; END $$;
CREATE TRIGGER hold_audit AFTER INSERT OR UPDATE ON integrity.hold_records FOR EACH ROW EXECUTE FUNCTION audit_hold();
SELECT integrity.place_hold('wholesaler_products', 4, 1) AS audited \gset
SELECT integrity.commit_hold(:audited);
SELECT op, status FROM hold_audit WHERE hold_id = :audited ORDER BY op;
DROP TRIGGER hold_audit ON integrity.hold_records;
DROP TABLE hold_audit;
DROP FUNCTION audit_hold();
SELECT stock, reserved_stock FROM wholesaler_products WHERE id = 4;
DELETE FROM wholesaler_products WHERE id = 4;

------------------------------------------------------------------------------
-- Credit holds: an open order holds part of the retailer's credit with the
-- wholesaler (a two-column account key).  Holds and ledger entries together
-- never take used credit above the limit; a committed hold hands its amount
-- to the DEBIT entry inserted after it, which counts it once.
CREATE TABLE credit_accounts (
    retailer_id   bigint,
    wholesaler_id bigint,
    credit_limit  numeric(12,2) NOT NULL,
    used_credit   numeric(12,2) NOT NULL DEFAULT 0,
    PRIMARY KEY (retailer_id, wholesaler_id)
);
CREATE TABLE ledger_entries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric(12,2) NOT NULL
);
INSERT INTO credit_accounts VALUES (7, 20, 100, 0), (8, 20, 50, 0);
SELECT integrity.guard_credit('credit_accounts');
SELECT integrity.guard_ledger_credit('ledger_entries', 'credit_accounts', '{retailer_id, wholesaler_id}');
SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 7, "wholesaler_id": 20}', 80,
                                   interval '30 minutes', 'order-5001') AS order_hold \gset
SELECT integrity.place_credit_hold('credit_accounts', '{"wholesaler_id": "20", "retailer_id": "7"}', 80,
                                   interval '30 minutes', 'order-5001') = :order_hold AS same_hold;
SELECT retailer_id, used_credit FROM credit_accounts ORDER BY 1;
SELECT row_key, quantity, status FROM hold_states WHERE hold_id = :order_hold;
-- Not enough credit left: NULL.  A DEBIT that would pass the limit with the
-- hold counted is refused by the ledger guard.
SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 7, "wholesaler_id": 20}', 30) AS too_much;
SELECT sqlstate, message FROM expect_error($$INSERT INTO checkout.ledger_entries (retailer_id, wholesaler_id, entry_type, amount)
                                            VALUES (7, 20, 'DEBIT', 30)$$);
SELECT * FROM integrity.violations('credit_accounts');
-- Delivery: commit the hold and book the DEBIT in one transaction.
BEGIN;
SELECT integrity.commit_hold(:order_hold, 75);
INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount) VALUES (7, 20, 'DEBIT', 75);
COMMIT;
SELECT retailer_id, used_credit FROM credit_accounts ORDER BY 1;
SELECT status, committed_quantity FROM hold_states WHERE hold_id = :order_hold;
SELECT * FROM integrity.violations('credit_accounts');
-- Release and expiry give credit back.
SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 8, "wholesaler_id": 20}', 50) AS full_hold \gset
SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 7, "wholesaler_id": 20}', 20, interval '10 ms') AS short_hold \gset
SELECT retailer_id, used_credit FROM credit_accounts ORDER BY 1;
SELECT integrity.release_hold(:full_hold);
SELECT pg_sleep(0.05);
SELECT integrity.expire_holds() AS expired;
SELECT retailer_id, used_credit FROM credit_accounts ORDER BY 1;
SELECT * FROM integrity.violations('credit_accounts');
-- used credit that drifted from ledger plus holds is reported with the holds.
SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 8, "wholesaler_id": 20}', 10) IS NOT NULL AS placed;
UPDATE credit_accounts SET used_credit = 5 WHERE retailer_id = 8;
SELECT * FROM integrity.violations('credit_accounts');
UPDATE credit_accounts SET used_credit = 10 WHERE retailer_id = 8;
-- Errors.
SELECT * FROM expect_error($$SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 7}', 1)$$);
SELECT * FROM expect_error($$SELECT integrity.place_credit_hold('credit_accounts', '[7, 20]', 1)$$);
SELECT * FROM expect_error($$SELECT integrity.place_credit_hold('credit_accounts', NULL, 1)$$);
SELECT * FROM expect_error($$SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 9, "wholesaler_id": 20}', 1)$$);
SELECT * FROM expect_error($$SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 7, "wholesaler_id": 20}', 0)$$);
SELECT * FROM expect_error($$SELECT integrity.place_credit_hold('credit_accounts', '{"retailer_id": 7, "wholesaler_id": 20}', 'NaN')$$);
SELECT * FROM expect_error($$SELECT integrity.place_credit_hold('wholesaler_products', '{"id": 1}', 1)$$);

------------------------------------------------------------------------------
-- Key types: a hold records its row's key as jsonb, and settling finds the
-- row again by it, through the key type's input function (uuid, numeric),
-- as text (text) or through text's own cast (varchar).
CREATE TABLE keyed_shelves (
    kind           text,
    uuid_key       uuid,
    numeric_key    numeric,
    text_key       text,
    varchar_key    varchar(20),
    stock          integer NOT NULL,
    reserved_stock integer NOT NULL DEFAULT 0
);
CREATE TABLE shelf_uuid (LIKE keyed_shelves INCLUDING DEFAULTS, PRIMARY KEY (uuid_key));
CREATE TABLE shelf_numeric (LIKE keyed_shelves INCLUDING DEFAULTS, PRIMARY KEY (numeric_key));
CREATE TABLE shelf_text (LIKE keyed_shelves INCLUDING DEFAULTS, PRIMARY KEY (text_key));
CREATE TABLE shelf_varchar (LIKE keyed_shelves INCLUDING DEFAULTS, PRIMARY KEY (varchar_key));
INSERT INTO shelf_uuid (kind, uuid_key, stock) VALUES ('uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 10);
INSERT INTO shelf_numeric (kind, numeric_key, stock) VALUES ('numeric', 1.50, 10);
INSERT INTO shelf_text (kind, text_key, stock) VALUES ('text', 'PVC "1/2"', 10);
INSERT INTO shelf_varchar (kind, varchar_key, stock) VALUES ('varchar', 'SKU-7', 10);
SELECT integrity.guard_stock(t) FROM unnest('{shelf_uuid,shelf_numeric,shelf_text,shelf_varchar}'::regclass[]) t;
SELECT integrity.place_hold('shelf_uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, 3) AS uuid_commit,
       integrity.place_hold('shelf_uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, 2) AS uuid_release,
       integrity.place_hold('shelf_numeric', 1.5, 3) AS numeric_commit,
       integrity.place_hold('shelf_numeric', 1.500, 2) AS numeric_release,
       integrity.place_hold('shelf_text', 'PVC "1/2"'::text, 3) AS text_commit,
       integrity.place_hold('shelf_text', 'PVC "1/2"'::text, 2) AS text_release,
       integrity.place_hold('shelf_varchar', 'SKU-7'::varchar, 3) AS varchar_commit,
       integrity.place_hold('shelf_varchar', 'SKU-7'::varchar, 2) AS varchar_release \gset
SELECT kind, stock, reserved_stock FROM shelf_uuid UNION ALL SELECT kind, stock, reserved_stock FROM shelf_numeric
 UNION ALL SELECT kind, stock, reserved_stock FROM shelf_text UNION ALL SELECT kind, stock, reserved_stock FROM shelf_varchar;
SELECT integrity.commit_hold(:uuid_commit, 1), integrity.release_hold(:uuid_release),
       integrity.commit_hold(:numeric_commit, 1), integrity.release_hold(:numeric_release),
       integrity.commit_hold(:text_commit, 1), integrity.release_hold(:text_release),
       integrity.commit_hold(:varchar_commit, 1), integrity.release_hold(:varchar_release);
-- Each row: one unit consumed, nothing reserved any more.
SELECT kind, stock, reserved_stock FROM shelf_uuid UNION ALL SELECT kind, stock, reserved_stock FROM shelf_numeric
 UNION ALL SELECT kind, stock, reserved_stock FROM shelf_text UNION ALL SELECT kind, stock, reserved_stock FROM shelf_varchar;
SELECT row_key, status, quantity, committed_quantity FROM integrity.holds
 WHERE table_name IN ('shelf_uuid'::regclass, 'shelf_numeric', 'shelf_text', 'shelf_varchar') ORDER BY hold_id;
-- A hold whose row no longer reserves it (the owner lowered reserved_stock):
-- settling it is refused as commit_stock refuses, and changes nothing.
SELECT integrity.place_hold('shelf_uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, 4) AS short_hold \gset
UPDATE shelf_uuid SET reserved_stock = 1;
SELECT * FROM expect_error(format('SELECT integrity.commit_hold(%s)', :short_hold));
SELECT status FROM integrity.holds WHERE hold_id = :short_hold;
SELECT kind, stock, reserved_stock FROM shelf_uuid;
SELECT integrity.unprotect(t) FROM unnest('{shelf_uuid,shelf_numeric,shelf_text,shelf_varchar}'::regclass[]) t;
DROP TABLE shelf_uuid, shelf_numeric, shelf_text, shelf_varchar, keyed_shelves;

------------------------------------------------------------------------------
-- A placement expires the row's overdue holds first, also when the row has
-- enough available without them.
SELECT reserved_stock AS reserved_before FROM wholesaler_products WHERE id = 1 \gset
SELECT integrity.place_hold('wholesaler_products', 1, 1, interval '10 milliseconds') AS overdue_hold \gset
SELECT pg_sleep(0.05);
SELECT integrity.place_hold('wholesaler_products', 1, 1) AS fresh_hold \gset
SELECT status, settled_at IS NOT NULL AS settled FROM integrity.hold_records WHERE hold_id = :overdue_hold;
SELECT reserved_stock - :reserved_before AS reserved_added FROM wholesaler_products WHERE id = 1;
SELECT integrity.release_hold(:fresh_hold);

------------------------------------------------------------------------------
-- A dropped table takes its holds with it; a renamed one keeps them.
ALTER TABLE wholesaler_products RENAME TO products;
SELECT DISTINCT table_name FROM integrity.holds WHERE table_name::text LIKE 'checkout.%' ORDER BY 1;
SELECT count(*) > 0 AS has_holds FROM integrity.hold_records WHERE table_name = 'products'::regclass;
SELECT integrity.unprotect('products');
DROP TABLE products CASCADE;
SELECT count(*) AS holds_left FROM integrity.hold_records h
 WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = h.table_name);

SELECT integrity.unprotect('ledger_entries');
SELECT integrity.unprotect('credit_accounts');
RESET search_path;
DROP SCHEMA checkout CASCADE;
DROP ROLE holds_clerk, holds_viewer, holds_outsider;

\ir common/teardown.sql
