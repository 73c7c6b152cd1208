//! The one place that turns a guard violation into a PostgreSQL error.
//!
//! pgrx's `ErrorReport` carries SQLSTATE, message, DETAIL and HINT, but not the
//! schema/table/column/constraint fields that drivers expose and that PostgreSQL
//! fills for a CHECK violation.  So a refusal is raised here with the backend's own
//! `ereport` entry points.  `raise` longjmps, so it is only ever called from the
//! outermost frame of a C entry point (see `fmgr::guarded_function!`), with
//! nothing left on the Rust side that needs dropping: a `Violation` is plain data
//! whose strings live in a PostgreSQL memory context.

use core::ffi::{c_char, c_int};
use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

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
