#!/usr/bin/env bash
# Prometheus: Debian's prometheus-postgres-exporter, with the queries file
# docs/monitoring/postgres_exporter_queries.yaml, against the test cluster
# (which preloads pg_integrity): after provoked refusals and a recorded
# check, /metrics (scraped with curl on a free localhost port) has
# pg_integrity_refusals_total, the latest check's violations per table and
# guard, and health problems per severity, with the right values.
set -euo pipefail
. "$(dirname "$0")/lib.bash"

EXPORTER=${EXPORTER:-/usr/bin/prometheus-postgres-exporter}
QUERIES=$(cd "$(dirname "$0")/.." && pwd)/docs/monitoring/postgres_exporter_queries.yaml
if [ ! -x "$EXPORTER" ] || ! command -v curl >/dev/null; then
    log "skip - $EXPORTER or curl is not installed (Debian: apt-get install prometheus-postgres-exporter curl)"
    finish
fi
if [ "$(sql postgres "SELECT count(*) FROM pg_settings WHERE name = 'pg_integrity.max_refusal_entries'")" != 1 ]; then
    fail "the test cluster does not preload pg_integrity (make start sets shared_preload_libraries)"
    finish
fi

new_db DB main
log "== database $DB"
sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL);
INSERT INTO ledger VALUES (1, 10), (2, 20);
SELECT integrity.protect_append_only('ledger');
CREATE TABLE stock (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL);
INSERT INTO stock VALUES (1, 5, 0), (2, -1, 0), (3, 1, 4), (4, 2, 0);
SELECT integrity.guard_stock('stock');
SQL
# Five refused writes on the ledger, two on the stock table (23514), each in
# its own rolled-back statement.
for q in "UPDATE ledger SET amount = 0" "DELETE FROM ledger WHERE id = 1" "UPDATE ledger SET amount = 1 WHERE id = 2" \
         "DELETE FROM ledger" "UPDATE ledger SET id = 3 WHERE id = 1" \
         "UPDATE stock SET stock = -5 WHERE id = 1" "UPDATE stock SET reserved_stock = 9 WHERE id = 4"; do
    sql "$DB" "$q" >/dev/null 2>&1 && fail "refused: $q"
done
# The legacy rows 2 and 3 break the stock rule; a guarded table without a
# primary key is a health() warning.
sql "$DB" >/dev/null <<'SQL'
CREATE TABLE nokey (amount int);
SELECT integrity.protect_append_only('nokey');
SELECT integrity.record_check();
SQL
expected_health=$(sql "$DB" "SELECT health_errors || ' ' || health_warnings || ' ' || health_info FROM integrity.latest_check")

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATA_SOURCE_NAME="host=$SOCKET port=$PORT user=postgres dbname=$DB sslmode=disable" \
    "$EXPORTER" --web.listen-address="127.0.0.1:$port" --extend.query-path="$QUERIES" \
    --disable-settings-metrics >"$TMP_DIR/exporter.log" 2>&1 &
exporter=$!
trap 'kill $exporter 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/metrics" >"$TMP_DIR/metrics" 2>/dev/null && break
    sleep 0.2
done
if [ ! -s "$TMP_DIR/metrics" ]; then
    fail "the exporter answers on 127.0.0.1:$port" "$(tail -5 "$TMP_DIR/exporter.log")"
    finish
fi
pass "the exporter answers on 127.0.0.1:$port/metrics"

# metric NAME LABEL=VALUE...: the value of the one series with these labels.
metric() {
    python3 - "$TMP_DIR/metrics" "$@" <<'PY'
import re, sys
path, name, *labels = sys.argv[1:]
want = dict(l.split("=", 1) for l in labels)
found = []
for line in open(path):
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line.strip())
    if not m or m.group(1) != name:
        continue
    got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
    if all(got.get(k) == v for k, v in want.items()):
        found.append(m.group(3))
print(" ".join(found))
PY
}

check_eq "pg_integrity_refusals_total: 5 on the ledger (append_only, 23001)" "5" \
    "$(metric pg_integrity_refusals_total datname="$DB" table_name=ledger guard=append_only sqlstate=23001)"
check_eq "pg_integrity_refusals_total: 2 on the stock table (stock, 23514)" "2" \
    "$(metric pg_integrity_refusals_total datname="$DB" table_name=stock guard=stock sqlstate=23514)"
check_eq "it is a counter" "1" "$(grep -c '^# TYPE pg_integrity_refusals_total counter$' "$TMP_DIR/metrics")"
check_eq "violations(): row 2 breaks two stock rules, row 3 one" "3" \
    "$(sql "$DB" "SELECT count(*) FROM integrity.violations('stock')")"
check_eq "pg_integrity_check_violations: the 3 stock violations" "3" \
    "$(metric pg_integrity_check_violations datname="$DB" table_name=public.stock guard=stock)"
check_eq "pg_integrity_latest_check_violations" "3" "$(metric pg_integrity_latest_check_violations datname="$DB")"
check_eq "pg_integrity_health_problems per severity (as the latest run recorded them)" "$expected_health" \
    "$(for s in error warning info; do metric pg_integrity_health_problems datname="$DB" severity=$s; done | paste -sd' ')"
check_eq "the latest run has a health warning (a guarded table without a primary key)" "1" \
    "$(sql "$DB" "SELECT (health_warnings > 0)::int FROM integrity.latest_check")"
check_eq "no query of the file failed" "" "$(grep -i 'error' "$TMP_DIR/exporter.log" | head -3)"

# A new refusal and a new run show at the next scrape.
sql "$DB" "DELETE FROM ledger WHERE id = 2" >/dev/null 2>&1 || true
sql "$DB" "UPDATE stock SET stock = 9 WHERE id IN (2, 3); SELECT integrity.record_check()" >/dev/null
curl -sf "http://127.0.0.1:$port/metrics" >"$TMP_DIR/metrics"
check_eq "the next scrape counts the new refusal" "6" \
    "$(metric pg_integrity_refusals_total datname="$DB" table_name=ledger guard=append_only sqlstate=23001)"
check_eq "and the violations of the new run (none left)" "|0" \
    "$(metric pg_integrity_check_violations datname="$DB" table_name=public.stock guard=stock)|$(metric pg_integrity_latest_check_violations datname="$DB")"
finish
