-- The registry: one row per guarded table and guard kind.  It is the
-- extension's configuration, so pg_dump dumps its rows with the user's data.

CREATE TABLE integrity.guard_registry (
    table_name regclass    NOT NULL,
    guard      text        NOT NULL
        CONSTRAINT guard_registry_known_guard
        CHECK (guard IN ('append_only', 'immutable', 'write_once', 'versioning',
                         'stock', 'credit', 'ledger_credit', 'hash_chain', 'soft_delete',
                         'lifecycle', 'total')),
    columns    text[]      NOT NULL DEFAULT '{}',
    options    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (table_name, guard)
);
COMMENT ON TABLE integrity.guard_registry IS
    'pg_integrity guards: one row per table and guard kind. Maintained by the registration functions.';
SELECT pg_catalog.pg_extension_config_dump('integrity.guard_registry', '');

CREATE VIEW integrity.guards AS
    SELECT table_name, guard, columns, options, created_at
      FROM integrity.guard_registry;
COMMENT ON VIEW integrity.guards IS 'The registered pg_integrity guards.';

-- A qualified relation name, as regclass::text writes it, looked up in the
-- catalogs: unlike to_regclass(), without a USAGE check on the schema, so
-- that the event triggers work for roles that cannot see every guarded
-- table.  NULL when there is no such relation.
CREATE FUNCTION integrity._relation(qualified_name text)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN cardinality(i) = 2
                THEN (SELECT c.oid::regclass
                        FROM pg_catalog.pg_class c
                        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = i[1] AND c.relname = i[2])
                ELSE pg_catalog.to_regclass(qualified_name) END
      FROM pg_catalog.parse_ident(qualified_name) AS i
$$;

-- Ownership protects a table's guards, as it protects ALTER TABLE: anyone may
-- register guards, but only on tables they own.
CREATE FUNCTION integrity._require_owner(tbl regclass, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner oid;
BEGIN
    SELECT relowner INTO owner FROM pg_catalog.pg_class WHERE oid = tbl;
    IF owner IS NOT NULL AND NOT pg_catalog.pg_has_role(current_user, owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Only the owner of %s (or a member of its owning role) can %s.', tbl, action);
    END IF;
END;
$$;

CREATE FUNCTION integrity._guard_registry_owner_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM integrity._require_owner(OLD.table_name, 'change its pg_integrity guards');
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        -- A row for an OID that is no table yet would guard whatever table is
        -- created with that OID next, by whoever creates it.
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = NEW.table_name) THEN
            RAISE EXCEPTION 'relation with OID % does not exist', NEW.table_name::oid
                USING ERRCODE = 'undefined_table',
                      HINT = 'Register guards on existing tables with the integrity.protect_*, enable_* and guard_* functions.';
        END IF;
        PERFORM integrity._require_owner(NEW.table_name, 'change its pg_integrity guards');
        RETURN NEW;
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER guard_registry_owner_check
    BEFORE INSERT OR UPDATE OR DELETE ON integrity.guard_registry
    FOR EACH ROW EXECUTE FUNCTION integrity._guard_registry_owner_check();

GRANT USAGE ON SCHEMA integrity TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON integrity.guard_registry TO PUBLIC;
GRANT SELECT ON integrity.guards TO PUBLIC;
