//! Deletes the extension performs itself on rows that its guards keep:
//! `purge_deleted` and `hard_delete` remove soft-deleted rows for real, and
//! `purge_lifecycle_events` removes old events.  While such a statement runs,
//! the guards of the relations it may reach (the table, its partitions and
//! the tables its `ON DELETE CASCADE` foreign keys reach) let deletes through.
//! Nothing else turns that on: a session cannot set it, and the statement
//! runs only for the owner of the table.

use core::ffi::c_int;
use std::cell::RefCell;
use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::{FromDatum, PgSqlErrorCode};

use crate::fmgr::{guarded_function, spi_connect, spi_finish, spi_result, Verdict};
use crate::trigger::qualified_name;

thread_local! {
    /// The relations whose guards currently let deletes through.
    static SANCTIONED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

/// Whether a delete of a row of `relid` is one the extension performs itself.
pub fn allows(relid: pg_sys::Oid) -> bool {
    SANCTIONED.with_borrow(|relations| relations.contains(&relid))
}

/// Puts the previous set back when the statement ends, also when it fails:
/// an error inside SPI reaches this frame as a Rust panic (pgrx's guard on
/// `SPI_execute`) and unwinds through it.
struct Restore(Vec<pg_sys::Oid>);

impl Drop for Restore {
    fn drop(&mut self) {
        SANCTIONED.set(core::mem::take(&mut self.0));
    }
}

guarded_function!(
    /// `integrity._execute_sanctioned(tbl regclass, statement text) RETURNS bigint`:
    /// runs `statement` with deletes allowed on `tbl`, its partitions and its
    /// cascade children; the rows the statement processed.
    integrity_execute_sanctioned,
    pg_finfo_integrity_execute_sanctioned,
    execute_sanctioned
);

unsafe fn execute_sanctioned(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    let args = unsafe { (*fcinfo).args.as_slice(2) };
    let relid = pg_sys::Oid::from(args[0].value.value() as u32);
    let statement = unsafe { String::from_datum(args[1].value, args[1].isnull) }
        .unwrap_or_else(|| pgrx::error!("pg_integrity: no statement to execute"));
    unsafe { require_owner(relid) };

    spi_connect();
    let relations = unsafe { sanctioned_relations(relid) };
    let processed = {
        let _restore = Restore(SANCTIONED.with_borrow_mut(|current| {
            let previous = current.clone();
            current.extend_from_slice(&relations);
            previous
        }));
        let text = CString::new(statement).expect("text has no NUL");
        // SAFETY: the statement is text the extension's own SQL functions
        // built; it runs with the caller's privileges.
        let rc = unsafe { pg_sys::SPI_execute(text.as_ptr(), false, 0) };
        if rc < 0 {
            pgrx::error!("pg_integrity: executing a sanctioned delete failed: {}", spi_result(rc));
        }
        // SAFETY: set by the SPI_execute that just returned.
        unsafe { pg_sys::SPI_processed }
    };
    spi_finish();
    Verdict::Allow(pg_sys::Datum::from(processed as i64))
}

/// The relations a delete of `relid`'s rows may reach, from
/// `integrity._cascade_reach()`.
///
/// # Safety
/// Inside `SPI_connect`.
unsafe fn sanctioned_relations(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    let query = c"SELECT rel::oid FROM integrity._cascade_reach($1) AS rel";
    let mut types = [pg_sys::REGCLASSOID];
    let mut values = [pg_sys::Datum::from(relid)];
    unsafe {
        let rc = pg_sys::SPI_execute_with_args(
            query.as_ptr(),
            1,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            c" ".as_ptr(),
            true,
            0,
        );
        if rc != pg_sys::SPI_OK_SELECT as c_int {
            pgrx::error!("pg_integrity: looking up cascades failed: {}", spi_result(rc));
        }
        let table = pg_sys::SPI_tuptable;
        (0..pg_sys::SPI_processed as usize)
            .map(|i| {
                let mut is_null = false;
                let oid = pg_sys::SPI_getbinval(*(*table).vals.add(i), (*table).tupdesc, 1, &mut is_null);
                pg_sys::Oid::from(oid.value() as u32)
            })
            .collect()
    }
}

/// Only the table's owner (or a member of the owning role) may delete its
/// guarded rows for real, as only the owner may lift the guard.
unsafe fn require_owner(relid: pg_sys::Oid) {
    // SAFETY: a syscache lookup, released before anything can fail.
    let owner = unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as c_int, pg_sys::Datum::from(relid));
        if tuple.is_null() {
            pgrx::ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {relid} does not exist")
            );
        }
        let owner = (*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_class)).relowner;
        pg_sys::ReleaseSysCache(tuple);
        owner
    };
    // SAFETY: plain catalog lookups.
    if !unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) } {
        pgrx::ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {}", qualified_name(relid)),
            format!(
                "Only the owner of {} (or a member of its owning role) can delete its rows for good.",
                qualified_name(relid)
            )
        );
    }
}
