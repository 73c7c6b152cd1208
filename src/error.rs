//! The one place that turns what the extension refuses or cannot do into a
//! PostgreSQL error.  There are two ways, one for each kind of error:
//!
//! - [`Error`]: every error that is not a guard's refusal (a guard function
//!   attached by hand the wrong way, a bad argument of a stock operation, an
//!   SPI call that failed), raised with [`Error::raise`] through pgrx's
//!   `ErrorReport`, which carries SQLSTATE, message, DETAIL and HINT and
//!   unwinds the Rust frames to the nearest `#[pg_guard]`.
//! - [`Refusal`]: a guard violation.  `ErrorReport` has no
//!   schema/table/column/constraint fields, which drivers expose and which
//!   PostgreSQL fills for a CHECK violation, so a refusal is raised by [`raise`]
//!   with the backend's own `ereport` entry points.  `raise` longjmps, so it is
//!   only ever called from the outermost frame of a C entry point (see
//!   `fmgr::guarded_function!`), with nothing left on the Rust side that needs
//!   dropping: a `Violation` is plain data whose strings live in a PostgreSQL
//!   memory context.

use core::ffi::{c_char, c_int};
use std::borrow::Cow;
use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

use crate::fmgr::spi_result;

/// Every error the extension raises that is not a guard's refusal.  The
/// message is the variant's `Display`; SQLSTATE, DETAIL and HINT come from
/// [`Error::sqlstate`], [`Error::detail`] and [`Error::hint`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The extension's own machinery failed (XX000): a bug, or a damaged
    // installation.
    /// An SPI call returned an error code.
    #[error("pg_integrity: {what} failed: {}", spi_result(*.rc))]
    Spi { what: Cow<'static, str>, rc: c_int },
    /// `SPI_prepare` returned no plan; `what` names the statement.
    #[error("pg_integrity: could not prepare {what}")]
    Prepare { what: String },
    #[error("pg_integrity: SPI_keepplan failed")]
    KeepPlan,
    /// A statement of the extension's own returned what it never returns.
    #[error("pg_integrity: {what} returned {result}")]
    UnexpectedResult { what: &'static str, result: String },
    /// REPEATABLE READ or SERIALIZABLE: a maintained total's row changed
    /// since the snapshot (PostgreSQL's own message for an UPDATE).
    #[error("could not serialize access due to concurrent {}", if *.deleted { "delete" } else { "update" })]
    ConcurrentUpdate { deleted: bool },
    /// Integer arithmetic of a direct update overflowed (PostgreSQL's own
    /// message for the statement's arithmetic).
    #[error("{type_name} out of range")]
    IntegerOutOfRange { type_name: &'static str },
    /// The pending deltas of maintained totals that no statement trigger
    /// applied (a source statement fired its row triggers only).
    #[error("pg_integrity: {left} maintained total(s) were not applied before commit")]
    TotalsNotApplied { left: usize },
    #[error("pg_integrity: key type {typid} of {table} has no btree ordering")]
    NoBtreeOrdering { typid: pg_sys::Oid, table: String },
    /// A row of an SPI result that is not there.
    #[error("pg_integrity: the SPI result has no row {row}")]
    NoResultRow { row: u64 },
    #[error("pg_integrity: table \"{table}\" has no attribute {attnum}")]
    NoSuchAttribute { table: String, attnum: i16 },
    #[error("pg_integrity: cache lookup failed for relation {0}")]
    CacheLookup(pg_sys::Oid),
    #[error("pg_integrity: table integrity.lifecycle_events is missing")]
    EventsTableMissing,

    // A guard function used other than the way its registration installs it.
    #[error("pg_integrity guard functions can only be called as triggers")]
    NotCalledAsTrigger,
    #[error("{function} can only run as an event trigger")]
    NotCalledAsEventTrigger { function: &'static str },
    #[error("{function} must be declared to return a record")]
    NotDeclaredAsRecord { function: &'static str },
    #[error("trigger \"{trigger}\" on table \"{table}\" fires for events its guard does not handle")]
    UnhandledEvents { trigger: String, table: String },
    #[error(
        "column \"{column}\" guarded by trigger \"{trigger}\" on table \"{table}\" is of type {actual}, not {expected}"
    )]
    WrongColumnType { column: String, trigger: String, table: String, actual: String, expected: String },
    #[error("column \"{column}\" guarded by trigger \"{trigger}\" does not exist in table \"{table}\"")]
    MissingColumn { column: String, trigger: String, table: String },
    #[error("trigger \"{trigger}\" on table \"{table}\" belongs to no registered {guard}")]
    NotRegistered { trigger: String, table: String, guard: Registration },
    /// `table` is the qualified, quoted name.
    #[error("column \"{column}\" of maintained total does not exist in table {table}")]
    MissingTotalColumn { column: String, table: String },
    #[error("version column \"{column}\" of table \"{table}\" is out of range")]
    VersionOutOfRange { column: String, table: String },

    // What the callers of the SQL functions pass or ask for.
    // `caller` names the SQL function called (for `_stock_target`, the one
    // that called it).
    #[error("{caller}: argument \"{argument}\" must not be NULL")]
    NullArgument { caller: Cow<'static, str>, argument: &'static str },
    #[error("{caller}: relation with OID {relid} does not exist")]
    NoSuchRelation { caller: Cow<'static, str>, relid: pg_sys::Oid },
    #[error("{caller}: {argument} must not contain NULL")]
    NullElement { caller: &'static str, argument: &'static str },
    #[error("{caller}: ids and qtys must have the same number of elements")]
    LengthMismatch { caller: &'static str },
    #[error("{caller}: ids must name at least one row")]
    NoRows { caller: &'static str },
    /// `quantity` is the number as text, or `NULL`.
    #[error("{caller}: quantity must be positive, not {quantity}")]
    QuantityNotPositive { caller: &'static str, quantity: String },
    #[error("{caller}: quantity {quantity} has more decimal places than the stock columns hold ({scale})")]
    QuantityTooPrecise { caller: &'static str, quantity: String, scale: i32 },
    #[error("{caller}: table \"{table}\" has no row with {key} = {id}")]
    NoSuchRow { caller: &'static str, table: String, key: String, id: String },
    /// `table` is the qualified, quoted name.
    #[error("{caller}: table \"{table}\" has no stock guard")]
    NoStockGuard { caller: Cow<'static, str>, table: String },
    #[error("{caller}: table \"{table}\" needs a single-column primary key")]
    NeedsSingleColumnKey { caller: Cow<'static, str>, table: String },
    /// A `maintain_total` filter that is not a boolean, immutable expression
    /// over the source's columns; `problem` says why.
    #[error("maintain_total: invalid filter \"{filter}\"")]
    InvalidFilter { filter: String, problem: String },
    /// Reading the history of a row of `table` without SELECT on it.
    #[error("permission denied for table {table}")]
    ReadDenied { table: String },
    /// Deleting guarded rows of `table` for good, or writing its maintained
    /// totals, without owning it; `action` says which.
    #[error("must be owner of table {table}")]
    NotOwner { table: String, action: &'static str },
}

/// The registrations whose trigger can be found without one.
#[derive(Debug, Clone, Copy)]
pub enum Registration {
    SoftDelete,
    HashChain,
    Lifecycle,
}

impl core::fmt::Display for Registration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Registration::SoftDelete => "soft delete",
            Registration::HashChain => "hash chain",
            Registration::Lifecycle => "lifecycle tracking",
        })
    }
}

impl Error {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Error::Spi { .. }
            | Error::Prepare { .. }
            | Error::KeepPlan
            | Error::UnexpectedResult { .. }
            | Error::NoResultRow { .. }
            | Error::NoSuchAttribute { .. }
            | Error::TotalsNotApplied { .. }
            | Error::NoBtreeOrdering { .. }
            | Error::CacheLookup(_)
            | Error::EventsTableMissing => ERRCODE_INTERNAL_ERROR,
            Error::ConcurrentUpdate { .. } => ERRCODE_T_R_SERIALIZATION_FAILURE,
            Error::NotCalledAsTrigger | Error::UnhandledEvents { .. } => ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            Error::NotCalledAsEventTrigger { .. } => ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
            Error::NotDeclaredAsRecord { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
            Error::WrongColumnType { .. } => ERRCODE_DATATYPE_MISMATCH,
            Error::MissingColumn { .. } | Error::MissingTotalColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            Error::NotRegistered { .. } | Error::NoStockGuard { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Error::VersionOutOfRange { .. } | Error::IntegerOutOfRange { .. } => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            Error::NullArgument { .. } | Error::NullElement { .. } => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Error::NoSuchRelation { .. } => ERRCODE_UNDEFINED_TABLE,
            Error::QuantityNotPositive { .. }
            | Error::QuantityTooPrecise { .. }
            | Error::NoSuchRow { .. }
            | Error::LengthMismatch { .. }
            | Error::NoRows { .. }
            | Error::InvalidFilter { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            Error::NeedsSingleColumnKey { .. } => ERRCODE_INVALID_COLUMN_REFERENCE,
            Error::ReadDenied { .. } | Error::NotOwner { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            Error::NotRegistered { guard: Registration::SoftDelete, .. } => {
                Some("Register it with integrity.enable_soft_delete().".into())
            }
            Error::NotRegistered { guard: Registration::HashChain, .. } => {
                Some("Register the chain with integrity.enable_hash_chain().".into())
            }
            Error::NotRegistered { guard: Registration::Lifecycle, .. } => Some(
                "Register it with integrity.track_lifecycle(), or remove the trigger with \
                 integrity.unprotect(…, 'lifecycle')."
                    .into(),
            ),
            Error::TotalsNotApplied { .. } => {
                Some("A statement on a source table fired its row triggers but not its statement trigger.".into())
            }
            Error::InvalidFilter { problem, .. } => Some(format!("{problem}.")),
            Error::ReadDenied { .. } => Some("The history of a row is shown to roles that may read its table.".into()),
            Error::NotOwner { table, action } => {
                Some(format!("Only the owner of {table} (or a member of its owning role) can {action}."))
            }
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::InvalidFilter { .. } => Some(
                "A filter is a boolean expression over the source table's columns, written like a partial index \
                 predicate."
                    .into(),
            ),
            Error::NoStockGuard { table, .. } => {
                Some(format!("Register it first: SELECT integrity.guard_stock('{}');", table.replace('\'', "''")))
            }
            _ => None,
        }
    }

    /// Raises the error: unwinds to the nearest `#[pg_guard]`, which hands it
    /// to PostgreSQL.  The error's location is the caller's.
    #[track_caller]
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "pg_integrity");
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(pgrx::PgLogLevel::ERROR);
        unreachable!("an ERROR does not return")
    }
}

/// What a guard refuses, as a guard describes it (Rust strings, any context).
pub struct Refusal {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: String,
    pub hint: String,
    /// Attribute number of the column the refusal is about, if any.
    pub column: Option<i16>,
}

/// A refusal ready to be raised: plain data, strings palloc'd in the current
/// memory context (which the error machinery cleans up).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Violation {
    pub(crate) sqlstate: c_int,
    pub(crate) relation: pg_sys::Relation,
    attnum: c_int,
    pub(crate) constraint: *const c_char,
    message: *const c_char,
    pub(crate) detail: *const c_char,
    hint: *const c_char,
}

impl Refusal {
    /// Attaches the relation and the name of the guard's trigger, which is
    /// reported as the constraint, the way a CHECK violation names its constraint.
    ///
    /// # Safety
    /// `relation` and `constraint` must stay valid until the error is raised
    /// (both come from the firing trigger's `TriggerData`).
    pub unsafe fn violation(self, relation: pg_sys::Relation, constraint: *const c_char) -> Violation {
        Violation {
            sqlstate: self.code as c_int,
            relation,
            attnum: self.column.map_or(0, c_int::from),
            constraint,
            message: palloc_str(&self.message),
            detail: palloc_str(&self.detail),
            hint: palloc_str(&self.hint),
        }
    }
}

fn palloc_str(s: &str) -> *const c_char {
    // Interior NULs cannot come from catalog names or output functions; replace
    // them rather than fail while reporting another error.
    let c = CString::new(s.replace('\0', "\\0")).expect("NULs were replaced");
    // SAFETY: pstrdup copies the NUL-terminated string into the current
    // memory context before `c` is dropped.
    unsafe { pg_sys::pstrdup(c.as_ptr()) }
}

unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errdetail(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
    fn errtablecol(rel: pg_sys::Relation, attnum: c_int) -> c_int;
    fn errtableconstraint(rel: pg_sys::Relation, conname: *const c_char) -> c_int;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}

/// Raises `v` as an ERROR.  Never returns.
///
/// # Safety
/// Must be called with no Rust values pending drop in any frame between here
/// and the PostgreSQL caller: the error longjmps over them.
pub unsafe fn raise(v: Violation) -> ! {
    const PERCENT_S: *const c_char = c"%s".as_ptr();
    // SAFETY: `v`'s relation, constraint name and strings are valid until the
    // error is raised (`Refusal::violation`'s contract); each string is
    // passed as the argument of a "%s" format, never as the format; and the
    // caller has nothing left to drop (this function's contract) when
    // errfinish longjmps.
    unsafe {
        // Counted (with the preload) before the error is raised: the count
        // takes and releases its lock here, so no lock is held across the
        // longjmp.
        crate::refusals::count(&v);
        if errstart(pg_sys::PGERROR as c_int, core::ptr::null()) {
            errcode(v.sqlstate);
            errmsg(PERCENT_S, v.message);
            errdetail(PERCENT_S, v.detail);
            errhint(PERCENT_S, v.hint);
            if v.attnum != 0 {
                errtablecol(v.relation, v.attnum);
            }
            errtableconstraint(v.relation, v.constraint);
            errfinish(c"error.rs".as_ptr(), line!() as c_int, c"pg_integrity".as_ptr());
        }
    }
    unreachable!("errfinish returned from an ERROR")
}

/// Runs `f`; an error it raises comes back as its message, unless its
/// SQLSTATE is one of `passed_on`, which (like any other panic) goes on to
/// the caller's handler.  For checks that report what PostgreSQL's parser
/// found wrong in a user's expression as part of their own error.
pub fn message_of_error<T>(
    f: impl FnOnce() -> T + std::panic::UnwindSafe,
    passed_on: &[PgSqlErrorCode],
) -> Result<T, String> {
    pgrx::PgTryBuilder::new(|| Ok(f()))
        .catch_others(|caught| match caught {
            pg_sys::panic::CaughtError::PostgresError(ref report)
            | pg_sys::panic::CaughtError::ErrorReport(ref report)
                if !passed_on.contains(&report.sql_error_code()) =>
            {
                Err(report.message().to_string())
            }
            other => other.rethrow(),
        })
        .execute()
}
