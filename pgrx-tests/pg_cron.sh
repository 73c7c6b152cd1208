#!/usr/bin/env bash
# The nightly check with the real pg_cron (Debian: postgresql-15-cron): on a
# throwaway cluster of its own that preloads pg_integrity and pg_cron, a job
# scheduled with cron.schedule_in_database runs SELECT integrity.record_check()
# and a run is recorded.  pg_cron 1.4 has no seconds schedule: the job runs
# every minute, and the test waits for its first run (at most ~70 s).
# Skipped, with the reason, where pg_cron is not installed for the server
# under test (Debian packages it for PostgreSQL 15 only).
set -euo pipefail
. "$(dirname "$0")/lib.bash"

libdir=$("$PG_BIN/pg_config" --pkglibdir)
sharedir=$("$PG_BIN/pg_config" --sharedir)
if [ ! -f "$libdir/pg_cron.so" ] || [ ! -f "$sharedir/extension/pg_cron.control" ]; then
    log "skip - pg_cron is not installed for the server in $PG_BIN ($libdir/pg_cron.so): Debian's postgresql-15-cron is for PostgreSQL 15 only"
    finish
fi

CRON=$DATA/pg_cron
$AS_PG rm -rf "$CRON" 2>/dev/null || rm -rf "$CRON"
mkdir -p "$CRON/socket" && chown -R "$( [ -n "$AS_PG" ] && echo postgres || id -un)" "$CRON"
$AS_PG "$PG_BIN/initdb" -D "$CRON/cluster" -U postgres -A trust --no-instructions >/dev/null
SOCKET=$CRON/socket
PSQL=("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCKET" -p "$PORT" -U postgres)
# pg_cron's jobs connect through libpq: to the socket (there is no TCP).
$AS_PG "$PG_BIN/pg_ctl" -D "$CRON/cluster" -l "$CRON/cluster.log" -w start \
    -o "-p $PORT -c listen_addresses='' -c unix_socket_directories=$SOCKET -c fsync=off -c shared_preload_libraries=pg_integrity,pg_cron -c cron.database_name=postgres -c cron.host=$SOCKET" \
    >/dev/null
trap 'cleanup; $AS_PG "$PG_BIN/pg_ctl" -D "$CRON/cluster" -m fast -w stop >/dev/null 2>&1 || true' EXIT

new_db DB main
log "== database $DB (cluster $CRON, pg_cron $(sql postgres "CREATE EXTENSION pg_cron; SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"))"
sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE TABLE stock (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL);
-- Row 1 reserves more than it has: one violation of the stock guard.
INSERT INTO stock VALUES (1, 2, 3), (2, 3, 1);
SELECT integrity.guard_stock('stock');
SQL
job=$(sql postgres "SELECT cron.schedule_in_database('integrity-nightly-check', '* * * * *',
                                                      'SELECT integrity.record_check()', '$DB')")
check_eq "the job is scheduled" "1" "$(sql postgres "SELECT count(*) FROM cron.job WHERE jobid = $job")"

runs=0
for _ in $(seq 75); do
    runs=$(sql "$DB" "SELECT count(*) FROM integrity.check_runs")
    [ "$runs" -gt 0 ] && break
    sleep 1
done
if [ "$runs" -gt 0 ]; then
    pass "pg_cron ran SELECT integrity.record_check(): $runs run(s) recorded"
else
    fail "no run recorded within 75 s" "$(sql postgres "SELECT status, return_message FROM cron.job_run_details" 2>&1)" \
        "$(tail -5 "$CRON/cluster.log")"
fi
check_eq "the run found the stock violation" "1|public.stock|stock|1" \
    "$(sql "$DB" "SELECT r.violations, v.table_name, v.guard, v.violations
                    FROM integrity.check_runs r JOIN integrity.check_violations v USING (run_id)
                   ORDER BY r.run_id LIMIT 1")"
sleep 1
check_eq "pg_cron recorded the job's success" "succeeded" \
    "$(sql postgres "SELECT status FROM cron.job_run_details WHERE jobid = $job ORDER BY runid LIMIT 1")"
sql postgres "SELECT cron.unschedule($job)" >/dev/null
finish
