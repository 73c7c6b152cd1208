//! `#[pg_test]`s: the parts of the guards that are easiest to check from
//! inside the backend, through SPI.  The SQL-level behaviour (every guard, every
//! bypass, every SQLSTATE) is pinned by the pg_regress suite in `tests/`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup_pieces() {
        Spi::run(
            "CREATE TABLE pieces (id int PRIMARY KEY, created_by_transaction_id uuid, version int NOT NULL DEFAULT 1);
             INSERT INTO pieces SELECT g, gen_random_uuid(), 1 FROM generate_series(1, 100) g;",
        )
        .unwrap();
    }

    #[pg_test]
    fn versioning_bumps_every_row_of_a_multi_row_update_once() {
        setup_pieces();
        Spi::run("SELECT integrity.enable_versioning('pieces')").unwrap();
        Spi::run("UPDATE pieces SET created_by_transaction_id = created_by_transaction_id").unwrap();
        Spi::run("UPDATE pieces SET version = version + 1").unwrap();
        let versions = Spi::get_one::<i64>("SELECT count(*) FROM pieces WHERE version = 3").unwrap();
        assert_eq!(versions, Some(100));
    }

    #[pg_test]
    fn versioning_overwrites_the_version_wherever_it_lies_in_the_row() {
        // Varlenas with 1- and 4-byte headers, NULLs, a dropped column and
        // alignment padding before the version, of each integer width.
        for version_type in ["smallint", "integer", "bigint"] {
            Spi::run(&format!(
                "DROP TABLE IF EXISTS layouts;
                 CREATE TABLE layouts (id int PRIMARY KEY, flag boolean, note text, gone int, amount numeric,
                                       stamp timestamptz, version {version_type} NOT NULL DEFAULT 1, tail text);
                 ALTER TABLE layouts DROP COLUMN gone;
                 INSERT INTO layouts VALUES
                   (1, true, 'short', 1.5, now(), 1, 'x'),
                   (2, NULL, repeat('long ', 100), NULL, NULL, 7, NULL),
                   (3, false, NULL, 12345678901234567890.5, now(), 2, repeat('y', 300)),
                   (4, true, '', 0, NULL, 30000, '');
                 SELECT integrity.enable_versioning('layouts');
                 UPDATE layouts SET flag = NOT flag;"
            ))
            .unwrap();
            let versions = Spi::get_one::<String>(
                "SELECT string_agg(version::text, ',' ORDER BY id) || '|' ||
                        string_agg(coalesce(note, 'N') || coalesce(tail, 'N'), ',' ORDER BY id) FROM layouts",
            )
            .unwrap()
            .unwrap();
            let expected_rest = format!("shortx,{}N,N{},", "long ".repeat(100), "y".repeat(300));
            assert_eq!(versions, format!("2,8,3,30001|{expected_rest}"), "version type {version_type}");
        }
    }

    #[pg_test]
    fn versioning_plan_follows_each_partition_layout() {
        // A partition whose version column sits at another attribute number
        // (created with a dropped column) must be bumped at its own position.
        Spi::run(
            "CREATE TABLE parts (id int, region text, version bigint NOT NULL DEFAULT 1) PARTITION BY LIST (region);
             CREATE TABLE parts_a PARTITION OF parts FOR VALUES IN ('a');
             CREATE TABLE parts_b (junk int, id int, region text, version bigint NOT NULL DEFAULT 1);
             ALTER TABLE parts_b DROP COLUMN junk;
             ALTER TABLE parts ATTACH PARTITION parts_b FOR VALUES IN ('b');
             INSERT INTO parts VALUES (1, 'a', 7), (2, 'b', 40);
             SELECT integrity.enable_versioning('parts');
             UPDATE parts SET id = id;",
        )
        .unwrap();
        let sum = Spi::get_one::<i64>("SELECT sum(version)::bigint FROM parts").unwrap();
        assert_eq!(sum, Some(8 + 41));
    }

    #[pg_test]
    #[should_panic(expected = "is immutable")]
    fn immutable_column_refuses_change_made_by_a_later_before_trigger() {
        setup_pieces();
        Spi::run(
            "SELECT integrity.protect_immutable('pieces', ARRAY['created_by_transaction_id']);
             CREATE FUNCTION sneaky() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN NEW.created_by_transaction_id := gen_random_uuid(); RETURN NEW; END $$;
             CREATE TRIGGER zz_sneaky BEFORE UPDATE ON pieces FOR EACH ROW EXECUTE FUNCTION sneaky();",
        )
        .unwrap();
        Spi::run("UPDATE pieces SET version = version WHERE id = 1").unwrap();
    }

    #[pg_test]
    fn quantity_signs_and_order_follow_the_column_type() {
        use crate::quantities::{compare, sign};
        use core::cmp::Ordering::*;
        use pgrx::IntoDatum;
        let numeric = |s: &str| pgrx::AnyNumeric::try_from(s).unwrap().into_datum().unwrap();
        assert_eq!(sign(pg_sys::NUMERICOID, numeric("-0.001")), Less);
        assert_eq!(sign(pg_sys::NUMERICOID, numeric("0.000")), Equal);
        assert_eq!(compare(pg_sys::NUMERICOID, numeric("10.50"), numeric("10.5")), Equal);
        assert_eq!(sign(pg_sys::INT4OID, (-3i32).into_datum().unwrap()), Less);
        assert_eq!(compare(pg_sys::INT8OID, 7i64.into_datum().unwrap(), 9i64.into_datum().unwrap()), Less);
        assert_eq!(sign(pg_sys::INT2OID, 0i16.into_datum().unwrap()), Equal);
    }

    #[pg_test]
    fn ledger_credit_statement_follows_re_registration() {
        // The prepared statement is cached per trigger; re-registering the
        // guard on other account columns must not keep using the old one.
        Spi::run(
            "CREATE TABLE accounts (id int PRIMARY KEY, credit_limit int, used_credit int,
                                    other_limit int, other_used int);
             INSERT INTO accounts VALUES (1, 100, 0, 10, 0);
             CREATE TABLE entries (id serial PRIMARY KEY, id_account int, entry_type text, amount int);
             ALTER TABLE entries RENAME COLUMN id_account TO account_id;
             ALTER TABLE accounts RENAME COLUMN id TO account_id;
             SELECT integrity.guard_ledger_credit('entries', 'accounts', ARRAY['account_id']);
             INSERT INTO entries (account_id, entry_type, amount) VALUES (1, 'DEBIT', 50);
             SELECT integrity.guard_ledger_credit('entries', 'accounts', ARRAY['account_id'],
                                                  limit_column => 'other_limit', used_column => 'other_used');
             INSERT INTO entries (account_id, entry_type, amount) VALUES (1, 'DEBIT', 5);",
        )
        .unwrap();
        let used = Spi::get_two::<i32, i32>("SELECT used_credit, other_used FROM accounts").unwrap();
        assert_eq!(used, (Some(50), Some(5)));
    }

    #[pg_test]
    #[should_panic(expected = "pg_integrity guard functions can only be called as triggers")]
    fn guard_function_called_directly_is_refused() {
        Spi::run("SELECT integrity.version_bump()").unwrap();
    }
}
