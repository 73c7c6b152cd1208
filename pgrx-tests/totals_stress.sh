#!/usr/bin/env bash
# Maintained totals under many concurrent pgbench clients (guide 003): stock
# rows whose quantity is the sum of their pieces in stock, while clients add
# pieces, move pieces between stock rows in both directions (several pieces
# per statement), sell and restore runs of pieces (COMBINE_SPARES and its
# revert), delete pieces, and run recompute_totals() in the middle of it all.
# Afterwards every stock row's quantity equals the sum of its pieces in stock
# (violations() finds nothing, and recompute_totals() has nothing to
# correct), and no transaction deadlocked.
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
CREATE TABLE inventory_stock (id integer PRIMARY KEY, quantity integer NOT NULL DEFAULT 0);
CREATE TABLE sprinkler_spare_pieces (
    id          bigserial PRIMARY KEY,
    stock_id    integer   NOT NULL REFERENCES inventory_stock ON DELETE CASCADE,
    piece_count integer   NOT NULL,
    status      text      NOT NULL DEFAULT 'IN_STOCK'
);
CREATE INDEX ON sprinkler_spare_pieces (stock_id);
SELECT integrity.maintain_total('inventory_stock', 'quantity', 'sprinkler_spare_pieces', ARRAY['stock_id'],
                                'piece_count', $$status = 'IN_STOCK'$$);
INSERT INTO inventory_stock (id) SELECT g FROM generate_series(1, 10) g;
INSERT INTO sprinkler_spare_pieces (stock_id, piece_count) SELECT 1 + g % 10, 1 + g % 7 FROM generate_series(1, 2000) g;
SQL

cat >"$TMP_DIR/add.sql" <<'EOF'
\set s random(1, 10)
\set n random(1, 9)
INSERT INTO sprinkler_spare_pieces (stock_id, piece_count) VALUES (:s, :n);
EOF
# Pieces of one stock row to another, locked in id order (the moves of two
# clients between the same rows, in opposite directions, happen all the time).
cat >"$TMP_DIR/move.sql" <<'EOF'
\set a random(1, 10)
\set b random(1, 10)
UPDATE sprinkler_spare_pieces SET stock_id = :b
 WHERE id IN (SELECT id FROM sprinkler_spare_pieces WHERE stock_id = :a ORDER BY id LIMIT 3 FOR UPDATE);
EOF
# A run of pieces sold (or restored), locked in id order as the moves lock
# theirs: locked in the order a scan meets them, two writers of overlapping
# pieces could deadlock on the pieces themselves, before any total is touched.
cat >"$TMP_DIR/sell.sql" <<'EOF'
\set x random(1, 2000)
UPDATE sprinkler_spare_pieces SET status = CASE status WHEN 'IN_STOCK' THEN 'SOLD_OUT' ELSE 'IN_STOCK' END
 WHERE id IN (SELECT id FROM sprinkler_spare_pieces WHERE id BETWEEN :x AND :x + 20 ORDER BY id FOR UPDATE);
EOF
cat >"$TMP_DIR/remove.sql" <<'EOF'
\set x random(1, 3000)
DELETE FROM sprinkler_spare_pieces WHERE id = :x;
EOF
cat >"$TMP_DIR/recompute.sql" <<'EOF'
SELECT integrity.recompute_totals('inventory_stock');
EOF

check_totals() {
    local label=$1
    check_eq "[$label] every quantity equals the sum of its pieces in stock" "" "$(sql "$DB" <<'SQL'
SELECT format('stock %s: quantity %s, pieces %s', s.id, s.quantity, coalesce(p.total, 0))
  FROM inventory_stock s
  LEFT JOIN (SELECT stock_id, sum(piece_count) AS total FROM sprinkler_spare_pieces
              WHERE status = 'IN_STOCK' GROUP BY 1) p ON p.stock_id = s.id
 WHERE s.quantity <> coalesce(p.total, 0)
 ORDER BY s.id
SQL
)"
    check_eq "[$label] violations() finds nothing" "" "$(sql "$DB" "SELECT detail FROM integrity.violations()")"
    check_eq "[$label] recompute_totals() has nothing to correct" "0" \
        "$(sql "$DB" "SELECT integrity.recompute_totals('inventory_stock')")"
    log "       $(sql "$DB" "SELECT format('%s pieces, %s in stock, quantities %s', count(*), count(*) FILTER (WHERE status = 'IN_STOCK'),
                 (SELECT string_agg(quantity::text, ' ' ORDER BY id) FROM inventory_stock)) FROM sprinkler_spare_pieces")"
}

for isolation in "read committed" "repeatable read"; do
    label=totals_${isolation// /_}
    run_pgbench "$label" "$isolation" add.sql@4 move.sql@6 sell.sql@4 remove.sql@2 recompute.sql@1
    check_totals "$label"
done
finish
