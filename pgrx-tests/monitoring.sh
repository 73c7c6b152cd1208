#!/usr/bin/env bash
# Refusal counters and LISTEN integrity_refusals on a throwaway cluster of
# its own (it restarts the server): counts from several sessions whose
# refused writes roll back, the notifications (JSON, coalesced, their counts
# adding up), a flood of 100,000 refusals from 8 pgbench clients (counts
# exact, the table bounded, the server fine), persistence across a clean
# restart (not across a crash), a full table (dropped refusals reported by
# health()), the history of record_check() through pg_dump/pg_restore, and
# the extension without the preload (health() says how to count).
set -euo pipefail
. "$(dirname "$0")/lib.bash"

FLOOD_CLIENTS=${FLOOD_CLIENTS:-8}
FLOOD_PER_CLIENT=${FLOOD_PER_CLIENT:-12500}
FLOOD=$((FLOOD_CLIENTS * FLOOD_PER_CLIENT))

# The cluster: no TCP, a socket directory of its own, so the port cannot clash.
MON=$DATA/monitoring
$AS_PG rm -rf "$MON" 2>/dev/null || rm -rf "$MON"
mkdir -p "$MON/socket" && chown -R "$( [ -n "$AS_PG" ] && echo postgres || id -un)" "$MON"
$AS_PG "$PG_BIN/initdb" -D "$MON/cluster" -U postgres -A trust --no-instructions >/dev/null
SOCKET=$MON/socket
PSQL=("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCKET" -p "$PORT" -U postgres)
start() { # start [extra settings...]
    $AS_PG "$PG_BIN/pg_ctl" -D "$MON/cluster" -l "$MON/cluster.log" -w start \
        -o "-p $PORT -c listen_addresses='' -c unix_socket_directories=$SOCKET -c fsync=off $*" >/dev/null
}
stop() { $AS_PG "$PG_BIN/pg_ctl" -D "$MON/cluster" -m "${1:-fast}" -w stop >/dev/null; }
PRELOAD="-c shared_preload_libraries=pg_integrity -c pg_integrity.max_refusal_entries=16"
start "$PRELOAD"
trap 'cleanup; stop immediate 2>/dev/null || true' EXIT

new_db DB main
log "== database $DB (cluster $MON)"
sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL);
INSERT INTO ledger SELECT i, i FROM generate_series(1, 10) i;
SELECT integrity.protect_append_only('ledger');
CREATE ROLE mon_clerk LOGIN;
GRANT SELECT, UPDATE, DELETE ON ledger TO mon_clerk;
-- One refused write, caught: the refusal is counted, the flood goes on.
CREATE FUNCTION refuse_once(i int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger SET amount = amount + 1 WHERE id = 1 + i % 10;
EXCEPTION WHEN restrict_violation THEN NULL;
END $$;
SQL
counters() { sql "$DB" "SELECT table_name, guard, sqlstate, refusals FROM integrity.refusals ORDER BY 1, 2, 3"; }

# A listener in the notify database (postgres): psql prints each
# notification after the next statement it runs.
listen() { # listen FILE SECONDS
    { echo "LISTEN integrity_refusals;"
      for _ in $(seq $(($2 * 4))); do sleep 0.25; echo "SELECT 1;"; done; } \
        | "$PG_BIN/psql" -X -q -At -h "$SOCKET" -p "$PORT" -U postgres -d postgres >"$1" 2>&1
}
# payloads FILE: the JSON payloads received.
payloads() { sed -n 's/^Asynchronous notification "integrity_refusals" with payload "\(.*\)" received from server process with PID [0-9]*\.$/\1/p' "$1"; }

# 1. Four sessions, 25 refused writes each, in transactions that roll back.
listen "$TMP_DIR/listen1" 8 &
listener=$!
sleep 1
for s in 1 2 3 4; do
    (for i in $(seq 25); do
         printf 'BEGIN;\nDELETE FROM ledger WHERE id = %s;\nROLLBACK;\n' $((i % 10 + 1))
     done | "$PG_BIN/psql" -X -q -h "$SOCKET" -p "$PORT" -U mon_clerk -d "$DB" >/dev/null 2>&1) &
done
wait $(jobs -p | grep -v "^$listener$") 2>/dev/null || true
check_eq "100 refused DELETEs from 4 sessions, all rolled back, are counted" \
    "ledger|append_only|23001|100" "$(counters)"
check_eq "the last role is the sessions' role" "mon_clerk" \
    "$(sql "$DB" "SELECT last_role FROM integrity.refusals")"
check_eq "nothing was deleted" "10" "$(sql "$DB" "SELECT count(*) FROM ledger")"
wait "$listener" || true
payloads "$TMP_DIR/listen1" >"$TMP_DIR/payloads1"
n=$(wc -l <"$TMP_DIR/payloads1")
if [ "$n" -ge 1 ] && [ "$n" -le 10 ]; then
    pass "LISTEN integrity_refusals: $n notifications for 100 refusals (coalesced)"
else
    fail "LISTEN integrity_refusals: expected 1 to 10 notifications for 100 refusals, got $n" "$(head -5 "$TMP_DIR/listen1")"
fi
check_eq "the notifications' refusal counts add up to 100" "100" \
    "$(sql postgres "SELECT coalesce(sum((p::json ->> 'refusals')::int), 0) FROM unnest(string_to_array(\$\$$(cat "$TMP_DIR/payloads1")\$\$, E'\n')) p")"
check_eq "a notification names database, table, guard, SQLSTATE, role and time" \
    "$DB|public.ledger|append_only|23001|mon_clerk|t" \
    "$(sql postgres "SELECT p ->> 'database', p ->> 'table', p ->> 'guard', p ->> 'sqlstate', p ->> 'role',
                            (p ->> 'time')::timestamptz > now() - interval '1 minute'
                       FROM (SELECT \$\$$(head -1 "$TMP_DIR/payloads1")\$\$::json AS p) x")"

# 2. The flood: 100,000 refusals from 8 pgbench clients.
echo "SELECT refuse_once(:client_id * 100000 + :scale);" >"$TMP_DIR/flood.sql"
listen "$TMP_DIR/listen2" 40 &
listener=$!
sleep 1
before=$(date +%s.%N)
if "$PG_BIN/pgbench" -n -h "$SOCKET" -p "$PORT" -U postgres -c "$FLOOD_CLIENTS" -j "$FLOOD_CLIENTS" \
        -t "$FLOOD_PER_CLIENT" -f "$TMP_DIR/flood.sql" "$DB" >"$TMP_DIR/pgbench.out" 2>&1; then
    after=$(date +%s.%N)
    pass "pgbench: $FLOOD refusals from $FLOOD_CLIENTS clients in $(echo "$after - $before" | bc) s ($(grep -o 'tps = [0-9.]*' "$TMP_DIR/pgbench.out" | head -1) refusals/s)"
else
    fail "pgbench flood failed" "$(tail -5 "$TMP_DIR/pgbench.out")"
fi
check_eq "every refusal of the flood is counted, in the same one counter" \
    "ledger|append_only|23001|$((FLOOD + 100))" "$(counters)"
check_eq "the server is fine after the flood" "10|t" \
    "$(sql "$DB" "SELECT count(*), bool_and(amount = id) FROM ledger")"
sleep 2
kill "$listener" 2>/dev/null || true
wait "$listener" 2>/dev/null || true
payloads "$TMP_DIR/listen2" >"$TMP_DIR/payloads2"
n=$(wc -l <"$TMP_DIR/payloads2")
secs=$(echo "($after - $before + 3) / 1" | bc)
if [ "$n" -ge 1 ] && [ "$n" -le $((secs + 2)) ]; then
    pass "the flood gave $n notifications in about $secs s (at most one a second)"
else
    fail "the flood gave $n notifications in about $secs s: not coalesced" "$(head -3 "$TMP_DIR/payloads2")"
fi
check_eq "their refusal counts add up to the flood" "$FLOOD" \
    "$(sql postgres "SELECT coalesce(sum((p::json ->> 'refusals')::int), 0) FROM unnest(string_to_array(\$\$$(cat "$TMP_DIR/payloads2")\$\$, E'\n')) p")"
check_eq "the notifier is still running" "1" \
    "$(sql postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_integrity notifier'")"

# 3. A clean restart keeps the counts; a crash loses them (as pg_stat_statements').
stop fast
start "$PRELOAD"
check_eq "the counts survive a clean restart" "ledger|append_only|23001|$((FLOOD + 100))" "$(counters)"
check_eq "and the last role and DETAIL (the flood's)" "postgres|t" \
    "$(sql "$DB" "SELECT last_role, last_detail LIKE 'Key (id)=(%) in table public.ledger cannot be updated%' FROM integrity.refusals")"
# A crash: a backend killed, the server reinitializes shared memory.
{ echo "SELECT pg_backend_pid();"; sleep 3; echo "SELECT 1;"; } \
    | "$PG_BIN/psql" -X -q -At -h "$SOCKET" -p "$PORT" -U postgres -d "$DB" >"$TMP_DIR/victim" 2>&1 &
sleep 1
kill -KILL "$(head -1 "$TMP_DIR/victim")"
wait || true
for _ in $(seq 60); do
    "$PG_BIN/pg_isready" -q -h "$SOCKET" -p "$PORT" -U postgres -d "$DB" && break
    sleep 0.5
done
sleep 1
check_eq "after a crash the counts start again (as pg_stat_statements')" "" "$(counters)"

# 4. A full table: 20 tables but 16 counters; the rest is counted as dropped.
sql "$DB" >/dev/null <<'SQL'
DO $$
BEGIN
    FOR i IN 1..20 LOOP
        EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY); INSERT INTO t%s VALUES (1);', i, i);
        PERFORM integrity.protect_append_only(format('t%s', i));
        BEGIN
            EXECUTE format('DELETE FROM t%s', i);
        EXCEPTION WHEN restrict_violation THEN NULL;
        END;
    END LOOP;
END $$;
SQL
check_eq "16 counters at most (pg_integrity.max_refusal_entries)" "16|16" \
    "$(sql "$DB" "SELECT count(*), sum(refusals) FROM integrity.refusals")"
check_eq "health() warns about the 4 refusals not counted" \
    "warning|4 refused writes were not counted: all 16 refusal counters are in use" \
    "$(sql "$DB" "SELECT severity, problem FROM integrity.health() WHERE problem LIKE '%not counted%'")"
sql "$DB" "SELECT integrity.reset_refusals()" >/dev/null
check_eq "reset_refusals() empties the table and the dropped count" "0|0" \
    "$(sql "$DB" "SELECT (SELECT count(*) FROM integrity.refusals), (SELECT count(*) FROM integrity.health() WHERE problem LIKE '%not counted%')")"

# 5. The record_check() history survives pg_dump / pg_restore.
sql "$DB" >/dev/null <<'SQL'
CREATE TABLE legacy (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL);
INSERT INTO legacy VALUES (1, -1, 0), (2, 1, 0);
SELECT integrity.guard_stock('legacy');
SELECT integrity.record_check();
SELECT integrity.record_check();
SQL
new_db RESTORED restored
"$PG_BIN/pg_dump" -Fc -h "$SOCKET" -p "$PORT" -U postgres -d "$DB" -f "$TMP_DIR/dump"
"$PG_BIN/pg_restore" -h "$SOCKET" -p "$PORT" -U postgres -d "$RESTORED" "$TMP_DIR/dump"
check_same "the recorded checks come back from pg_dump" "$DB" "$RESTORED" \
    "SELECT r.run_id, r.run_at, r.violations, v.table_name, v.guard, v.violations
       FROM integrity.check_runs r LEFT JOIN integrity.check_violations v USING (run_id) ORDER BY 1, 4"
check_eq "and the next run continues the numbering" "3" \
    "$(sql "$RESTORED" "SELECT integrity.record_check()")"

# 6. Without the preload: same errors, nothing counted, health() says how.
stop fast
start
check_error "a refused write is still refused without the preload" 23001 "$DB" "DELETE FROM ledger"
check_eq "integrity.refusals is empty" "0" "$(sql "$DB" "SELECT count(*) FROM integrity.refusals")"
check_eq "health() says how to count (info)" \
    "info|ALTER SYSTEM SET shared_preload_libraries = 'pg_integrity'; -- then restart the server" \
    "$(sql "$DB" "SELECT severity, remedy FROM integrity.health() WHERE problem LIKE 'refused writes are not counted%'")"
check_eq "no notifier runs" "0" \
    "$(sql postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_integrity notifier'")"
sql "$DB" "SELECT integrity.reset_refusals()" >/dev/null && pass "reset_refusals() without the preload is a no-op"

finish
