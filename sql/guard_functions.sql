-- The compiled trigger functions the guards install (src/*.rs).  They run on
-- every guarded row: they take no search_path setting and run no SQL.

CREATE FUNCTION integrity.append_only_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_append_only_guard';
COMMENT ON FUNCTION integrity.append_only_guard() IS
    'Trigger: refuses UPDATE and DELETE of rows of an append-only table (23001).';

CREATE FUNCTION integrity.append_only_truncate_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_append_only_truncate_guard';
COMMENT ON FUNCTION integrity.append_only_truncate_guard() IS
    'Trigger: refuses TRUNCATE of an append-only table (23001).';

CREATE FUNCTION integrity.immutable_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_immutable_guard';
COMMENT ON FUNCTION integrity.immutable_guard() IS
    'Trigger: refuses a change of the immutable columns named in its arguments (23001).';

CREATE FUNCTION integrity.write_once_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_write_once_guard';
COMMENT ON FUNCTION integrity.write_once_guard() IS
    'Trigger: refuses a change of the write-once columns named in its arguments once set (23001).';

CREATE FUNCTION integrity.version_bump() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_version_bump';
COMMENT ON FUNCTION integrity.version_bump() IS
    'Trigger: sets the version column to OLD + 1; in strict mode refuses stale versions (40001).';

CREATE FUNCTION integrity.version_check() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_version_check';
COMMENT ON FUNCTION integrity.version_check() IS
    'Trigger: refuses a row whose version a later BEFORE trigger moved off OLD + 1 (23001).';

CREATE FUNCTION integrity.hash_chain_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_hash_chain_guard';
COMMENT ON FUNCTION integrity.hash_chain_guard() IS
    'Trigger: numbers each inserted row within its chain and sets its hash from the chain''s last row.';

CREATE FUNCTION integrity._attaches_partition(pg_catalog.pg_ddl_command) RETURNS boolean
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'integrity_attaches_partition';

CREATE FUNCTION integrity._renames(pg_catalog.pg_ddl_command) RETURNS boolean
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'integrity_renames';
CREATE FUNCTION integrity._drops_expired_partition(pg_catalog.oid) RETURNS boolean
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'integrity_drops_expired_partition';

CREATE FUNCTION integrity._on_ddl_command_start() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_on_ddl_command_start';
