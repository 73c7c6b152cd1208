-- 52_ledger_direct: guard_ledger_credit's update of the account without SPI
-- (direct_update.rs) gives what its SPI UPDATE gives: the same account
-- totals, and the same refusals (SQLSTATE, message, DETAIL, HINT, constraint)
-- for an entry above the limit, below zero, without an account, an UPDATE
-- within one account (netted) or moving to another, a DELETE, integer
-- overflow, the accounts' CHECK constraint, their AFTER row triggers and a
-- skipping BEFORE trigger.  Each case runs on twin tables: 'direct' takes the
-- direct path, 'spi' has a statement-level UPDATE trigger on its accounts,
-- which the direct path would not fire, so its entries take the SPI UPDATE.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE FUNCTION accounts_statement_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE FUNCTION make_twin(suffix text, typ text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('CREATE TABLE %I (retailer integer, wholesaler text, credit_limit %s NOT NULL,'
                   ' used_credit %2$s NOT NULL DEFAULT 0, note text, PRIMARY KEY (wholesaler, retailer),'
                   ' CONSTRAINT used_not_13 CHECK (used_credit <> 13))', 'acct_' || suffix, typ);
    EXECUTE format('CREATE TABLE %I (id serial PRIMARY KEY, retailer integer, wholesaler text,'
                   ' entry_type text, amount %s)', 'entry_' || suffix, typ);
    EXECUTE format('INSERT INTO %I VALUES (1, ''w'', 100, 0), (2, ''w'', 50, 0), (1, ''v'', 2147483647, 0)',
                   'acct_' || suffix);
    IF typ = 'numeric(12,2)' THEN
        PERFORM integrity.guard_credit(('acct_' || suffix)::regclass);
    END IF;
    -- Unique key (retailer, wholesaler) in the other order than the index's.
    PERFORM integrity.guard_ledger_credit(('entry_' || suffix)::regclass, ('acct_' || suffix)::regclass,
                                          ARRAY['retailer', 'wholesaler']);
    IF suffix LIKE 'spi%' THEN
        EXECUTE format('CREATE TRIGGER sql_path AFTER UPDATE ON %I FOR EACH STATEMENT'
                       ' EXECUTE FUNCTION accounts_statement_noop()', 'acct_' || suffix);
    END IF;
END $f$;
SELECT make_twin('direct', 'numeric(12,2)'), make_twin('spi', 'numeric(12,2)'),
       make_twin('direct_i', 'integer'), make_twin('spi_i', 'integer');

-- The statement on the 'direct' twin, then on the 'spi' twin ($e is the
-- entries, $a the accounts): 'ok' or the error's fields.
CREATE FUNCTION ledger_both(statement text, typ text DEFAULT '') RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE
    e text;
    state text;
    message text;
    detail text;
    hint text;
    constraint_name text;
BEGIN
    FOREACH e IN ARRAY ARRAY['direct' || typ, 'spi' || typ] LOOP
        BEGIN
            EXECUTE replace(replace(statement, '$e', 'entry_' || e), '$a', 'acct_' || e);
            RETURN NEXT e || ': ok';
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                    hint = PG_EXCEPTION_HINT, constraint_name = CONSTRAINT_NAME;
            RETURN NEXT e || ': ' || state || ' ' || replace(message, e, '*')
                        || coalesce(' | ' || replace(nullif(detail, ''), e, '*'), '')
                        || coalesce(' | ' || replace(nullif(hint, ''), e, '*'), '')
                        || coalesce(' [' || nullif(constraint_name, '') || ']', '');
        END;
    END LOOP;
END $f$;

-- An AFTER row trigger on the direct twin's accounts sees each change.
CREATE FUNCTION account_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE '% %/%: % -> %', TG_TABLE_NAME, NEW.wholesaler, NEW.retailer, OLD.used_credit, NEW.used_credit;
    RETURN NULL;
END $$;
CREATE TRIGGER touch AFTER UPDATE ON acct_direct FOR EACH ROW EXECUTE FUNCTION account_touch();

SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (1, 'w', 'DEBIT', 60.5), (2, 'w', 'DEBIT', 10)$$);
-- Above the limit, below zero, no account.
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (1, 'w', 'DEBIT', 39.51)$$);
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (2, 'w', 'CREDIT', 10.25)$$);
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (3, 'w', 'DEBIT', 1)$$);
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (NULL, 'w', 'DEBIT', 1)$$);
-- An UPDATE within one account is netted; one that moves takes back, then applies.
SELECT ledger_both($$UPDATE $e SET amount = 99.999 WHERE retailer = 1$$);
SELECT ledger_both($$UPDATE $e SET amount = 100.01 WHERE retailer = 1$$);
SELECT ledger_both($$UPDATE $e SET retailer = 2, amount = 40.01 WHERE retailer = 1$$);
SELECT ledger_both($$UPDATE $e SET retailer = 2, amount = 30 WHERE retailer = 1$$);
SELECT ledger_both($$DELETE FROM $e WHERE amount = 10$$);
-- The accounts' CHECK constraint refuses with its name.
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (2, 'w', 'CREDIT', 17)$$);
SELECT 'direct' AS path, * FROM acct_direct UNION ALL SELECT 'spi', * FROM acct_spi ORDER BY wholesaler, retailer, path;

-- Integer accounts: the statement's integer arithmetic, its overflow error
-- included (the netted UPDATE overflows on its first term).
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (1, 'w', 'DEBIT', 100), (1, 'v', 'DEBIT', 2147483600)$$, '_i');
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (1, 'v', 'DEBIT', 48)$$, '_i');
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (1, 'v', 'DEBIT', 47)$$, '_i');
SELECT ledger_both($$UPDATE $e SET amount = 2147483601 WHERE amount = 2147483600$$, '_i');
SELECT ledger_both($$UPDATE $e SET amount = 101 WHERE amount = 100$$, '_i');
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (1, 'w', 'CREDIT', 101)$$, '_i');
SELECT 'direct' AS path, * FROM acct_direct_i UNION ALL SELECT 'spi', * FROM acct_spi_i ORDER BY wholesaler, retailer, path;

-- A user's BEFORE trigger that skips the account's update: 27000 on both
-- (the direct path leaves such accounts to the SPI UPDATE).
CREATE OR REPLACE FUNCTION skip_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER skip BEFORE UPDATE ON acct_direct FOR EACH ROW EXECUTE FUNCTION skip_update();
CREATE TRIGGER skip BEFORE UPDATE ON acct_spi FOR EACH ROW EXECUTE FUNCTION skip_update();
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (2, 'w', 'DEBIT', 1)$$);
DROP TRIGGER skip ON acct_direct;
DROP TRIGGER skip ON acct_spi;

SELECT count(*) AS differences FROM acct_direct s FULL JOIN acct_spi t USING (wholesaler, retailer)
 WHERE (s.credit_limit, s.used_credit) IS DISTINCT FROM (t.credit_limit, t.used_credit);
SELECT count(*) AS differences FROM acct_direct_i s FULL JOIN acct_spi_i t USING (wholesaler, retailer)
 WHERE (s.credit_limit, s.used_credit) IS DISTINCT FROM (t.credit_limit, t.used_credit);

-- Accounts kept in an inheritance child: the statement (no ONLY) updates the
-- child's rows too, which the parent's unique index does not find, so the
-- direct path leaves a table with children to the statement.
CREATE TABLE acct_direct_i_closed () INHERITS (acct_direct_i);
CREATE TABLE acct_spi_i_closed () INHERITS (acct_spi_i);
INSERT INTO acct_direct_i_closed VALUES (9, 'w', 100, 0);
INSERT INTO acct_spi_i_closed VALUES (9, 'w', 100, 0);
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (9, 'w', 'DEBIT', 5)$$, '_i');
SELECT tableoid::regclass AS account_table, retailer, used_credit FROM acct_direct_i WHERE retailer = 9
UNION ALL
SELECT tableoid::regclass, retailer, used_credit FROM acct_spi_i WHERE retailer = 9 ORDER BY 1;
DROP TABLE acct_direct_i_closed, acct_spi_i_closed;

-- An account key column whose type changed after registration: the entry's
-- key is no value of the new type, and the statement says so (42883) instead
-- of the direct path comparing it as one.
ALTER TABLE acct_direct_i ALTER COLUMN retailer TYPE text USING retailer::text;
ALTER TABLE acct_spi_i ALTER COLUMN retailer TYPE text USING retailer::text;
SELECT ledger_both($$INSERT INTO $e (retailer, wholesaler, entry_type, amount) VALUES (1, 'w', 'DEBIT', 1)$$, '_i');

\ir common/teardown.sql
