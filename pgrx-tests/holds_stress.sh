#!/usr/bin/env bash
# Holds under many concurrent pgbench clients: every reservation is a hold,
# and the counters never drift from the holds.
#
# A few wholesaler_products (guard_stock).  Clients place holds with a short
# ttl (single rows, idempotency-keyed retries of the same order, and carts of
# several rows), settle random pending holds (commit in full or in part,
# release; two clients may race for the same hold), abandon holds (never
# settled: they expire), and run expire_holds() in a loop.  Afterwards, for
# every product:
#     reserved_stock = sum of its pending holds,
#     stock = initial + restocked - sum of what committed holds consumed,
#     stock >= reserved_stock >= 0,
# which could not hold if a hold were settled twice (or settled and expired);
# and holds were placed, refused, committed, released and expired.
#
# Runs at READ COMMITTED (nothing may fail) and at REPEATABLE READ (the losers
# of a race get 40001, which pgbench retries); -M prepared throughout.
#
# Environment: STRESS_CLIENTS (default 8), STRESS_SECONDS per pgbench run
# (default 3).
set -euo pipefail
. "$(dirname "$0")/lib.bash"

stress_settings 8 3
new_db DB main
log "== database $DB, $CLIENTS clients, $SECONDS_PER_RUN s per run"

sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE TABLE wholesaler_products (
    id             integer PRIMARY KEY,
    initial_stock  integer NOT NULL,
    stock          integer NOT NULL,
    reserved_stock integer NOT NULL DEFAULT 0
);
INSERT INTO wholesaler_products (id, initial_stock, stock) SELECT p, 60, 60 FROM generate_series(1, 5) p;
-- Product 6 is for abandoned carts: with stock to spare, they are always
-- placed, and always expire.
INSERT INTO wholesaler_products (id, initial_stock, stock) VALUES (6, 1000000, 1000000);
SELECT integrity.guard_stock('wholesaler_products');

CREATE TABLE restocks (product_id integer NOT NULL, qty integer NOT NULL);
-- Every settle attempt, with what the function returned (or the expiry it hit).
CREATE TABLE settle_attempts (hold_id bigint, action text, outcome text);
-- Every placement attempt: placed or refused (NULL, not enough stock).
CREATE TABLE place_attempts (kind text, placed boolean);

-- settle(): what an application does when it settles a hold.  An expired hold
-- (55000) is recorded and the transaction goes on; 40001 is left to pgbench.
CREATE FUNCTION settle(hold bigint, action integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    outcome text;
BEGIN
    IF hold IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        outcome := CASE action WHEN 0 THEN integrity.commit_hold(hold)
                               WHEN 1 THEN integrity.commit_hold(hold, 1)
                               ELSE integrity.release_hold(hold) END;
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        outcome := 'expired (55000)';
    END;
    INSERT INTO settle_attempts VALUES (hold, CASE action WHEN 0 THEN 'commit' WHEN 1 THEN 'partial commit' ELSE 'release' END,
                                        outcome);
END $$;
SQL

cat >"$TMP_DIR/place.sql" <<'EOF'
\set p random(1, 5)
\set q random(1, 4)
\set ms random(100, 1500)
BEGIN;
INSERT INTO place_attempts
SELECT 'single', integrity.place_hold('wholesaler_products', (:p)::integer, (:q)::numeric, (:ms)::integer * interval '1 ms') IS NOT NULL;
END;
EOF
# An order placed under its key: the same key is the same request (same row
# and quantity), retried by any client at any time.
cat >"$TMP_DIR/place_keyed.sql" <<'EOF'
\set k random(1, 400)
BEGIN;
INSERT INTO place_attempts
SELECT 'keyed', integrity.place_hold('wholesaler_products', (:k)::integer % 5 + 1, ((:k)::integer % 3 + 1)::numeric,
                                     interval '1 second', 'order-' || :k) IS NOT NULL;
END;
EOF
cat >"$TMP_DIR/cart.sql" <<'EOF'
\set p1 random(1, 5)
\set p2 random(1, 5)
\set q1 random(1, 3)
\set q2 random(1, 3)
BEGIN;
INSERT INTO place_attempts
SELECT 'cart', integrity.place_hold('wholesaler_products', ARRAY[(:p1)::integer, (:p2)::integer],
                                    ARRAY[(:q1)::numeric, (:q2)::numeric], interval '800 ms') IS NOT NULL;
END;
EOF
# Settle one of the latest pending holds (two clients may pick the same).
cat >"$TMP_DIR/settle.sql" <<'EOF'
\set back random(0, 40)
\set action random(0, 2)
BEGIN;
SELECT settle((SELECT h.hold_id FROM integrity.hold_records h
                WHERE h.status = 'pending' AND h.hold_id >= (SELECT max(hold_id) FROM integrity.hold_records) - :back
                ORDER BY h.hold_id LIMIT 1), :action);
END;
EOF
# An abandoned cart: a hold nobody settles, which must expire.
cat >"$TMP_DIR/abandon.sql" <<'EOF'
BEGIN;
INSERT INTO place_attempts
SELECT 'abandoned', integrity.place_hold('wholesaler_products', 6, 1, interval '50 ms') IS NOT NULL;
END;
EOF
cat >"$TMP_DIR/restock.sql" <<'EOF'
\set p random(1, 5)
BEGIN;
UPDATE wholesaler_products SET stock = stock + 3 WHERE id = (:p)::integer;
INSERT INTO restocks VALUES (:p, 3);
END;
EOF
cat >"$TMP_DIR/expire.sql" <<'EOF'
SELECT integrity.expire_holds();
EOF

# check_holds LABEL: the invariants, then the figures of the run.
check_holds() {
    local label=$1 n
    check_eq "[$label] reserved_stock = pending holds, stock = initial + restocked - committed, stock >= reserved_stock >= 0" "" \
        "$(sql "$DB" <<'SQL'
SELECT format('product %s: stock %s reserved %s, expected stock %s reserved %s', p.id, p.stock, p.reserved_stock,
              p.initial_stock + coalesce(r.qty, 0) - coalesce(h.consumed, 0), coalesce(h.pending, 0))
  FROM wholesaler_products p
  LEFT JOIN (SELECT h.row_id::integer AS id,
                    sum(h.quantity) FILTER (WHERE h.status = 'pending') AS pending,
                    sum(h.committed_quantity) FILTER (WHERE h.status = 'committed') AS consumed
               FROM integrity.hold_records h GROUP BY 1) h ON h.id = p.id
  LEFT JOIN (SELECT product_id, sum(qty) AS qty FROM restocks GROUP BY 1) r ON r.product_id = p.id
 WHERE p.reserved_stock <> coalesce(h.pending, 0)
    OR p.stock <> p.initial_stock + coalesce(r.qty, 0) - coalesce(h.consumed, 0)
    OR NOT (p.stock >= p.reserved_stock AND p.reserved_stock >= 0)
 ORDER BY p.id
SQL
)"
    check_eq "[$label] every hold is pending or settled once (status and settled_at agree)" "" \
        "$(sql "$DB" "SELECT hold_id FROM integrity.hold_records
                       WHERE (status = 'pending') <> (settled_at IS NULL)
                          OR (status = 'committed') <> (committed_quantity IS NOT NULL)")"
    check_eq "[$label] violations() finds nothing" "" "$(sql "$DB" "SELECT detail FROM integrity.violations()")"
    check_eq "[$label] one hold per idempotency key" "" \
        "$(sql "$DB" "SELECT idempotency_key FROM integrity.hold_records WHERE idempotency_key IS NOT NULL
                       GROUP BY 1 HAVING count(*) > 1")"
    log "       $(sql "$DB" "SELECT format('placements: %s placed, %s refused (not enough stock); holds: %s',
                 count(*) FILTER (WHERE placed), count(*) FILTER (WHERE NOT placed),
                 (SELECT string_agg(s || ' ' || n, ', ' ORDER BY s)
                    FROM (SELECT status, count(*) FROM integrity.hold_records GROUP BY 1) AS c(s, n)))
                 FROM place_attempts")"
    log "       $(sql "$DB" "SELECT 'settle attempts: ' || string_agg(format('%s -> %s: %s', action, outcome, n), ', ' ORDER BY action, outcome)
                 FROM (SELECT action, outcome, count(*) AS n FROM settle_attempts GROUP BY 1, 2) s")"
    for state in committed released expired; do
        n=$(sql "$DB" "SELECT count(*) FROM integrity.hold_records WHERE status = '$state' AND settled_at >= '$RUN_START'")
        if [ "$n" -gt 0 ]; then pass "[$label] holds were $state ($n)"; else fail "[$label] no hold was $state"; fi
    done
    n=$(sql "$DB" "SELECT count(*) FROM place_attempts WHERE NOT placed")
    if [ "$n" -gt 0 ]; then pass "[$label] some placements found too little stock ($n)"; else fail "[$label] no placement was refused"; fi
    n=$(sql "$DB" "SELECT count(*) FROM settle_attempts s JOIN integrity.hold_records h USING (hold_id)
                    WHERE s.outcome <> h.status OR (s.action = 'release') <> (h.status = 'released')")
    log "       settle attempts that found the hold settled the other way or expired: $n"
}

# The figures of each run start from zero (the invariants cover all runs).
new_run() {
    sql "$DB" "TRUNCATE place_attempts, settle_attempts"
    RUN_START=$(sql "$DB" "SELECT now()")
}

for isolation in "read committed" "repeatable read"; do
    label=holds_${isolation// /_}
    new_run
    run_pgbench "$label" "$isolation" place.sql@6 place_keyed.sql@3 cart.sql@2 abandon.sql@2 settle.sql@8 restock.sql@1 expire.sql@1
    check_holds "$label"
done
finish
