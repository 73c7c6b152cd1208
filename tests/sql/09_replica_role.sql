-- 09_replica_role: under session_replication_role = replica (how logical
-- replication applies rows) append-only, immutable and write-once guards
-- still refuse (their triggers are ENABLE ALWAYS), while versioning does not
-- bump: a replicated row already carries the version its origin gave it,
-- and bumping it again would double-count (documented decision: the
-- versioning triggers fire on origin writes only).  The DDL protections of
-- 08_bypass_ddl hold under the replica role too.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE rep_ledger (id int PRIMARY KEY, amount numeric NOT NULL);
INSERT INTO rep_ledger VALUES (1, 10), (2, 20);
SELECT integrity.protect_append_only('rep_ledger');
CREATE TABLE rep_pieces (
    id      int PRIMARY KEY,
    origin  int,
    lot     int,
    note    text,
    version int NOT NULL DEFAULT 1
);
INSERT INTO rep_pieces VALUES (1, 100, NULL, 'one', 1), (2, 200, 20, 'two', 1);
SELECT integrity.protect_immutable('rep_pieces', ARRAY['origin']);
SELECT integrity.protect_write_once('rep_pieces', ARRAY['lot']);
SELECT integrity.enable_versioning('rep_pieces');
CREATE TABLE rep_parts (id int, part int, PRIMARY KEY (part, id)) PARTITION BY LIST (part);
CREATE TABLE rep_parts_1 PARTITION OF rep_parts FOR VALUES IN (1);
INSERT INTO rep_parts VALUES (1, 1);
SELECT integrity.protect_append_only('rep_parts');

SET session_replication_role = replica;
SHOW session_replication_role;

-- Append-only: UPDATE, DELETE, TRUNCATE still refused.
UPDATE rep_ledger SET amount = 0 WHERE id = 1;
DELETE FROM rep_ledger WHERE id = 2;
TRUNCATE rep_ledger;
DELETE FROM rep_parts;
TRUNCATE rep_parts_1;
SELECT sqlstate, constraint_name FROM expect_error($$DELETE FROM rep_ledger$$);
INSERT INTO rep_ledger VALUES (3, 30);

-- Immutable and write-once: still refused; write-once still allows the
-- first write.
UPDATE rep_pieces SET origin = 101 WHERE id = 1;
UPDATE rep_pieces SET lot = 21 WHERE id = 2;
UPDATE rep_pieces SET lot = 10 WHERE id = 1;
SELECT sqlstate, column_name, constraint_name FROM expect_error($$UPDATE rep_pieces SET origin = NULL$$);

-- Versioning: a replicated UPDATE keeps the version it carries, neither
-- bumped nor checked for staleness.
UPDATE rep_pieces SET note = 'replicated', version = 5 WHERE id = 2;
UPDATE rep_pieces SET note = 'replicated again' WHERE id = 2;
SELECT * FROM rep_pieces ORDER BY id;

RESET session_replication_role;
SHOW session_replication_role;
-- Back on the origin, versioning bumps again.
UPDATE rep_pieces SET note = 'local' WHERE id = 2;
SELECT id, note, version FROM rep_pieces ORDER BY id;
-- session_replication_role = local behaves as origin.
SET session_replication_role = local;
UPDATE rep_pieces SET note = 'local role' WHERE id = 2;
UPDATE rep_ledger SET amount = 0;
RESET session_replication_role;
SELECT id, note, version FROM rep_pieces ORDER BY id;
SELECT * FROM rep_ledger ORDER BY id;

------------------------------------------------------------------------------
-- The DDL protections hold under the replica role as well: guard triggers
-- cannot be disabled or dropped behind the registry's back, new partitions
-- are covered, and dropped tables leave the registry.
SET session_replication_role = replica;
SELECT sqlstate FROM expect_error($$ALTER TABLE rep_ledger DISABLE TRIGGER integrity_append_only$$);
SELECT sqlstate FROM expect_error($$ALTER TABLE rep_ledger ENABLE REPLICA TRIGGER integrity_append_only$$);
SELECT sqlstate FROM expect_error($$DROP TRIGGER integrity_append_only_truncate ON rep_ledger$$);
SELECT sqlstate FROM expect_error($$DROP TRIGGER integrity_immutable ON rep_pieces$$);
CREATE TABLE rep_parts_2 PARTITION OF rep_parts FOR VALUES IN (2);
INSERT INTO rep_parts VALUES (2, 2);
SELECT sqlstate, table_name FROM expect_error($$TRUNCATE rep_parts_2$$);
SELECT sqlstate FROM expect_error($$ALTER TABLE rep_ledger DROP COLUMN amount$$);
SELECT sqlstate FROM expect_error($$DROP TABLE rep_ledger$$);
CREATE TABLE rep_dropped (id int PRIMARY KEY);
SELECT integrity.protect_immutable('rep_dropped', ARRAY['id']);
DROP TABLE rep_dropped;
RESET session_replication_role;

SELECT * FROM guard_triggers('rep_ledger');
SELECT tgname, tgenabled FROM guard_triggers('rep_pieces');
SELECT * FROM pt_triggers('rep_parts');
SELECT count(*) AS dangling_registry_rows FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);
SELECT * FROM rep_parts ORDER BY part, id;

\ir common/teardown.sql
