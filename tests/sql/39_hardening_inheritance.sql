-- 39_hardening_inheritance: guards are cloned onto partitions, never onto
-- inheritance children, yet UPDATE, DELETE and TRUNCATE of a parent reach a
-- child's rows, and reserve_stock(…, ARRAY[…]) reserved on parent and child
-- rows with the same id.  Inheriting from a guarded table is refused (55000),
-- as is registering a guard on a table with inheritance children; health()
-- reports children made while the event trigger was not watching.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE inh_ledger (id int PRIMARY KEY, amount numeric NOT NULL);
INSERT INTO inh_ledger VALUES (1, 10);
SELECT integrity.protect_append_only('inh_ledger');

SELECT sqlstate, message, detail, hint FROM expect_error($$CREATE TABLE inh_ledger_2023 () INHERITS (inh_ledger)$$);
CREATE TABLE inh_ledger_2024 (id int PRIMARY KEY, amount numeric NOT NULL);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE inh_ledger_2024 INHERIT inh_ledger$$);
SELECT count(*) AS children FROM pg_inherits WHERE inhparent = 'inh_ledger'::regclass;

-- Stock: the multi-row reservation cannot reach a child either.
CREATE TABLE inh_products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
INSERT INTO inh_products VALUES (1, 10, 0);
SELECT integrity.guard_stock('inh_products');
SELECT sqlstate, message FROM expect_error($$CREATE TABLE inh_products_eu () INHERITS (inh_products)$$);

-- A table that already has inheritance children cannot be guarded.
CREATE TABLE inh_pieces (id int PRIMARY KEY, created_by int NOT NULL);
CREATE TABLE inh_pieces_old () INHERITS (inh_pieces);
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.protect_immutable('inh_pieces', ARRAY['created_by'])$$);
SELECT count(*) AS guards FROM integrity.guards WHERE table_name = 'inh_pieces'::regclass;

-- Partitions stay welcome.
CREATE TABLE inh_monthly (id int NOT NULL, booked date NOT NULL) PARTITION BY RANGE (booked);
SELECT integrity.protect_append_only('inh_monthly');
CREATE TABLE inh_monthly_2026_11 PARTITION OF inh_monthly FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
INSERT INTO inh_monthly VALUES (1, '2026-11-26');
SELECT sqlstate FROM expect_error($$TRUNCATE inh_monthly_2026_11$$);

-- A child made while the event trigger was disabled: health() reports it.
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
CREATE TABLE inh_ledger_2022 () INHERITS (inh_ledger);
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
SELECT severity, table_name, guard, problem, remedy FROM integrity.health() WHERE table_name = 'inh_ledger'::regclass;
ALTER TABLE inh_ledger_2022 NO INHERIT inh_ledger;
SELECT count(*) AS problems FROM integrity.health() WHERE table_name = 'inh_ledger'::regclass;

SELECT integrity.unprotect(t, 'append_only') FROM unnest(ARRAY['inh_ledger', 'inh_monthly']::regclass[]) AS t;
DROP TABLE inh_ledger, inh_ledger_2022, inh_ledger_2024, inh_products, inh_pieces, inh_pieces_old, inh_monthly;

\ir common/teardown.sql
