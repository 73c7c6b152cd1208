//! `integrity.protect_immutable` and `integrity.protect_write_once`: columns
//! whose value, once there, never changes.
//!
//! The triggers are `AFTER UPDATE … FOR EACH ROW WHEN (<a protected column
//! changed>)`.  The WHEN clause is evaluated by the executor on the final row,
//! after every BEFORE trigger, so no later trigger can slip a change past it, and
//! when nothing changed (the normal case) no trigger function runs at all.  The
//! function therefore only runs to name the offending column and refuse.  On
//! partitioned tables the same trigger is also installed BEFORE UPDATE, because
//! an UPDATE that moves a row to another partition is carried out as a DELETE
//! plus an INSERT and fires no AFTER UPDATE trigger.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::error::Refusal;
use crate::trigger::{trigger_entry, Firing, Verdict};

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

unsafe fn refuse_immutable_change(firing: &Firing) -> Verdict {
    unsafe { check(firing, Rule::Immutable) }
}

unsafe fn refuse_write_once_change(firing: &Firing) -> Verdict {
    unsafe { check(firing, Rule::WriteOnce) }
}

unsafe fn check(firing: &Firing, rule: Rule) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_UPDATE || !firing.is_row() {
        firing.misuse();
    }
    let old = firing.data.tg_trigtuple;
    let new = firing.data.tg_newtuple;
    for column in firing.args() {
        let attnum = firing.attnum(column).unwrap_or_else(|| firing.missing_column(column));
        let changed = !firing.same_value(old, new, attnum);
        let old_null = firing.value(old, attnum).1;
        let refused = match rule {
            Rule::Immutable => changed,
            Rule::WriteOnce => changed && !old_null,
        };
        if refused {
            return firing.refuse(refusal(firing, rule, attnum, &column.to_string_lossy()));
        }
    }
    // Reached only when the WHEN clause saw a change that is invisible to a
    // binary comparison, which its construction rules out; let the row through.
    if firing.is_before() {
        Verdict::Allow(pg_sys::Datum::from(new))
    } else {
        Verdict::Allow(pg_sys::Datum::from(0))
    }
}

fn refusal(firing: &Firing, rule: Rule, attnum: i16, column: &str) -> Refusal {
    let (old, new) = (firing.data.tg_trigtuple, firing.data.tg_newtuple);
    let table = firing.table_name();
    let key = firing.row_key(old);
    let qualified = firing.qualified_table_name();
    let (old_text, new_text) = (firing.value_text(old, attnum), firing.value_text(new, attnum));
    let (message, detail, hint) = match rule {
        Rule::Immutable => (
            format!("column \"{column}\" of table \"{table}\" is immutable"),
            format!("{key} in table {qualified}: {column} cannot change from {old_text} to {new_text}."),
            format!("The value is fixed when the row is inserted; leave {column} out of the UPDATE."),
        ),
        Rule::WriteOnce => (
            format!("column \"{column}\" of table \"{table}\" is write-once and already set"),
            format!("{key} in table {qualified}: {column} is already {old_text} and cannot change to {new_text}."),
            format!("{column} can be set once, from NULL to a value; it cannot change afterwards."),
        ),
    };
    Refusal { code: PgSqlErrorCode::ERRCODE_RESTRICT_VIOLATION, message, detail, hint, column: Some(attnum) }
}
