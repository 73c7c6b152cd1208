#!/usr/bin/env bash
# ALTER EXTENSION pg_integrity UPDATE from every released version (RELEASED: the
# versions whose install script is frozen in sql/).  A database with every guard
# kind and rows in its tables is created under version V and updated to the
# default version; then its guards refuse and allow what they did, the registry
# is unchanged, the reports are clean, and the extension's objects are those of
# a fresh install: the same schema_manifest('{integrity}'), and the same
# extension members, privileges, event triggers and dumped configuration, which
# the manifest does not describe.  Last, the comparison itself is shown to notice
# a missing object and a changed function.
#
# Reliability matrix row: "ALTER EXTENSION pg_integrity UPDATE from every released version".
set -euo pipefail
. "$(dirname "$0")/lib.bash"
. "$(dirname "$0")/fixtures/every_guard_checks.bash"

: "${RELEASED:?RELEASED must list the released versions (make test-upgrade sets it)}"
FIXTURE=$(cd "$(dirname "$0")" && pwd)/fixtures/every_guard.sql

MANIFEST="SELECT jsonb_pretty(integrity.schema_manifest('{integrity}'))"
CATALOG=$(cat <<'SQL'
WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'pg_integrity')
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d, ext
 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
UNION ALL
SELECT format('privileges %s %s', p.oid::regprocedure, coalesce(p.proacl::text, 'default'))
  FROM pg_proc p WHERE p.pronamespace = 'integrity'::regnamespace
UNION ALL
SELECT format('privileges %s %s', c.oid::regclass, coalesce(c.relacl::text, 'default'))
  FROM pg_class c WHERE c.relnamespace = 'integrity'::regnamespace
UNION ALL
SELECT format('privileges schema %s %s', n.nspname, n.nspacl) FROM pg_namespace n WHERE n.nspname = 'integrity'
UNION ALL
SELECT format('event trigger %s on %s, %s, tags %s, runs %s', e.evtname, e.evtevent, e.evtenabled,
              e.evttags, e.evtfoid::regprocedure)
  FROM pg_event_trigger e
UNION ALL
SELECT format('dumped configuration %s %L', u.cfg::regclass, u.cond)
  FROM ext, unnest(ext.extconfig, ext.extcondition) AS u(cfg, cond)
ORDER BY 1
SQL
)

new_db FRESH fresh
sql "$FRESH" "CREATE EXTENSION pg_integrity" >/dev/null
DEFAULT=$(sql "$FRESH" "SELECT extversion FROM pg_extension WHERE extname = 'pg_integrity'")
log "== fresh install of $DEFAULT in $FRESH; released versions: $RELEASED"

for version in $RELEASED; do
    new_db UPD "from_${version//./_}"
    log "== $version -> $DEFAULT in $UPD"
    sql "$UPD" "CREATE EXTENSION pg_integrity VERSION '$version'" >/dev/null
    sql "$UPD" <"$FIXTURE" >/dev/null
    registry=$(sql "$UPD" "$REGISTRY_QUERY")

    check_ok "[$version] ALTER EXTENSION pg_integrity UPDATE" "$UPD" "ALTER EXTENSION pg_integrity UPDATE"
    check_eq "[$version] the extension is at the default version" "$DEFAULT" \
        "$(sql "$UPD" "SELECT extversion FROM pg_extension WHERE extname = 'pg_integrity'")"
    check_eq "[$version] the registry is unchanged" "$registry" "$(sql "$UPD" "$REGISTRY_QUERY")"
    check_same "[$version] schema_manifest('{integrity}') equals a fresh install's" "$FRESH" "$UPD" "$MANIFEST"
    check_same "[$version] members, privileges, event triggers, dumped configuration equal a fresh install's" \
        "$FRESH" "$UPD" "$CATALOG"
    check_every_guard "$version, updated" "$UPD"
done

# The comparisons above would notice an object the upgrade script forgot, and a
# function it did not replace.
check_differs() {
    local desc=$1 query=$2 change=$3
    local before after
    before=$(sql "$UPD" "$query")
    sql "$UPD" "BEGIN; $change; $query; ROLLBACK" >"$TMP_DIR/after" 2>&1 || true
    after=$(sed '/^\(BEGIN\|ROLLBACK\|ALTER EXTENSION\|CREATE FUNCTION\|DROP FUNCTION\)$/d' "$TMP_DIR/after")
    if [ -n "$before" ] && [ "$before" != "$after" ]; then pass "$desc"; else fail "$desc" "no difference seen"; fi
}
check_differs "a function missing from the extension is noticed" "$CATALOG" \
    "ALTER EXTENSION pg_integrity DROP FUNCTION integrity._require_owner(regclass, text)"
check_differs "a function body the upgrade did not replace is noticed" "$MANIFEST" \
    'CREATE OR REPLACE FUNCTION integrity._require_owner(tbl regclass, action text) RETURNS void
         LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$BEGIN END$$'

finish
