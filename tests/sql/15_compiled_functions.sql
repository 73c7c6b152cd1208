-- 15_compiled_functions: every LANGUAGE c function of the extension is
-- declared from integrity._compiled_functions() (sql/compiled_functions.sql),
-- bound to the symbol that list names; health() checks the guard trigger
-- functions against the same list, and its remedy declares a replaced or
-- dropped one again.
\ir common/setup.sql

-- The catalog and the list agree: no compiled function is declared anywhere
-- else, and none of the list is missing or bound to another symbol or library.
SELECT coalesce(p.proname::text, c.name) AS function, p.probin, p.prosrc, c.symbol AS listed_symbol
  FROM (SELECT p.proname, p.probin, p.prosrc
          FROM pg_proc p
          JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'c'
         WHERE p.pronamespace = 'integrity'::regnamespace) p
  FULL JOIN integrity._compiled_functions() c ON c.name = p.proname AND c.symbol = p.prosrc
 WHERE p.proname IS NULL OR c.name IS NULL OR p.probin <> 'pg_integrity'
 ORDER BY 1;
SELECT count(*) > 0 AS listed, count(*) = count(DISTINCT symbol) AS one_function_per_symbol
  FROM integrity._compiled_functions();

-- A guard function bound to another symbol of the library, and one dropped
-- (no trigger uses it here, so nothing else goes with it).
CREATE OR REPLACE FUNCTION integrity.stock_guard() RETURNS trigger
    LANGUAGE c AS 'pg_integrity', 'integrity_credit_guard';
ALTER EXTENSION pg_integrity DROP FUNCTION integrity.total_start();
DROP FUNCTION integrity.total_start();
\x on
SELECT severity, guard, problem, remedy FROM integrity.health() ORDER BY problem;
\x off

-- The remedies bring both back as they were installed: the right symbol, the
-- comment, and membership of the extension.
\pset tuples_only on
SELECT remedy FROM integrity.health() \gexec
\pset tuples_only off
SELECT count(*) AS problems FROM integrity.health();
SELECT p.oid::regprocedure AS function, p.prosrc, obj_description(p.oid, 'pg_proc') AS comment,
       EXISTS (SELECT FROM pg_depend d
                WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_integrity')) AS member
  FROM pg_proc p
 WHERE p.oid IN ('integrity.stock_guard()'::regprocedure, 'integrity.total_start()'::regprocedure)
 ORDER BY p.proname;

\ir common/teardown.sql
