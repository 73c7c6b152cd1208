//! Writes the extension performs itself on rows that its guards keep:
//! `purge_deleted` and `hard_delete` remove soft-deleted rows for real, and
//! `purge_lifecycle_events` removes old events.  While such a statement runs,
//! the guards of the relations it may reach (the table, its partitions and
//! the tables its `ON DELETE CASCADE` foreign keys reach) let deletes through.
//! Likewise maintained totals change only while the extension writes them
//! (`totals.rs`, `recompute_totals`).  Nothing else turns either on: a session
//! cannot set it, and the statements run only for the owner of the table.
//!
//! The statement runs without pgrx's error trap, so that its errors reach the
//! client with every field PostgreSQL gave them (a foreign key's constraint
//! name, say).  So what is switched on is switched off by the (sub)transaction
//! abort that such an error causes, not by a Rust destructor: a caller that
//! catches the error continues with the guards in force.

use core::ffi::c_void;
use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::error::Error;

use crate::fmgr::{execute, guarded_function, select_oids, spi_connect, spi_finish, Verdict};
use crate::trigger::{qualified_name, relation_owner};

/// What a running sanctioned statement may do.
enum Sanction {
    /// Delete rows of these relations.
    Deletes(Vec<pg_sys::Oid>),
    /// Write maintained totals.
    TotalWrites,
}

thread_local! {
    /// The sanctioned statements running, innermost last, with the
    /// subtransaction each started in.
    static SANCTIONED: RefCell<Vec<(pg_sys::SubTransactionId, Sanction)>> = const { RefCell::new(Vec::new()) };
    static CALLBACKS_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Whether a delete of a row of `relid` is one the extension performs itself.
pub fn allows(relid: pg_sys::Oid) -> bool {
    SANCTIONED.with_borrow(|running| {
        running
            .iter()
            .any(|(_, sanction)| matches!(sanction, Sanction::Deletes(relations) if relations.contains(&relid)))
    })
}

/// Whether a sanctioned delete is running (in this backend).
pub fn deletes_running() -> bool {
    SANCTIONED.with_borrow(|running| running.iter().any(|(_, sanction)| matches!(sanction, Sanction::Deletes(_))))
}

/// Whether the extension is writing maintained totals.
pub fn allows_total_writes() -> bool {
    SANCTIONED.with_borrow(|running| running.iter().any(|(_, sanction)| matches!(sanction, Sanction::TotalWrites)))
}

/// Until `end`: the statements run now write maintained totals.
pub fn begin_total_writes() {
    begin(Sanction::TotalWrites);
}

pub fn end_total_writes() {
    SANCTIONED.with_borrow_mut(|running| running.pop());
}

fn begin(sanction: Sanction) {
    if !CALLBACKS_REGISTERED.replace(true) {
        // SAFETY: the callbacks only shrink a thread-local list; registered
        // once, they stay for the backend's life.
        unsafe {
            pg_sys::RegisterSubXactCallback(Some(subxact_event), core::ptr::null_mut());
            pg_sys::RegisterXactCallback(Some(xact_event), core::ptr::null_mut());
        }
    }
    // SAFETY: plain function call.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    SANCTIONED.with_borrow_mut(|running| running.push((subxact, sanction)));
}

/// A failed statement aborts the subtransaction it started in (or the whole
/// transaction): what it switched on ends with it.
unsafe extern "C-unwind" fn subxact_event(
    event: pg_sys::SubXactEvent::Type,
    subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        SANCTIONED.with_borrow_mut(|running| running.retain(|(started_in, _)| *started_in < subid));
    }
}

unsafe extern "C-unwind" fn xact_event(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT {
        SANCTIONED.with_borrow_mut(Vec::clear);
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

guarded_function!(
    /// `integrity._execute_total_writes(tbl regclass, statement text) RETURNS
    /// bigint`: runs `statement` with the maintained totals of `tbl` writable;
    /// the rows the statement processed.
    integrity_execute_total_writes,
    pg_finfo_integrity_execute_total_writes,
    execute_total_writes
);

/// # Safety
/// `fcinfo` is the running call's (see `guarded_function!`), whose callers'
/// frames hold nothing that needs dropping: the statement raises its errors
/// as they are (see `execute`).
unsafe fn execute_sanctioned(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the running call's fcinfo (the contract), of a function
    // declared STRICT (regclass, text).
    let relid = unsafe { pg_sys::Oid::from((*fcinfo).args.as_slice(2)[0].value.value() as u32) };
    require_owner(relid, "delete its rows for good");
    spi_connect();
    // SAFETY: connected just above.
    let relations = unsafe { sanctioned_relations(relid) };
    // SAFETY: as for this function (its contract), connected to SPI.
    unsafe { execute_as(fcinfo, Sanction::Deletes(relations)) }
}

/// # Safety
/// As for `execute_sanctioned`.
unsafe fn execute_total_writes(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the running call's fcinfo (the contract), of a function
    // declared STRICT (regclass, text).
    let relid = unsafe { pg_sys::Oid::from((*fcinfo).args.as_slice(2)[0].value.value() as u32) };
    require_owner(relid, "correct its maintained totals");
    spi_connect();
    // SAFETY: as for this function (its contract), connected to SPI.
    unsafe { execute_as(fcinfo, Sanction::TotalWrites) }
}

/// Runs the statement of a `(regclass, text)` call under `sanction`, inside
/// the caller's `SPI_connect`, and finishes SPI.
///
/// # Safety
/// `fcinfo` is the running call of a STRICT `(regclass, text)` function,
/// whose callers' frames hold nothing that needs dropping (see `execute`).
unsafe fn execute_as(fcinfo: pg_sys::FunctionCallInfo, sanction: Sanction) -> Verdict {
    // SAFETY: the text is not NULL (STRICT); the copy is palloc'd, and nothing
    // on this frame needs dropping when the statement fails (the list entry is
    // removed by the abort).
    let processed = unsafe {
        let statement = pg_sys::text_to_cstring((*fcinfo).args.as_slice(2)[1].value.cast_mut_ptr());
        begin(sanction);
        let processed = execute(statement);
        SANCTIONED.with_borrow_mut(|running| running.pop());
        processed
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
    select_oids(
        c"SELECT rel::oid FROM integrity._cascade_reach($1) AS rel",
        &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(relid))],
        "looking up cascades",
    )
}

/// Only the table's owner (or a member of the owning role) may delete its
/// guarded rows for real or write its totals, as only the owner may lift the
/// guard.
fn require_owner(relid: pg_sys::Oid, action: &'static str) {
    let owner = relation_owner(relid);
    // SAFETY: reads the backend's current user, and looks up role
    // memberships in the catalogs.
    if !unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) } {
        Error::NotOwner { table: qualified_name(relid), action }.raise();
    }
}
