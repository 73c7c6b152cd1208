//! Helpers for the tokio-postgres client tests: connections to the test cluster,
//! a schema of each test's own with the guide tables, the shared guard cases, and
//! the 40001 retry idiom that docs/migration-tools.md shows.
//!
//! The environment comes from `make test-clients`: PGHOST (the socket directory),
//! PGPORT, PGUSER and CLIENTS_DB (the database, created by `database()`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Error, NoTls, Transaction};

/// tests/clients: the schema and the guard cases every client suite shares.
pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn config(dbname: &str) -> Config {
    let mut config = Config::new();
    config
        .host(env("PGHOST", "/tmp"))
        .port(env("PGPORT", "5432").parse().expect("PGPORT"))
        .user(env("PGUSER", "postgres"))
        .dbname(dbname);
    config
}

/// A connection to `dbname` with `search_path` set to `schema` (when given); its
/// connection task runs on the current runtime.
pub async fn connect_to(dbname: &str, schema: Option<&str>) -> Client {
    let mut config = config(dbname);
    if let Some(schema) = schema {
        config.options(format!("-c search_path={schema}"));
    }
    let (client, connection) = config.connect(NoTls).await.expect("connect to the test cluster");
    tokio::spawn(async move {
        // The connection ends with an error only when the server goes away: the
        // test's next query fails and says so.
        let _ = connection.await;
    });
    client
}

/// The suite's database, created afresh with the extension by the first test that
/// needs it (the tests of the binary run in parallel threads and share it).
pub async fn database() -> String {
    static CREATED: OnceCell<String> = OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            let db = env("CLIENTS_DB", "integrity_clients_rust");
            let admin = connect_to("postgres", None).await;
            // FORCE: a failed run may have left a connection behind.
            admin.batch_execute(&format!(r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#)).await.unwrap();
            admin.batch_execute(&format!(r#"CREATE DATABASE "{db}""#)).await.unwrap();
            connect_to(&db, None).await.batch_execute("CREATE EXTENSION pg_integrity").await.unwrap();
            db
        })
        .await
        .clone()
}

/// A fresh schema holding tests/clients/schema.sql's guide tables, guards and rows.
pub async fn make_schema(label: &str) -> String {
    static NUMBERS: AtomicU32 = AtomicU32::new(1);
    let name = format!("t{}_{}", NUMBERS.fetch_add(1, Ordering::Relaxed), label);
    let admin = connect_to(&database().await, None).await;
    let schema_sql = std::fs::read_to_string(clients_dir().join("schema.sql")).unwrap();
    admin.batch_execute(&format!("CREATE SCHEMA {name}; SET search_path = {name};\n{schema_sql}")).await.unwrap();
    name
}

/// A connection to the suite's database whose search_path is `schema`.
pub async fn connect(schema: &str) -> Client {
    connect_to(&database().await, Some(schema)).await
}

/// Runs `test` on a single-threaded runtime, inside a LocalSet so that it can
/// spawn_local a second session (the retry closure's futures borrow, so they are
/// not Send).
pub fn run<F: std::future::Future>(test: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, test)
}

/// tests/clients/guard_cases.json: one refused write per guard kind and the fields
/// every client must receive.
pub fn guard_cases() -> Value {
    let text = std::fs::read_to_string(clients_dir().join("guard_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The id of a row of schema.sql's spare pieces (PIECE_1, PIECE_2).
pub fn piece(name: &str) -> String {
    guard_cases()["pieces"][name].as_str().unwrap().to_string()
}

/// Returns once backend `pid` waits for a lock another session holds: how the race
/// tests order two sessions.
pub async fn wait_until_blocked(observer: &Client, pid: i32) {
    for _ in 0..3000 {
        let row = observer.query_one("SELECT cardinality(pg_blocking_pids($1)) > 0", &[&pid]).await.unwrap();
        if row.get::<_, bool>(0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("backend {pid} never blocked");
}

/// The 40001 retry idiom: run the transaction again from its first read until it
/// commits. Returns its result and the number of attempts it took.
pub async fn run_with_retry<T>(
    client: &mut Client,
    attempts: u32,
    mut transaction: impl AsyncFnMut(&Transaction<'_>) -> Result<T, Error>,
) -> Result<(T, u32), Error> {
    let mut attempt = 1;
    loop {
        let tx = client.transaction().await?;
        // A stale write (strict versioning) or a REPEATABLE READ / SERIALIZABLE
        // conflict is 40001, from a statement or from the COMMIT.
        let outcome = match transaction(&tx).await {
            Ok(value) => tx.commit().await.map(|()| value),
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        };
        match outcome {
            Err(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) && attempt < attempts => attempt += 1,
            outcome => return outcome.map(|value| (value, attempt)),
        }
    }
}
