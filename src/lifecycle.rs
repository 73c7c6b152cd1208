//! `integrity.track_lifecycle`: every INSERT, UPDATE and DELETE of a row
//! writes an event to `integrity.lifecycle_events`.
//!
//! The triggers are `AFTER … FOR EACH STATEMENT` with transition tables, one
//! per event (PostgreSQL allows transition tables on single-event triggers
//! only).  Per statement the trigger runs one `INSERT … SELECT` over the
//! transition tables, built by `integrity._lifecycle_statement()` and
//! prepared once per backend, as the owner of the events table: nobody else
//! may write (or read) it.  A statement that changes no row writes nothing
//! and runs no SQL.
//!
//! Rows applied by logical replication are recorded on their origin only:
//! the triggers fire in origin mode.
//!
//! The events table itself is append-only: `lifecycle_events_guard` refuses
//! every UPDATE, DELETE and TRUNCATE of it, except the deletes that
//! `integrity.purge_lifecycle_events()` runs through `_execute_sanctioned`.

use core::ffi::{c_char, c_int};
use std::cell::RefCell;
use std::ffi::CString;

use pgrx::pg_sys;

use crate::backend_map::Map;
use pgrx::PgSqlErrorCode;

use crate::error::{Error, Refusal, Registration};
use crate::fmgr::{
    execute_plan, guarded_function, keep_plan, pin_search_path, result_text, result_value, select, spi_connect,
    spi_finish, KeptPlans, Verdict,
};
use crate::invalidation;
use crate::sanctioned;
use crate::trigger::relation_owner;
use crate::trigger::{qualified_name, trigger_entry, Firing};

trigger_entry!(
    /// `AFTER INSERT|UPDATE|DELETE FOR EACH STATEMENT REFERENCING …`, no arguments.
    integrity_lifecycle_guard,
    pg_finfo_integrity_lifecycle_guard,
    record_events
);

trigger_entry!(
    /// `BEFORE UPDATE OR DELETE FOR EACH ROW` and `BEFORE TRUNCATE` on
    /// `integrity.lifecycle_events`.
    integrity_lifecycle_events_guard,
    pg_finfo_integrity_lifecycle_events_guard,
    refuse_event_change
);

guarded_function!(
    /// `integrity._lifecycle_events_of(tbl regclass, row_key jsonb) RETURNS
    /// integrity.lifecycle_events[]`: the events of one row, in order, for a
    /// caller with SELECT privilege on the table.
    integrity_lifecycle_events_of,
    pg_finfo_integrity_lifecycle_events_of,
    events_of
);

/// A statement and the role it runs as (the events table's owner).
type Statement = (String, pg_sys::Oid);

thread_local! {
    /// Prepared statements by trigger OID, with the SQL they were prepared
    /// from.
    static PLANS: KeptPlans<pg_sys::Oid, String> = KeptPlans::default();
    /// The statement of each table and operation, with the invalidation
    /// generation it was built at: building it is a catalog query.
    static STATEMENTS: RefCell<Map<(pg_sys::Oid, u32), (u64, Statement)>> = RefCell::new(Map::default());
}

/// # Safety
/// The callers' frames hold nothing that needs dropping: the statement
/// raises its errors as they are (see `execute_plan`).
unsafe fn record_events(firing: &Firing) -> Verdict {
    let data = firing.data;
    let (operation, rows) = match firing.event() {
        pg_sys::TRIGGER_EVENT_INSERT => ("INSERT", data.tg_newtable),
        pg_sys::TRIGGER_EVENT_UPDATE if !data.tg_newtable.is_null() => ("UPDATE", data.tg_oldtable),
        pg_sys::TRIGGER_EVENT_DELETE => ("DELETE", data.tg_oldtable),
        _ => firing.misuse(),
    };
    if firing.is_row() || firing.is_before() || rows.is_null() {
        firing.misuse();
    }
    // SAFETY: the transition table PostgreSQL passed for this firing.
    if unsafe { pg_sys::tuplestore_tuple_count(rows) } == 0 {
        return Verdict::Allow(pg_sys::Datum::from(0));
    }

    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context: c_int = 0;
    // SAFETY: reads the backend's current user and security context.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context) };
    spi_connect();
    // SAFETY: the TriggerData of this firing, which SPI only reads (the
    // mutable pointer is the C signature's); SPI finds the transition tables
    // by the names the trigger gives them (old_rows, new_rows).
    let rc = unsafe { pg_sys::SPI_register_trigger_data((data as *const pg_sys::TriggerData).cast_mut()) };
    if rc != pg_sys::SPI_OK_TD_REGISTER as c_int {
        Error::Spi { what: "SPI_register_trigger_data".into(), rc }.raise();
    }
    // The statement is parsed and run with only pg_catalog on the search
    // path: the operators of IS DISTINCT FROM are looked up by name, and a
    // role's own "=" must not run as the events table's owner.
    // SAFETY: restored below; an error restores it with the transaction.
    let nest_level = unsafe { pin_search_path() };
    // Nothing that needs dropping is held past this block: the statement
    // below may raise, which longjmps over this frame.
    let (plan, owner) = {
        // SAFETY: the trigger's relation is open for the whole firing.
        let relid = unsafe { (*firing.relation()).rd_id };
        // SPI is connected, as statement() requires.
        let (sql, owner) = statement(relid, firing.event(), operation)
            .unwrap_or_else(|| firing.not_registered(Registration::Lifecycle));
        (prepared(firing.trigger().tgoid, &sql), owner)
    };
    // SAFETY: the events are written as the events table's owner, as
    // PostgreSQL runs foreign-key checks as the referenced table's owner; an
    // error restores the user and the settings when the (sub)transaction
    // aborts.  The plan takes one oid (the user who wrote the rows); the
    // arrays are plain data and the callers hold nothing that needs dropping
    // (this function's contract) if the statement raises.
    unsafe {
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int | pg_sys::SECURITY_NOFORCE_RLS as c_int,
        );
        let mut values = [pg_sys::Datum::from(saved_user)];
        execute_plan(plan, &mut values, &[b' ' as c_char], false);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        pg_sys::AtEOXact_GUC(true, nest_level);
    }
    spi_finish();
    Verdict::Allow(pg_sys::Datum::from(0))
}

/// The statement for `relid` and `operation` (cached), `None` when no
/// lifecycle tracking covers the table.
fn statement(relid: pg_sys::Oid, event: u32, operation: &str) -> Option<Statement> {
    let generation = invalidation::generation();
    let key = (relid, event);
    let cached = STATEMENTS.with_borrow(|all| all.get(&key).filter(|(g, _)| *g == generation).map(|(_, s)| s.clone()));
    if cached.is_some() {
        return cached;
    }
    let read = read_statement(relid, operation);
    if let Some(statement) = &read {
        STATEMENTS.with_borrow_mut(|all| all.insert(key, (generation, statement.clone())));
    }
    read
}

/// Inside `SPI_connect` (else the query fails, and raises).
fn read_statement(relid: pg_sys::Oid, operation: &str) -> Option<Statement> {
    let query = CString::new(format!(
        "SELECT integrity._lifecycle_statement($1, '{operation}'), c.relowner FROM pg_catalog.pg_class c \
         WHERE c.oid = 'integrity.lifecycle_events'::pg_catalog.regclass"
    ))
    .expect("no NUL");
    let rows =
        select(&query, &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(relid))], 1, "looking up the lifecycle statement");
    if rows != 1 {
        Error::EventsTableMissing.raise();
    }
    let owner = result_value(0, 2).map_or(pg_sys::InvalidOid, |owner| pg_sys::Oid::from(owner.value() as u32));
    result_text(0, 1).map(|sql| (sql, owner))
}

/// The kept plan of `sql` for trigger `tgoid`.  Inside `SPI_connect`, with
/// the firing's transition tables registered (the statement reads them).
fn prepared(tgoid: pg_sys::Oid, sql: &str) -> pg_sys::SPIPlanPtr {
    PLANS.with(|plans| {
        plans.get(tgoid, sql.to_string(), || keep_plan(sql, &mut [pg_sys::OIDOID], || format!("statement: {sql}")))
    })
}

fn refuse_event_change(firing: &Firing) -> Verdict {
    if !firing.is_before() {
        firing.misuse();
    }
    // SAFETY: the trigger's relation is open for the whole firing.
    let relid = unsafe { (*firing.relation()).rd_id };
    let (verb, what) = match firing.event() {
        pg_sys::TRIGGER_EVENT_UPDATE if firing.is_row() => ("update", firing.row_key(firing.trigtuple())),
        pg_sys::TRIGGER_EVENT_DELETE if firing.is_row() => {
            if sanctioned::allows(relid) {
                return Verdict::Allow(firing.trigtuple().datum());
            }
            ("delete", firing.row_key(firing.trigtuple()))
        }
        pg_sys::TRIGGER_EVENT_TRUNCATE if !firing.is_row() => ("truncate", "Every event".to_string()),
        _ => firing.misuse(),
    };
    firing.refuse(Refusal {
        code: PgSqlErrorCode::ERRCODE_RESTRICT_VIOLATION,
        message: format!("cannot {verb} lifecycle events"),
        detail: format!(
            "{what} in table {} cannot be {verb}d: lifecycle events are append-only.",
            firing.qualified_table_name()
        ),
        hint: "Old events are removed with integrity.purge_lifecycle_events(older_than), by the table's owner.".into(),
        column: None,
    })
}

/// # Safety
/// `fcinfo` is the running call's (see `guarded_function!`).
unsafe fn events_of(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the function is STRICT with two arguments.
    let args = unsafe { (*fcinfo).args.as_slice(2) };
    let relid = pg_sys::Oid::from(args[0].value.value() as u32);
    let row_key = args[1].value;
    // SAFETY: reads the backend's current user.
    let caller = unsafe { pg_sys::GetUserId() };
    // SAFETY: a catalog lookup; it raises 42P01 for a table that is gone.
    if unsafe { pg_sys::pg_class_aclcheck(relid, caller, pg_sys::ACL_SELECT as pg_sys::AclMode) }
        != pg_sys::AclResult::ACLCHECK_OK
    {
        Error::ReadDenied { table: qualified_name(relid) }.raise();
    }
    let name = CString::new(qualified_name(relid)).expect("no NUL");
    // SAFETY: the events are read as their table's owner (nobody else may
    // read them) once the caller's privilege on the row's table is checked;
    // the array is copied out of SPI's memory before SPI_finish.
    let events = unsafe {
        let events_table = pg_sys::get_relname_relid(
            c"lifecycle_events".as_ptr(),
            pg_sys::get_namespace_oid(c"integrity".as_ptr(), false),
        );
        if events_table == pg_sys::InvalidOid {
            Error::EventsTableMissing.raise();
        }
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context: c_int = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        spi_connect();
        pg_sys::SetUserIdAndSecContext(
            relation_owner(events_table),
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int | pg_sys::SECURITY_NOFORCE_RLS as c_int,
        );
        let query = c"SELECT pg_catalog.array_agg(e ORDER BY e.id) FROM integrity.lifecycle_events e \
                      WHERE e.table_name OPERATOR(pg_catalog.=) $1 AND e.row_key OPERATOR(pg_catalog.=) $2";
        let name = pg_sys::Datum::from(pg_sys::cstring_to_text(name.as_ptr()));
        let rows =
            select(query, &[(pg_sys::TEXTOID, name), (pg_sys::JSONBOID, row_key)], 1, "reading lifecycle events");
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        if rows != 1 {
            Error::UnexpectedResult { what: "reading lifecycle events", result: format!("{rows} rows") }.raise();
        }
        let events = result_value(0, 1).map(|events| pg_sys::SPI_datumTransfer(events, false, -1));
        spi_finish();
        events
    };
    match events {
        Some(array) => Verdict::Allow(array),
        None => {
            // SAFETY: the function's result is NULL.
            unsafe { (*fcinfo).isnull = true };
            Verdict::Allow(pg_sys::Datum::from(0))
        }
    }
}
