//! `integrity.guard_stock` and `integrity.guard_credit`: a part that must stay
//! within a non-negative total (`0 <= reserved_stock <= stock`,
//! `0 <= used_credit <= credit_limit`).
//!
//! Both rules are pure row predicates, enforced like a NOT VALID CHECK
//! constraint by a `BEFORE INSERT OR UPDATE … FOR EACH ROW` trigger that checks
//! the new row; rows that were invalid before registration stay until an UPDATE
//! touches them, which must then leave them valid.  While a BEFORE trigger of
//! another kind fires after the guard's, registration adds a recheck, `AFTER
//! INSERT OR UPDATE … WHEN (NOT (<rule>))`, which sees the final row and runs
//! the same function only to say which part of the rule broke (see
//! `frozen_columns.rs` for why the WHEN clause is not there for every table).
//!
//! The rule is per row, so it cannot be raced: concurrent updates of one row
//! are serialized by its row lock and each is checked on the row it leaves.

use core::cmp::Ordering;
use core::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::error::Refusal;
use crate::trigger::{trigger_entry, Firing, Row, Verdict};

trigger_entry!(
    /// Arguments `(stock_column, reserved_column)`.
    integrity_stock_guard,
    pg_finfo_integrity_stock_guard,
    refuse_stock
);

trigger_entry!(
    /// Arguments `(limit_column, used_column)`.
    integrity_credit_guard,
    pg_finfo_integrity_credit_guard,
    refuse_credit
);

#[derive(Clone, Copy)]
enum Quantity {
    Stock,
    Credit,
}

fn refuse_stock(firing: &Firing) -> Verdict {
    check(firing, Quantity::Stock)
}

fn refuse_credit(firing: &Firing) -> Verdict {
    check(firing, Quantity::Credit)
}

/// The type of quantity column `attnum`: smallint, integer, bigint or numeric.
/// Only these may reach `sign` and `compare`, which would read any other
/// datum as one of them.
pub fn quantity_type(firing: &Firing, attnum: i16) -> pg_sys::Oid {
    match firing.attribute(attnum).atttypid {
        typid @ (pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID | pg_sys::NUMERICOID) => typid,
        _ => firing.wrong_column_type(attnum, "smallint, integer, bigint or numeric"),
    }
}

/// Whether `value`, a datum of integer or numeric type `typid`, is numeric's
/// NaN, which compares greater than every number: `NaN >= 0` and
/// `reserved <= NaN` hold, so a NaN would pass every rule.
pub fn is_nan(typid: pg_sys::Oid, value: pg_sys::Datum) -> bool {
    // SAFETY: a numeric datum; numeric_is_nan reads the header of an
    // unpacked, untoasted numeric, which pg_detoast_datum returns (a copy in
    // the current memory context only when the value is packed or toasted).
    typid == pg_sys::NUMERICOID
        && unsafe { pg_sys::numeric_is_nan(pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as pg_sys::Numeric) }
}

/// The sign of `value`, a datum of integer or numeric type `typid`.
pub fn sign(typid: pg_sys::Oid, value: pg_sys::Datum) -> Ordering {
    let zero = match typid {
        pg_sys::NUMERICOID => numeric_zero(),
        _ => pg_sys::Datum::from(0),
    };
    compare(typid, value, zero)
}

/// Numeric 0, made once per backend (in TopMemoryContext), not once per row.
fn numeric_zero() -> pg_sys::Datum {
    static ZERO: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: TopMemoryContext lives as long as the backend; the switch is
    // undone before anything else can run.
    pg_sys::Datum::from(*ZERO.get_or_init(|| unsafe {
        let previous = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        let zero = pg_sys::int64_to_numeric(0);
        pg_sys::MemoryContextSwitchTo(previous);
        zero as usize
    }))
}

/// Compares two datums of type `typid` with its default btree ordering.
///
/// Like `is_nan` and `sign`, this trusts its caller to pass datums of
/// `typid`, one of the types `quantity_type` admits: every caller passes the
/// values of quantity columns of that type (or `numeric_zero`), and the unit
/// tests datums they made of it.
pub fn compare(typid: pg_sys::Oid, a: pg_sys::Datum, b: pg_sys::Datum) -> Ordering {
    // SAFETY: the type cache entry of an integer or numeric type, which has
    // a btree comparison function (looked up, and kept in the cache for the
    // backend's life); `a` and `b` are datums of that type (see above).
    unsafe {
        let entry = pg_sys::lookup_type_cache(typid, pg_sys::TYPECACHE_CMP_PROC_FINFO as i32);
        let result = pg_sys::FunctionCall2Coll(&mut (*entry).cmp_proc_finfo, pg_sys::InvalidOid, a, b);
        (result.value() as i32).cmp(&0)
    }
}

/// The guard's columns and their type, resolved once per statement.
struct QuantityPlan {
    total_att: i16,
    part_att: i16,
    typid: pg_sys::Oid,
}

fn quantity_plan<'f>(firing: &'f Firing) -> &'f QuantityPlan {
    firing.statement_plan(|| {
        let mut args = firing.args();
        let (Some(total_name), Some(part_name)) = (args.next(), args.next()) else { firing.misuse() };
        let total_att = firing.attnum(total_name).unwrap_or_else(|| firing.missing_column(total_name));
        let part_att = firing.attnum(part_name).unwrap_or_else(|| firing.missing_column(part_name));
        let typid = quantity_type(firing, total_att);
        if quantity_type(firing, part_att) != typid {
            // SAFETY: format_type_be returns a palloc'd NUL-terminated name.
            let total_type = unsafe { CStr::from_ptr(pg_sys::format_type_be(typid)) }.to_string_lossy();
            firing.wrong_column_type(part_att, &format!("{total_type} like {}", total_name.to_string_lossy()));
        }
        QuantityPlan { total_att, part_att, typid }
    })
}

fn check(firing: &Firing, quantity: Quantity) -> Verdict {
    let event = firing.event();
    if !firing.is_row() || (event != pg_sys::TRIGGER_EVENT_INSERT && event != pg_sys::TRIGGER_EVENT_UPDATE) {
        firing.misuse();
    }
    let row = if event == pg_sys::TRIGGER_EVENT_UPDATE { firing.newtuple() } else { firing.trigtuple() };
    let &QuantityPlan { total_att, part_att, typid } = quantity_plan(firing);
    let (total, total_null) = firing.value(row, total_att);
    let (part, part_null) = firing.value(row, part_att);

    let broken = if !total_null && is_nan(typid, total) {
        Some((total_att, Rule::TotalNaN))
    } else if !part_null && is_nan(typid, part) {
        Some((part_att, Rule::PartNaN))
    } else if !total_null && sign(typid, total) == Ordering::Less {
        Some((total_att, Rule::TotalNegative))
    } else if !part_null && sign(typid, part) == Ordering::Less {
        Some((part_att, Rule::PartNegative))
    } else if !total_null && !part_null && compare(typid, part, total) == Ordering::Greater {
        Some((part_att, Rule::PartAboveTotal))
    } else {
        None
    };
    match broken {
        Some((at_fault, rule)) => {
            firing.refuse(refusal(firing, quantity, rule, row, Columns { total: total_att, part: part_att, at_fault }))
        }
        None if firing.is_before() => Verdict::Allow(row.datum()),
        None => Verdict::Allow(pg_sys::Datum::from(0)),
    }
}

#[derive(Clone, Copy)]
enum Rule {
    TotalNaN,
    PartNaN,
    TotalNegative,
    PartNegative,
    PartAboveTotal,
}

/// The guarded columns' attribute numbers and the one the refusal is about.
struct Columns {
    total: i16,
    part: i16,
    at_fault: i16,
}

fn refusal(firing: &Firing, quantity: Quantity, rule: Rule, row: Row, columns: Columns) -> Refusal {
    let name = |attnum: i16| pgrx::name_data_to_str(&firing.attribute(attnum).attname);
    let (total, part) = (name(columns.total), name(columns.part));
    let table = firing.table_name();
    let message = match rule {
        Rule::TotalNaN => format!("{total} of table \"{table}\" cannot be NaN"),
        Rule::PartNaN => format!("{part} of table \"{table}\" cannot be NaN"),
        Rule::TotalNegative => format!("{total} of table \"{table}\" cannot be negative"),
        Rule::PartNegative => format!("{part} of table \"{table}\" cannot be negative"),
        Rule::PartAboveTotal => format!("{part} of table \"{table}\" cannot exceed {total}"),
    };
    let detail = format!(
        "{} in table {} would have {total} {} and {part} {}.",
        firing.row_key(row),
        firing.qualified_table_name(),
        firing.value_text(row, columns.total),
        firing.value_text(row, columns.part)
    );
    let hint = match quantity {
        Quantity::Stock => "Reserve, release and consume stock with integrity.reserve_stock(), release_stock() and \
                            commit_stock(): they check what is available under the row lock and never oversell."
            .to_string(),
        Quantity::Credit => format!("Keep {part} between 0 and {total}: record a payment or raise the limit first."),
    };
    Refusal { code: PgSqlErrorCode::ERRCODE_CHECK_VIOLATION, message, detail, hint, column: Some(columns.at_fault) }
}
