//! pg_integrity: declarative data-integrity guards enforced inside PostgreSQL.
//!
//! The SQL API (registration, registry, event triggers) is hand-written in
//! `sql/`; this crate provides the compiled trigger functions it installs.
//!
//! Every `unsafe` block says, in a `// SAFETY:` comment, which invariant
//! makes it sound, and an `unsafe fn` states its contract under `# Safety`.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod backend_map;
mod ddl_commands;
mod error;
mod executor_hooks;
mod fmgr;
mod invalidation;
mod notifier;
mod predicates;
mod refusals;
mod sanctioned;
mod trigger;

mod append_only;
mod chain_encoding;
mod chain_verify;
mod direct_update;
mod frozen_columns;
mod hash_chain;
mod hold_records;
mod holds;
mod ledger_credit;
mod lifecycle;
mod quantities;
mod soft_delete;
mod stock_operations;
mod totals;
mod update_plans;
mod versioning;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

pgrx::pg_module_magic!();

/// Errors that PostgreSQL raises inside the extension's compiled code cross
/// pgrx's guards as Rust panics, and pgrx puts the Rust backtrace it captured
/// into the DETAIL a client sees when `RUST_BACKTRACE` is set in the server's
/// environment.  `RUST_LIB_BACKTRACE` takes precedence over it for
/// `Backtrace::capture`: clients get PostgreSQL's error, not the extension's
/// stack.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // A backend is single-threaded, and nothing has captured a backtrace yet
    // when the library loads.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    executor_hooks::init();
    // SAFETY: a backend-global flag, set by the postmaster while it loads
    // shared_preload_libraries.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        refusals::init_preloaded();
        notifier::init_preloaded();
    }
}

pgrx::extension_sql_file!("../sql/registry.sql", name = "registry", bootstrap);
pgrx::extension_sql_file!("../sql/lifecycle_events.sql", name = "lifecycle_events", requires = ["registry"]);
pgrx::extension_sql_file!(
    "../sql/compiled_functions.sql",
    name = "compiled_functions",
    requires = ["lifecycle_events"]
);
pgrx::extension_sql_file!("../sql/registration.sql", name = "registration", requires = ["compiled_functions"]);
pgrx::extension_sql_file!("../sql/stock_credit.sql", name = "stock_credit", requires = ["registration"]);
pgrx::extension_sql_file!("../sql/reports.sql", name = "reports", requires = ["stock_credit"]);
pgrx::extension_sql_file!("../sql/hash_chain.sql", name = "hash_chain", requires = ["reports"]);
pgrx::extension_sql_file!("../sql/lifecycle.sql", name = "lifecycle", requires = ["hash_chain"]);
pgrx::extension_sql_file!("../sql/soft_delete.sql", name = "soft_delete", requires = ["lifecycle"]);
pgrx::extension_sql_file!("../sql/retention.sql", name = "retention", requires = ["soft_delete"]);
pgrx::extension_sql_file!("../sql/holds.sql", name = "holds", requires = ["retention"]);
pgrx::extension_sql_file!("../sql/totals.sql", name = "totals", requires = ["holds"]);
pgrx::extension_sql_file!("../sql/schema_parity.sql", name = "schema_parity", requires = ["totals"]);
pgrx::extension_sql_file!("../sql/monitoring.sql", name = "monitoring", requires = ["schema_parity"]);
pgrx::extension_sql_file!("../sql/event_triggers.sql", name = "event_triggers", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
