-- pg_integrity 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_integrity UPDATE TO '0.2.0').
--
-- Every change to the extension's SQL objects in 0.2.0 is repeated here, so
-- that an updated database ends with the same objects as a fresh install;
-- pgrx-tests/extension_update.sh compares the two.
\echo Use "ALTER EXTENSION pg_integrity UPDATE TO '0.2.0'" to load this file. \quit
