//! `integrity.protect_append_only`: rows can be inserted, never updated,
//! deleted or truncated away.  Corrections are new, reversing rows.
//!
//! The row trigger is `BEFORE UPDATE OR DELETE … FOR EACH ROW`, so PostgreSQL
//! clones it onto every partition, present and future, and every path that
//! changes a row (ON CONFLICT DO UPDATE, MERGE, writable CTEs, FK cascades,
//! views) goes through it.  TRUNCATE triggers are per table and are not cloned:
//! the registration and the extension's event trigger put one on each partition.
//! The one delete it lets through is `purge_expired()`'s (see `sanctioned.rs`).

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode::ERRCODE_RESTRICT_VIOLATION;

use crate::error::Refusal;
use crate::sanctioned;
use crate::trigger::{qualified_name, trigger_entry, Firing, Verdict};

trigger_entry!(
    /// `BEFORE UPDATE OR DELETE FOR EACH ROW`: refuses every row it sees.
    integrity_append_only_guard,
    pg_finfo_integrity_append_only_guard,
    refuse_row_change
);

trigger_entry!(
    /// `BEFORE TRUNCATE FOR EACH STATEMENT`: refuses the TRUNCATE.
    integrity_append_only_truncate_guard,
    pg_finfo_integrity_append_only_truncate_guard,
    refuse_truncate
);

fn refuse_row_change(firing: &Firing) -> Verdict {
    let verb = match firing.event() {
        pg_sys::TRIGGER_EVENT_UPDATE => "update",
        pg_sys::TRIGGER_EVENT_DELETE => "delete",
        _ => firing.misuse(),
    };
    if !firing.is_row() {
        firing.misuse();
    }
    // purge_expired() removes rows past the table's retention.
    // SAFETY: the trigger's relation is open for the whole firing.
    if verb == "delete" && sanctioned::allows(unsafe { (*firing.relation()).rd_id }) {
        return Verdict::Allow(firing.trigtuple().datum());
    }
    let table = firing.table_name();
    firing.refuse(Refusal {
        code: ERRCODE_RESTRICT_VIOLATION,
        message: format!("cannot {verb} rows of append-only table \"{table}\""),
        detail: format!(
            "{} in table {} cannot be {verb}d: the table is append-only.",
            firing.row_key(firing.trigtuple()),
            firing.qualified_table_name()
        ),
        hint: "Insert a new entry that reverses or corrects this one instead.".into(),
        column: None,
    })
}

fn refuse_truncate(firing: &Firing) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_TRUNCATE {
        firing.misuse();
    }
    let qualified = firing.qualified_table_name();
    // A partition is guarded through its root, which is what gets re-registered;
    // the hint is SQL to run, so the name goes in as a literal.
    let root = partition_root(firing).replace('\'', "''");
    firing.refuse(Refusal {
        code: ERRCODE_RESTRICT_VIOLATION,
        message: format!("cannot truncate append-only table \"{}\"", firing.table_name()),
        detail: format!("Table {qualified} is append-only; TRUNCATE would remove all of its rows."),
        hint: format!(
            "To allow TRUNCATE, re-register with integrity.protect_append_only('{root}', allow_truncate => true)."
        ),
        column: None,
    })
}

unsafe extern "C-unwind" {
    fn get_partition_ancestors(relid: pg_sys::Oid) -> *mut pg_sys::List;
}

/// The top of the partition tree the firing table belongs to (itself if none).
fn partition_root(firing: &Firing) -> String {
    // SAFETY: the firing relation is open for the whole call.
    let relid = unsafe { (*firing.relation()).rd_id };
    // SAFETY: a catalog scan of pg_inherits (which may raise: guarded), for
    // a relation that exists; the list is palloc'd, parents first to root.
    let ancestors = unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| get_partition_ancestors(relid)) };
    // SAFETY: an OID list, NIL (NULL) when the table is no partition.
    let count = unsafe { pg_sys::list_length(ancestors) };
    // SAFETY: count - 1 is the list's last index, the root.
    qualified_name(if count == 0 { relid } else { unsafe { pg_sys::list_nth_oid(ancestors, count - 1) } })
}
