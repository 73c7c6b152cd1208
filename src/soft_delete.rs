//! `integrity.enable_soft_delete`: a DELETE keeps the row and marks it
//! deleted.
//!
//! `BEFORE DELETE … FOR EACH ROW`, so every path that deletes a row (a view,
//! a writable CTE, MERGE, a foreign key's cascade) comes through it.  For a
//! row that is not yet deleted it runs one statement, built by
//! `integrity._soft_delete_statement()`, as the table's owner (a role that
//! may DELETE need not be allowed to UPDATE): it sets the deleted column to
//! `now()` (and the flag column to true), and deletes the rows of soft-delete
//! child tables that reference the row with `ON DELETE CASCADE`, which their
//! own trigger turns into soft deletes at the same `now()`; `restore()` finds
//! them by that time.  Then the trigger returns NULL: the row stays.
//!
//! Two deletes go through: those the extension sanctions (`purge_deleted`,
//! `hard_delete`, see `sanctioned.rs`), and a cascade from a parent row that
//! was deleted for good (keeping the child would leave it without its
//! parent); the statement reports the latter.  A sanctioned statement does
//! not even fire the trigger: PostgreSQL locks every row before it calls a
//! BEFORE DELETE row trigger, which would double the cost of a purge, so at
//! executor start-up `skip_sanctioned` takes the trigger out of the
//! statement's copy of the relation's triggers.

use core::ffi::{c_char, c_int};
use std::cell::RefCell;

use pgrx::pg_sys;

use crate::backend_map::Map;

use crate::error::{Error, Registration};

use crate::fmgr::{
    execute_plan, free_plan, has_result, pin_search_path, pinned_if, prepare_kept, result_text, result_value, select,
    spi_connect, spi_finish,
};
use crate::invalidation;
use crate::sanctioned;
use crate::trigger::{address_of, function_address, leave_out_of_statement, trigger_entry, Firing, Verdict};

trigger_entry!(
    /// `BEFORE DELETE FOR EACH ROW`, arguments `(deleted_column [, flag_column])`.
    integrity_soft_delete_guard,
    pg_finfo_integrity_soft_delete_guard,
    soft_delete_row
);

/// Called at executor start-up (`executor_hooks`): while the extension's own
/// deletes run, takes this guard's trigger out of the statement's copy of
/// each result relation's triggers; the trigger would let them through.
///
/// # Safety
/// `query_desc` is a statement that started and whose triggers have not
/// fired yet.
pub unsafe fn skip_sanctioned(query_desc: *mut pg_sys::QueryDesc) {
    if !sanctioned::deletes_running() {
        return;
    }
    const BEFORE_DELETE_ROW: u32 = pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_BEFORE | pg_sys::TRIGGER_TYPE_DELETE;
    const TIMING: u32 = BEFORE_DELETE_ROW | pg_sys::TRIGGER_TYPE_INSTEAD;
    let guard = address_of(integrity_soft_delete_guard);
    // SAFETY: the statement's open result relations (the contract), each
    // with the statement's own copy of its triggers.
    unsafe {
        let opened = (*(*query_desc).estate).es_opened_result_relations;
        for i in 0..pg_sys::list_length(opened) {
            let relation: *mut pg_sys::ResultRelInfo = pg_sys::list_nth(opened, i).cast();
            let triggers = (*relation).ri_TrigDesc;
            if triggers.is_null()
                || !(*triggers).trig_delete_before_row
                || !sanctioned::allows((*(*relation).ri_RelationDesc).rd_id)
            {
                continue;
            }
            leave_out_of_statement(relation, |trigger| {
                trigger.tgtype as u32 & TIMING == BEFORE_DELETE_ROW && function_address(trigger.tgfoid) == guard
            });
        }
    }
}

/// Resolved once per statement (per partition) and kept in `fn_extra`.
#[repr(C)]
struct SoftDeletePlan {
    statement: pg_sys::SPIPlanPtr,
    /// Whether the statement runs with `search_path` pinned (`pin_search_path`).
    pins_search_path: bool,
    owner: pg_sys::Oid,
    deleted_att: i16,
}

thread_local! {
    /// The statement of each relation, with the invalidation generation it was
    /// built at, and its plan, prepared once per backend.
    static STATEMENTS: RefCell<Map<pg_sys::Oid, (u64, String, pg_sys::SPIPlanPtr)>> =
        RefCell::new(Map::default());
}

/// # Safety
/// The callers' frames hold nothing that needs dropping: the statement
/// raises its errors as they are (see `execute_plan`).
unsafe fn soft_delete_row(firing: &Firing) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_DELETE || !firing.is_row() || !firing.is_before() {
        firing.misuse();
    }
    let row = firing.trigtuple();
    let keep_row = Verdict::Allow(pg_sys::Datum::from(0));
    let delete_row = Verdict::Allow(row.datum());
    // SAFETY: the trigger's relation is open for the whole firing.
    if sanctioned::allows(unsafe { (*firing.relation()).rd_id }) {
        return delete_row;
    }
    let plan = soft_delete_plan(firing);
    if !firing.value(row, plan.deleted_att).1 {
        // Already deleted: the DELETE changes nothing.
        return keep_row;
    }
    // The statement runs as the table's owner, so it must not resolve an
    // operator the caller created (it would run with the owner's rights):
    // the cascading statement, which compares keys with the operators of
    // their types, runs with search_path = pg_catalog; the plain UPDATE
    // names pg_catalog's function and operator itself.
    // SAFETY: restored below, or by the abort of an error in between.
    let nest_level = plan.pins_search_path.then(|| unsafe { pin_search_path() });
    // SAFETY: the row's TID is passed by reference and outlives the call; the
    // user is restored before returning, and by the abort if the statement
    // fails (nothing on these frames needs dropping).
    let orphaned = unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context: c_int = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            plan.owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int | pg_sys::SECURITY_NOFORCE_RLS as c_int,
        );
        spi_connect();
        let mut values = [pg_sys::Datum::from(&raw mut (*row.as_ptr()).t_self)];
        let orphaned = execute_plan(plan.statement, &mut values, &[b' ' as c_char], false) == 1
            && has_result()
            && result_value(0, 1).is_some_and(|orphaned| orphaned.value() != 0);
        spi_finish();
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        if let Some(nest_level) = nest_level {
            pg_sys::AtEOXact_GUC(true, nest_level);
        }
        orphaned
    };
    if orphaned {
        delete_row
    } else {
        keep_row
    }
}

/// The soft delete's plan for this statement (and partition).
fn soft_delete_plan<'f>(firing: &'f Firing) -> &'f SoftDeletePlan {
    firing.statement_plan(|| {
        let Some(deleted_column) = firing.args().next() else { firing.misuse() };
        let deleted_att = firing.attnum(deleted_column).unwrap_or_else(|| firing.missing_column(deleted_column));
        // SAFETY: the firing relation is open for the whole call, with its
        // pg_class row.
        let (relid, owner) = unsafe { ((*firing.relation()).rd_id, (*(*firing.relation()).rd_rel).relowner) };
        let (statement, plain) = statement(firing, relid);
        SoftDeletePlan { statement, pins_search_path: !plain, owner, deleted_att }
    })
}

/// The relation's prepared statement, and whether it is the plain UPDATE
/// of `_soft_delete_statement` (for a table without cascading foreign keys).
/// Its SQL is read again after any relcache invalidation (a foreign key or a
/// soft-delete child added), and prepared again when it changed.
fn statement(firing: &Firing, relid: pg_sys::Oid) -> (pg_sys::SPIPlanPtr, bool) {
    let generation = invalidation::generation();
    let plain = |sql: &str| sql.starts_with("UPDATE ");
    let cached = STATEMENTS.with_borrow(|all| {
        all.get(&relid).filter(|(g, _, _)| *g == generation).map(|(_, sql, plan)| (*plan, plain(sql)))
    });
    if let Some(cached) = cached {
        return cached;
    }
    let sql = read_statement(relid).unwrap_or_else(|| firing.not_registered(Registration::SoftDelete));
    let plain = plain(&sql);
    let plan = STATEMENTS.with_borrow(|all| all.get(&relid).filter(|(_, s, _)| *s == sql).map(|e| e.2));
    let plan = plan.unwrap_or_else(|| {
        // SAFETY: preparing opens no GUC level.
        unsafe { pinned_if(true, || prepare_kept(&sql, &mut [pg_sys::TIDOID], || format!("statement: {sql}"))) }
    });
    STATEMENTS.with_borrow_mut(|all| {
        if let Some((_, _, stale)) = all.insert(relid, (generation, sql, plan)) {
            if stale != plan {
                free_plan(stale);
            }
        }
    });
    (plan, plain)
}

fn read_statement(relid: pg_sys::Oid) -> Option<String> {
    spi_connect();
    let query = c"SELECT integrity._soft_delete_statement($1)";
    let rows = select(query, &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(relid))], 1, "looking up the soft delete");
    if rows != 1 {
        Error::UnexpectedResult { what: "looking up the soft delete", result: format!("{rows} rows") }.raise();
    }
    let sql = result_text(0, 1);
    spi_finish();
    sql
}
