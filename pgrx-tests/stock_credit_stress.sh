#!/usr/bin/env bash
# Stock reservations and ledger credit under many concurrent pgbench clients:
# never oversold, never over the limit, and the cached totals always equal
# what the logs say.
#
# Stock: a few wholesaler_products (guard_stock).  Clients reserve random
# quantities with integrity.reserve_stock (single products and multi-row carts
# whose products come in random order, duplicates included) and record every
# successful reservation in stock_reservations in the same transaction;
# others release or commit (consume) an outstanding reservation, or restock a
# product.  Afterwards, for every product:
#     reserved_stock = sum of the outstanding (RESERVED) reservations,
#     stock = initial + restocked - committed,   stock >= reserved_stock >= 0,
# some reservations were refused (false: the stock ran out), and no client
# ever deadlocked.
#
# Credit: a few retailer-wholesaler accounts (guard_credit) and an append-only
# ledger_entries with guard_ledger_credit.  Clients book DEBIT and CREDIT
# entries through book(), which records a refused entry (23514, caught like an
# application would) in refused_entries.  Afterwards, for every account:
#     used_credit = sum(DEBIT) - sum(CREDIT) of its ledger entries,
#     0 <= used_credit <= credit_limit,
# and some debits were refused (the limit was reached).
#
# Each workload runs at READ COMMITTED (where nothing may fail) and at
# REPEATABLE READ (where the losers of a race get 40001 and pgbench retries
# them with --max-tries); -M prepared throughout.
#
# Environment: STRESS_CLIENTS (default 8), STRESS_SECONDS per pgbench run
# (default 3: four runs, about 15 s in all; make bench runs it longer).
set -euo pipefail
. "$(dirname "$0")/lib.bash"

stress_settings 8 3
new_db DB main
log "== database $DB, $CLIENTS clients, $SECONDS_PER_RUN s per run"

sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;

-- Stock ---------------------------------------------------------------------
CREATE TABLE wholesaler_products (
    id             integer PRIMARY KEY,
    wholesaler_id  integer NOT NULL,
    initial_stock  integer NOT NULL,
    stock          integer NOT NULL,
    reserved_stock integer NOT NULL DEFAULT 0
);
INSERT INTO wholesaler_products (id, wholesaler_id, initial_stock, stock)
SELECT p, 20 + p % 2, 30, 30 FROM generate_series(1, 5) p;
SELECT integrity.guard_stock('wholesaler_products');

CREATE TABLE stock_reservations (
    id         bigserial PRIMARY KEY,
    product_id integer NOT NULL,
    qty        integer NOT NULL CHECK (qty > 0),
    status     text    NOT NULL CHECK (status IN ('RESERVED', 'RELEASED', 'COMMITTED'))
);
CREATE INDEX ON stock_reservations (product_id) WHERE status = 'RESERVED';
CREATE TABLE restocks (product_id integer NOT NULL, qty integer NOT NULL);
-- Every reservation attempt of the current run, with its outcome (true/false).
CREATE TABLE reservation_attempts (kind text NOT NULL, ok boolean NOT NULL);

-- Credit --------------------------------------------------------------------
CREATE TABLE retailer_wholesaler_credits (
    retailer_id   integer NOT NULL,
    wholesaler_id integer NOT NULL,
    credit_limit  numeric(14, 2) NOT NULL,
    used_credit   numeric(14, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (retailer_id, wholesaler_id)
);
INSERT INTO retailer_wholesaler_credits (retailer_id, wholesaler_id, credit_limit)
SELECT r, w, 500.00 FROM generate_series(1, 2) r, generate_series(20, 21) w;
SELECT integrity.guard_credit('retailer_wholesaler_credits');

CREATE TABLE ledger_entries (
    id            bigserial PRIMARY KEY,
    retailer_id   integer NOT NULL,
    wholesaler_id integer NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric(14, 2) NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
SELECT integrity.protect_append_only('ledger_entries');
SELECT integrity.guard_ledger_credit('ledger_entries', 'retailer_wholesaler_credits',
                                     ARRAY['retailer_id', 'wholesaler_id']);
-- Every refused entry of the current run.
CREATE TABLE refused_entries (entry_type text NOT NULL, sqlstate text NOT NULL, message text NOT NULL);

-- book(): what an application does -- insert the entry, and on a refusal
-- (23514) record it and carry on.  A 40001 is not caught: pgbench retries it.
CREATE FUNCTION book(r integer, w integer, kind text, amount numeric) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount) VALUES (r, w, kind, amount);
    RETURN 'booked';
EXCEPTION WHEN check_violation THEN
    INSERT INTO refused_entries VALUES (kind, SQLSTATE, SQLERRM);
    RETURN 'refused';
END $$;
SQL

# --- pgbench scripts ----------------------------------------------------------
cat >"$TMP_DIR/reserve.sql" <<'EOF'
\set p random(1, 5)
\set q random(1, 4)
BEGIN;
SELECT integrity.reserve_stock('wholesaler_products', (:p)::integer, (:q)::numeric)::integer AS ok \gset
INSERT INTO reservation_attempts VALUES ('single', (:ok)::integer = 1);
\if :ok = 1
INSERT INTO stock_reservations (product_id, qty, status) VALUES (:p, :q, 'RESERVED');
\endif
END;
EOF
cat >"$TMP_DIR/cart.sql" <<'EOF'
\set p1 random(1, 5)
\set p2 random(1, 5)
\set p3 random(1, 5)
\set q1 random(1, 3)
\set q2 random(1, 3)
\set q3 random(1, 3)
BEGIN;
SELECT integrity.reserve_stock('wholesaler_products', ARRAY[(:p1)::integer, (:p2)::integer, (:p3)::integer],
                               ARRAY[(:q1)::numeric, (:q2)::numeric, (:q3)::numeric])::integer AS ok \gset
INSERT INTO reservation_attempts VALUES ('cart', (:ok)::integer = 1);
\if :ok = 1
INSERT INTO stock_reservations (product_id, qty, status) VALUES (:p1, :q1, 'RESERVED'), (:p2, :q2, 'RESERVED'), (:p3, :q3, 'RESERVED');
\endif
END;
EOF
cat >"$TMP_DIR/settle.sql" <<'EOF'
\set p random(1, 5)
\set action random(0, 1)
BEGIN;
SELECT coalesce((SELECT id FROM stock_reservations WHERE product_id = (:p)::integer AND status = 'RESERVED'
                  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED), 0) AS rid \gset
\if :rid > 0
SELECT qty AS rq FROM stock_reservations WHERE id = (:rid)::bigint \gset
\if :action = 0
UPDATE stock_reservations SET status = 'RELEASED' WHERE id = (:rid)::bigint;
SELECT integrity.release_stock('wholesaler_products', (:p)::integer, (:rq)::numeric);
\else
UPDATE stock_reservations SET status = 'COMMITTED' WHERE id = (:rid)::bigint;
SELECT integrity.commit_stock('wholesaler_products', (:p)::integer, (:rq)::numeric);
\endif
\endif
END;
EOF
cat >"$TMP_DIR/restock.sql" <<'EOF'
\set p random(1, 5)
BEGIN;
UPDATE wholesaler_products SET stock = stock + 3 WHERE id = (:p)::integer;
INSERT INTO restocks VALUES (:p, 3);
END;
EOF
cat >"$TMP_DIR/debit.sql" <<'EOF'
\set r random(1, 2)
\set w random(20, 21)
\set cents random(100, 9000)
SELECT book((:r)::integer, (:w)::integer, 'DEBIT', (:cents)::numeric / 100);
EOF
cat >"$TMP_DIR/payment.sql" <<'EOF'
\set r random(1, 2)
\set w random(20, 21)
\set cents random(100, 9000)
SELECT book((:r)::integer, (:w)::integer, 'CREDIT', (:cents)::numeric / 100);
EOF

# check_stock LABEL: the stock invariants, and the figures.
check_stock() {
    local label=$1 figures
    check_eq "[$label] reserved_stock = outstanding reservations, stock = initial + restocked - committed, stock >= reserved_stock >= 0" "" \
        "$(sql "$DB" <<'SQL'
SELECT format('product %s: stock %s reserved %s, expected stock %s reserved %s', p.id, p.stock, p.reserved_stock,
              p.initial_stock + coalesce(rs.qty, 0) - coalesce(c.qty, 0), coalesce(o.qty, 0))
  FROM wholesaler_products p
  LEFT JOIN (SELECT product_id, sum(qty) qty FROM stock_reservations WHERE status = 'RESERVED' GROUP BY 1) o ON o.product_id = p.id
  LEFT JOIN (SELECT product_id, sum(qty) qty FROM stock_reservations WHERE status = 'COMMITTED' GROUP BY 1) c ON c.product_id = p.id
  LEFT JOIN (SELECT product_id, sum(qty) qty FROM restocks GROUP BY 1) rs ON rs.product_id = p.id
 WHERE p.reserved_stock <> coalesce(o.qty, 0)
    OR p.stock <> p.initial_stock + coalesce(rs.qty, 0) - coalesce(c.qty, 0)
    OR NOT (p.stock >= p.reserved_stock AND p.reserved_stock >= 0)
 ORDER BY p.id
SQL
)"
    figures=$(sql "$DB" <<'SQL'
SELECT format('this run: %s single + %s cart reservations true, %s single + %s carts false (not enough stock); '
              'in all: %s released, %s committed (%s units), %s outstanding (%s units), %s restocks',
              count(*) FILTER (WHERE kind = 'single' AND ok), count(*) FILTER (WHERE kind = 'cart' AND ok),
              count(*) FILTER (WHERE kind = 'single' AND NOT ok), count(*) FILTER (WHERE kind = 'cart' AND NOT ok),
              (SELECT count(*) FROM stock_reservations WHERE status = 'RELEASED'),
              (SELECT count(*) FROM stock_reservations WHERE status = 'COMMITTED'),
              (SELECT coalesce(sum(qty), 0) FROM stock_reservations WHERE status = 'COMMITTED'),
              (SELECT count(*) FROM stock_reservations WHERE status = 'RESERVED'),
              (SELECT coalesce(sum(qty), 0) FROM stock_reservations WHERE status = 'RESERVED'),
              (SELECT count(*) FROM restocks))
  FROM reservation_attempts
SQL
)
    log "       $figures"
    sql "$DB" "SELECT format('product %s: stock %s, reserved %s, available %s', id, stock, reserved_stock, stock - reserved_stock)
                 FROM wholesaler_products ORDER BY id" | sed 's/^/       /'
    if [ "$(sql "$DB" "SELECT count(*) FROM reservation_attempts WHERE ok")" -gt 0 ]; then
        pass "[$label] reservations succeeded"
    else
        fail "[$label] no reservation succeeded"
    fi
    if [ "$(sql "$DB" "SELECT count(*) FROM reservation_attempts WHERE NOT ok")" -gt 0 ]; then
        pass "[$label] some reservations were refused: the stock ran out and was not oversold"
    else
        fail "[$label] expected some reservations to find too little stock, none did"
    fi
}

# check_credit LABEL: the credit invariants, and the figures.
check_credit() {
    local label=$1
    check_eq "[$label] used_credit = sum(DEBIT) - sum(CREDIT) of the ledger, 0 <= used_credit <= credit_limit" "" \
        "$(sql "$DB" <<'SQL'
SELECT format('account (%s, %s): used %s, limit %s, ledger %s', a.retailer_id, a.wholesaler_id, a.used_credit,
              a.credit_limit, coalesce(l.total, 0))
  FROM retailer_wholesaler_credits a
  LEFT JOIN (SELECT retailer_id, wholesaler_id,
                    sum(CASE entry_type WHEN 'DEBIT' THEN amount ELSE -amount END) AS total
               FROM ledger_entries GROUP BY 1, 2) l USING (retailer_id, wholesaler_id)
 WHERE a.used_credit <> coalesce(l.total, 0) OR a.used_credit < 0 OR a.used_credit > a.credit_limit
 ORDER BY 1
SQL
)"
    log "       $(sql "$DB" "SELECT format('this run: %s DEBIT + %s CREDIT entries booked; refused: %s DEBIT (over the limit), %s CREDIT (below zero)',
                 (SELECT count(*) FROM ledger_entries WHERE entry_type = 'DEBIT' AND id > $LEDGER_MARK),
                 (SELECT count(*) FROM ledger_entries WHERE entry_type = 'CREDIT' AND id > $LEDGER_MARK),
                 (SELECT count(*) FROM refused_entries WHERE entry_type = 'DEBIT'),
                 (SELECT count(*) FROM refused_entries WHERE entry_type = 'CREDIT'))")"
    sql "$DB" "SELECT format('account (%s, %s): limit %s, used %s', retailer_id, wholesaler_id, credit_limit, used_credit)
                 FROM retailer_wholesaler_credits ORDER BY 1" | sed 's/^/       /'
    check_eq "[$label] every refusal was 23514" "" \
        "$(sql "$DB" "SELECT DISTINCT sqlstate || ': ' || message FROM refused_entries WHERE sqlstate <> '23514'")"
    if [ "$(sql "$DB" "SELECT count(*) FROM refused_entries WHERE entry_type = 'DEBIT'")" -gt 0 ]; then
        pass "[$label] some debits were refused (23514): the limit was reached and held"
    else
        fail "[$label] expected some debits to be refused at the limit, none were"
    fi
}

# new_run: per-run figures start from zero (the invariants cover all runs).
new_run() {
    sql "$DB" "TRUNCATE reservation_attempts, refused_entries"
    LEDGER_MARK=$(sql "$DB" "SELECT coalesce(max(id), 0) FROM ledger_entries")
}

# --- runs -------------------------------------------------------------------------
new_run
run_pgbench stock_rc "read committed" reserve.sql@5 cart.sql@3 settle.sql@4 restock.sql@1
check_stock stock_rc
new_run
run_pgbench stock_rr "repeatable read" reserve.sql@5 cart.sql@3 settle.sql@4 restock.sql@1
check_stock stock_rr

new_run
run_pgbench credit_rc "read committed" debit.sql@3 payment.sql@1
check_credit credit_rc
new_run
run_pgbench credit_rr "repeatable read" debit.sql@3 payment.sql@1
check_credit credit_rr

finish
