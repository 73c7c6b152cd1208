//! `integrity.protect_immutable` and `integrity.protect_write_once`: columns
//! whose value, once there, never changes.
//!
//! The guard is a `BEFORE UPDATE … FOR EACH ROW` trigger that compares the
//! protected columns of OLD and NEW binarily (so `1.0` → `1.00` is a change)
//! with their attribute numbers resolved once per statement.  A BEFORE trigger
//! also sees an UPDATE that moves a row to another partition, which fires no
//! AFTER UPDATE trigger.
//!
//! BEFORE triggers fire in name order, so one that sorts after the guard's could
//! change NEW after the guard looked at it.  While a table has such a trigger,
//! registration adds `…_recheck`: `AFTER UPDATE … FOR EACH ROW WHEN (<a
//! protected column changed>)`, evaluated by the executor on the final row,
//! which runs the same function only to name the column and refuse.  Tables
//! without one do not pay for it: PostgreSQL compiles a WHEN clause anew for
//! every statement, which costs a single-row UPDATE more than the check itself.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::error::Refusal;
use crate::trigger::{trigger_entry, ColumnChange, Firing, Verdict};

trigger_entry!(
    /// Fires when a column listed in its arguments changed.
    integrity_immutable_guard,
    pg_finfo_integrity_immutable_guard,
    refuse_immutable_change
);

trigger_entry!(
    /// Fires when a column listed in its arguments changed after being set.
    integrity_write_once_guard,
    pg_finfo_integrity_write_once_guard,
    refuse_write_once_change
);

#[derive(Clone, Copy, PartialEq)]
enum Rule {
    /// The value is fixed at INSERT, NULL included.
    Immutable,
    /// The value may go from NULL to a value once.
    WriteOnce,
}

fn refuse_immutable_change(firing: &Firing) -> Verdict {
    check(firing, Rule::Immutable)
}

fn refuse_write_once_change(firing: &Firing) -> Verdict {
    check(firing, Rule::WriteOnce)
}

fn check(firing: &Firing, rule: Rule) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_UPDATE || !firing.is_row() {
        firing.misuse();
    }
    let (old, new) = (firing.trigtuple(), firing.newtuple());
    for &attnum in protected_columns(firing) {
        let refused = match rule {
            Rule::Immutable => !firing.same_value(old, new, attnum),
            Rule::WriteOnce => !firing.value(old, attnum).1 && !firing.same_value(old, new, attnum),
        };
        if refused {
            return firing.refuse(refusal(firing, rule, attnum));
        }
    }
    if firing.is_before() {
        Verdict::Allow(new.datum())
    } else {
        // The recheck's WHEN clause saw a change that a binary comparison does
        // not, which its construction rules out: let the row through.
        Verdict::Allow(pg_sys::Datum::from(0))
    }
}

/// The attribute numbers of the columns the trigger's arguments name.
fn protected_columns<'f>(firing: &'f Firing) -> &'f [i16] {
    let plan = firing.statement_plan(|| {
        let attnums: Vec<i16> =
            firing.args().map(|c| firing.attnum(c).unwrap_or_else(|| firing.missing_column(c))).collect();
        // SAFETY: the copy lives in fn_mcxt, as long as the plan that points to it.
        unsafe {
            let copy =
                pg_sys::MemoryContextAlloc(firing.plan_memory_context(), size_of_val(attnums.as_slice())) as *mut i16;
            copy.copy_from_nonoverlapping(attnums.as_ptr(), attnums.len());
            (copy as *const i16, attnums.len())
        }
    });
    // SAFETY: see above; the pointer is valid for len elements.
    unsafe { core::slice::from_raw_parts(plan.0, plan.1) }
}

fn refusal(firing: &Firing, rule: Rule, attnum: i16) -> Refusal {
    let ColumnChange { column, table, key, qualified, old, new } = firing.column_change(attnum);
    let (message, detail, hint) = match rule {
        Rule::Immutable => (
            format!("column \"{column}\" of table \"{table}\" is immutable"),
            format!("{key} in table {qualified}: {column} cannot change from {old} to {new}."),
            format!("The value is fixed when the row is inserted; leave {column} out of the UPDATE."),
        ),
        Rule::WriteOnce => (
            format!("column \"{column}\" of table \"{table}\" is write-once and already set"),
            format!("{key} in table {qualified}: {column} is already {old} and cannot change to {new}."),
            format!("{column} can be set once, from NULL to a value; it cannot change afterwards."),
        ),
    };
    Refusal { code: PgSqlErrorCode::ERRCODE_RESTRICT_VIOLATION, message, detail, hint, column: Some(attnum) }
}
