//! tokio-postgres: what a Rust application sees when it hits each guard
//! (tests/clients/guard_cases.json, the cases the Python and Node suites check
//! too), the 40001 retry idiom converging, and integrity.reserve_stock.

use pg_integrity_client_tests::{connect, guard_cases, make_schema, piece, run, run_with_retry, wait_until_blocked};
use tokio_postgres::error::SqlState;

#[test]
fn every_guard_error_carries_its_fields() {
    run(async {
        // Every statement is refused and rolled back: the cases share one schema.
        let schema = make_schema("db_error_fields").await;
        let client = connect(&schema).await;
        let cases = guard_cases();
        let cases = cases["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 9);
        for case in cases {
            let id = case["id"].as_str().unwrap();
            let expected = |field: &str| case[field].as_str().map(|s| s.replace("{schema}", &schema));
            let err = client.batch_execute(case["sql"].as_str().unwrap()).await.expect_err(id);
            let db = err.as_db_error().unwrap_or_else(|| panic!("{id}: not a DbError: {err}"));

            assert_eq!(db.code().code(), case["sqlstate"].as_str().unwrap(), "{id}: SQLSTATE");
            assert_eq!(err.code(), Some(db.code()), "{id}: Error::code");
            assert_eq!(db.severity(), "ERROR", "{id}");
            assert_eq!(db.schema(), Some(schema.as_str()), "{id}: schema");
            assert_eq!(db.table().map(str::to_string), expected("table"), "{id}: table");
            assert_eq!(db.column().map(str::to_string), expected("column"), "{id}: column");
            assert_eq!(db.constraint().map(str::to_string), expected("constraint"), "{id}: constraint");
            let detail = db.detail().unwrap_or_else(|| panic!("{id}: no DETAIL"));
            assert!(detail.starts_with(&expected("detail").unwrap()), "{id}: DETAIL {detail:?}");
            assert_eq!(db.hint().map(str::to_string), expected("hint"), "{id}: HINT");
        }
        // The SqlState constants an application matches on.
        let stale = client
            .batch_execute(&format!("UPDATE sprinkler_spare_pieces SET version = 7 WHERE id = '{}'", piece("PIECE_1")))
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
        let append_only = client.batch_execute("DELETE FROM ledger_entries").await.unwrap_err();
        assert_eq!(append_only.code(), Some(&SqlState::RESTRICT_VIOLATION));
        let stock = client.batch_execute("UPDATE wholesaler_products SET stock = -1").await.unwrap_err();
        assert_eq!(stock.code(), Some(&SqlState::CHECK_VIOLATION));
    });
}

#[test]
fn refused_statement_changes_nothing() {
    run(async {
        let schema = make_schema("refused_changes_nothing").await;
        let mut client = connect(&schema).await;
        let tx = client.transaction().await.unwrap();
        let err = tx
            .execute(
                "INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount) \
                 VALUES (1, 20, 'DEBIT', 400.01)",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::CHECK_VIOLATION));
        // The transaction is aborted until it is rolled back.
        let aborted = tx.execute("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(aborted.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
        tx.rollback().await.unwrap();
        let row = client
            .query_one(
                "SELECT count(*), (SELECT used_credit::text FROM retailer_wholesaler_credits) FROM ledger_entries",
                &[],
            )
            .await
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, String>(1)), (1, "600.00".to_string()));
    });
}

#[test]
fn stale_writer_retries_and_converges() {
    run(async {
        let schema = make_schema("retry").await;
        let id = piece("PIECE_1");
        let mut holder = connect(&schema).await;
        let mut racer = connect(&schema).await;
        let observer = connect(&schema).await;
        let racer_pid: i32 = racer.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

        // The other writer updates first and holds the row until the racer waits on it.
        let hold = holder.transaction().await.unwrap();
        hold.execute("UPDATE sprinkler_spare_pieces SET status = 'DISPATCHED' WHERE id = $1::text::uuid", &[&id])
            .await
            .unwrap();

        let race = tokio::task::spawn_local(async move {
            let id = piece("PIECE_1");
            run_with_retry(&mut racer, 5, async |tx| {
                // "Send back what you read": the guard refuses it if the row moved on.
                let read: i32 = tx
                    .query_one("SELECT version FROM sprinkler_spare_pieces WHERE id = $1::text::uuid", &[&id])
                    .await?
                    .get(0);
                tx.execute(
                    "UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT', version = $1 WHERE id = $2::text::uuid",
                    &[&read, &id],
                )
                .await?;
                Ok(read)
            })
            .await
        });
        wait_until_blocked(&observer, racer_pid).await;
        hold.commit().await.unwrap();

        // First attempt read version 1, found 2 after the wait (40001); the second read 2.
        let (last_read, attempts) = race.await.unwrap().unwrap();
        assert_eq!((last_read, attempts), (2, 2));
        let row = observer
            .query_one("SELECT status, version FROM sprinkler_spare_pieces WHERE id = $1::text::uuid", &[&id])
            .await
            .unwrap();
        assert_eq!((row.get::<_, String>(0), row.get::<_, i32>(1)), ("SOLD_OUT".to_string(), 3));
    });
}

#[test]
fn retry_gives_up_with_the_last_40001() {
    run(async {
        let schema = make_schema("retry_gives_up").await;
        let mut client = connect(&schema).await;
        let id = piece("PIECE_1");
        let mut calls = 0;
        // A writer that always sends a version the row never had: every attempt is stale.
        let err = run_with_retry(&mut client, 3, async |tx| {
            calls += 1;
            tx.execute("UPDATE sprinkler_spare_pieces SET version = 9 WHERE id = $1::text::uuid", &[&id]).await
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
        assert_eq!(calls, 3);
    });
}

#[test]
fn reserve_stock_from_rust() {
    run(async {
        let schema = make_schema("reserve_stock").await;
        let mut client = connect(&schema).await;
        let reserve = "SELECT integrity.reserve_stock('wholesaler_products', 1::int, $1::int)";
        let tx = client.transaction().await.unwrap();
        // 10 in stock: 7 can be reserved, then 4 more cannot (false, not an error).
        assert!(tx.query_one(reserve, &[&7i32]).await.unwrap().get::<_, bool>(0));
        assert!(!tx.query_one(reserve, &[&4i32]).await.unwrap().get::<_, bool>(0));
        tx.rollback().await.unwrap();
        // The rollback gave the reservation back.
        let row =
            client.query_one("SELECT stock, reserved_stock FROM wholesaler_products WHERE id = 1", &[]).await.unwrap();
        assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (10, 0));
    });
}
