-- 35_hardening_bpchar: bpchar's equality ignores trailing spaces, and an
-- unconstrained bpchar keeps them: 'a' -> 'a   ' used to pass an immutable or
-- frozen write-once bpchar column unnoticed.  Such columns are compared by
-- their stored image.
\ir common/setup.sql
\set VERBOSITY default

CREATE TABLE bpchar_pieces (id int PRIMARY KEY, code bpchar NOT NULL, lot char(4), batch bpchar);
INSERT INTO bpchar_pieces VALUES (1, 'a', 'x', 'b');
SELECT integrity.protect_immutable('bpchar_pieces', ARRAY['code', 'lot']);
SELECT integrity.protect_write_once('bpchar_pieces', ARRAY['batch']);
SELECT 'a'::bpchar = 'a   '::bpchar AS equal_by_bpchar_rules;

SELECT sqlstate, message, detail FROM expect_error($$UPDATE bpchar_pieces SET code = 'a   '$$);
SELECT sqlstate, message FROM expect_error($$UPDATE bpchar_pieces SET batch = 'b  '$$);
-- char(4) pads every value to 4: 'x' and 'x   ' are the same stored value.
UPDATE bpchar_pieces SET lot = 'x   ';
SELECT sqlstate, message FROM expect_error($$UPDATE bpchar_pieces SET lot = 'y'$$);
SELECT id, code || '|' AS code, lot || '|' AS lot, batch || '|' AS batch, octet_length(code) AS code_bytes
  FROM bpchar_pieces;

DROP TABLE bpchar_pieces;

\ir common/teardown.sql
