-- 31_hardening_registry_writes: the registry is the extension's
-- configuration, readable and (through the registration functions) writable
-- by table owners.  A row for an OID that is no table yet used to be accepted
-- from anyone: the next CREATE TABLE that got that OID, by anyone, then had
-- guards it never asked for.  Such rows are refused (42P01); rows for tables
-- of other owners stay refused (42501).
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

DROP ROLE IF EXISTS regress_integrity_hostile, regress_integrity_victim;
CREATE ROLE regress_integrity_hostile;
CREATE ROLE regress_integrity_victim;
GRANT CREATE ON SCHEMA public TO regress_integrity_victim;

SET ROLE regress_integrity_hostile;
-- OIDs no relation has yet: the next ones the server hands out.
SELECT sqlstate, message ~ '^relation with OID [0-9]+ does not exist$' AS says_no_such_relation, hint FROM expect_error($$
    INSERT INTO integrity.guard_registry (table_name, guard)
    SELECT (o + 1)::oid::regclass, 'append_only' FROM (SELECT max(oid)::bigint AS o FROM pg_class) m$$);
SELECT sqlstate, message FROM expect_error($$
    INSERT INTO integrity.guard_registry (table_name, guard) VALUES (4294967000::oid::regclass, 'immutable')$$);
-- Nor can an existing row be pointed at such an OID.
RESET ROLE;
CREATE TABLE hardening_owned (id int PRIMARY KEY, a int);
ALTER TABLE hardening_owned OWNER TO regress_integrity_hostile;
SET ROLE regress_integrity_hostile;
SELECT integrity.protect_immutable('hardening_owned', ARRAY['a']);
SELECT sqlstate, message FROM expect_error($$
    UPDATE integrity.guard_registry SET table_name = 4294967000::oid::regclass
     WHERE table_name = 'hardening_owned'::regclass$$);
RESET ROLE;

-- Another role's new table gets no guard it did not ask for.
SET ROLE regress_integrity_victim;
CREATE TABLE hardening_victim (id int PRIMARY KEY, a int);
INSERT INTO hardening_victim VALUES (1, 1);
UPDATE hardening_victim SET a = 2;
SELECT count(*) AS victim_guards FROM integrity.guards WHERE table_name = 'hardening_victim'::regclass;
-- And a registry row for it is still the owner's alone to write.
SET ROLE regress_integrity_hostile;
SELECT sqlstate, message FROM expect_error($$
    INSERT INTO integrity.guard_registry (table_name, guard) VALUES ('hardening_victim', 'append_only')$$);
RESET ROLE;

DROP TABLE hardening_victim, hardening_owned;
REVOKE CREATE ON SCHEMA public FROM regress_integrity_victim;
DROP ROLE regress_integrity_hostile, regress_integrity_victim;

\ir common/teardown.sql
