//! Writes the extension performs itself on rows that its guards keep:
//! `purge_deleted` and `hard_delete` remove soft-deleted rows for real, and
//! `purge_lifecycle_events` removes old events.  While such a statement runs,
//! the guards of the relations it may reach (the table, its partitions and
//! the tables its `ON DELETE CASCADE` foreign keys reach) let deletes through.
//! Likewise a maintained total changes only as the extension writes it, and
//! only to what it writes: one target row (by its key) by the amount the
//! statement trigger applies (`totals.rs`; the guard and its recheck each let
//! that through once), or, while `recompute_totals` runs, to the row's actual
//! total.  Nothing else turns either on: a session cannot set it, and the
//! statements run only for the owner of the table.
//!
//! The statement runs without pgrx's error trap, so that its errors reach the
//! client with every field PostgreSQL gave them (a foreign key's constraint
//! name, say).  So what is switched on is switched off by the (sub)transaction
//! abort that such an error causes, not by a Rust destructor: a caller that
//! catches the error continues with the guards in force.

use core::ffi::c_void;
use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::direct_update::MAX_KEYS;
use crate::error::Error;

use crate::fmgr::{execute, guarded_function, select_oids, spi_connect, spi_finish, Verdict};
use crate::trigger::{qualified_name, relation_owner};

/// What a running sanctioned statement may do.
enum Sanction {
    /// Delete rows of these relations.
    Deletes(Vec<pg_sys::Oid>),
    /// Add an amount to one maintained total of one row.
    TotalWrite(TotalWrite),
    /// Set the maintained totals of this relation's rows to their actual totals.
    TotalRecompute(pg_sys::Oid),
}

/// One write of a maintained total by the statement trigger: the target row,
/// by the values of its key columns (compared with their types' btree
/// comparison functions, which live in the type cache), and the numeric amount
/// added to the column.  Plain data: the datums live at least as long as the
/// write.
#[derive(Clone, Copy)]
pub struct TotalWrite {
    pub target: pg_sys::Oid,
    pub column: i16,
    pub nkeys: usize,
    pub key_atts: [i16; MAX_KEYS],
    pub key: [pg_sys::Datum; MAX_KEYS],
    pub cmp: [*mut pg_sys::FmgrInfo; MAX_KEYS],
    pub collation: [pg_sys::Oid; MAX_KEYS],
    pub amount: pg_sys::Datum,
    /// Whether the guard (0) and its recheck (1) let it through already.
    pub passed: [bool; 2],
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

/// Whether `recompute_totals` is correcting the totals of `relid`.
pub fn recomputes(relid: pg_sys::Oid) -> bool {
    SANCTIONED.with_borrow(|running| {
        running.iter().any(|(_, sanction)| matches!(sanction, Sanction::TotalRecompute(r) if *r == relid))
    })
}

/// Until `end_total_write`: the statement run now adds `write.amount` to one
/// total of one row.
pub fn begin_total_write(write: TotalWrite) {
    begin(Sanction::TotalWrite(write));
}

pub fn end_total_write() {
    SANCTIONED.with_borrow_mut(|running| running.pop());
}

/// Whether a running write of total `column` of `relid` that check `pass`
/// (0 the guard, 1 its recheck) has not let through yet is the change
/// `matches` sees; it is then let through, once.  `matches` may raise: it runs
/// on a copy, outside the list's borrow.
pub fn take_total_write(relid: pg_sys::Oid, column: i16, pass: usize, matches: impl Fn(&TotalWrite) -> bool) -> bool {
    let candidates: Vec<(usize, TotalWrite)> = SANCTIONED.with_borrow(|running| {
        running
            .iter()
            .enumerate()
            .filter_map(|(i, (_, sanction))| match sanction {
                Sanction::TotalWrite(w) if w.target == relid && w.column == column && !w.passed[pass] => Some((i, *w)),
                _ => None,
            })
            .collect()
    });
    let Some(&(i, _)) = candidates.iter().find(|(_, write)| matches(write)) else {
        return false;
    };
    SANCTIONED.with_borrow_mut(|running| {
        if let Some((_, Sanction::TotalWrite(w))) = running.get_mut(i) {
            w.passed[pass] = true;
        }
    });
    true
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
    /// bigint`: runs `statement` with the maintained totals of `tbl` writable
    /// to their actual totals; the rows the statement processed.
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
    unsafe { execute_as(fcinfo, Sanction::TotalRecompute(relid)) }
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
