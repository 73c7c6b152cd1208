//! The fmgr glue for functions declared by hand in `sql/` (`LANGUAGE c`):
//! PostgreSQL looks for `pg_finfo_<symbol>` to learn the calling convention,
//! and a function that refuses must raise its error from its outermost frame.

use std::cell::RefCell;
use std::hash::Hash;

use pgrx::pg_sys;

use crate::backend_map::Map;

use crate::error::{Error, Violation};

/// What a guarded function decided.
#[repr(C)]
pub enum Verdict {
    /// Go on; the datum is the function's result.
    Allow(pg_sys::Datum),
    Refuse(Violation),
}

/// Emits the V1 function-info record `$finfo` for a C-callable function.
macro_rules! function_info_v1 {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1_API: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }
    };
}
pub(crate) use function_info_v1;

/// Declares a C-callable function: a V1 info record, and an entry point that
/// runs `$body(fcinfo) -> Verdict` under pgrx's panic guard and raises its
/// refusal only after every Rust frame of the body has returned.  `$body` is
/// an `unsafe fn(FunctionCallInfo) -> Verdict` (or a closure without
/// captures) whose contract is that `fcinfo` is the running call's.
macro_rules! guarded_function {
    ($(#[$doc:meta])* $symbol:ident, $finfo:ident, $body:expr) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $symbol(fcinfo: ::pgrx::pg_sys::FunctionCallInfo) -> ::pgrx::pg_sys::Datum {
            #[::pgrx::pg_guard]
            unsafe extern "C-unwind" fn guarded(fcinfo: ::pgrx::pg_sys::FunctionCallInfo) -> $crate::fmgr::Verdict {
                let body: unsafe fn(::pgrx::pg_sys::FunctionCallInfo) -> $crate::fmgr::Verdict = $body;
                // SAFETY: only the entry point below calls this, with the
                // fcinfo PostgreSQL passed it, valid until it returns.
                unsafe { body(fcinfo) }
            }
            // SAFETY: PostgreSQL calls the entry point through fmgr with a
            // valid fcinfo, as the V1 info record below declares.
            match unsafe { guarded(fcinfo) } {
                $crate::fmgr::Verdict::Allow(datum) => datum,
                // SAFETY: the body and every Rust frame it called have
                // returned, and this frame holds nothing that needs dropping:
                // the error may longjmp from here to PostgreSQL.
                $crate::fmgr::Verdict::Refuse(violation) => unsafe { $crate::error::raise(violation) },
            }
        }

        $crate::fmgr::function_info_v1!($finfo);
    };
}
pub(crate) use guarded_function;

unsafe extern "C-unwind" {
    #[link_name = "SPI_execute"]
    fn spi_execute_raw(src: *const core::ffi::c_char, read_only: bool, tcount: core::ffi::c_long) -> core::ffi::c_int;
    #[link_name = "SPI_execute_plan"]
    fn spi_execute_plan_raw(
        plan: pg_sys::SPIPlanPtr,
        values: *mut pg_sys::Datum,
        nulls: *const core::ffi::c_char,
        read_only: bool,
        tcount: core::ffi::c_long,
    ) -> core::ffi::c_int;
}

/// `SPI_execute_plan` without pgrx's error trap, so that an error raised by the
/// statement (say, a guard trigger of the row it updates) reaches the client
/// as PostgreSQL raised it, with its table, column and constraint fields,
/// instead of being re-raised with message and DETAIL only.
///
/// # Safety
/// The error longjmps over the callers' frames: none of them may hold a value
/// that needs dropping at the call (SPI itself is cleaned up by the abort).
pub unsafe fn execute_plan(
    plan: pg_sys::SPIPlanPtr,
    values: &mut [pg_sys::Datum],
    nulls: &[core::ffi::c_char],
    read_only: bool,
) -> u64 {
    // SAFETY: the plan is a live (kept or this connection's) plan whose
    // parameters `values` and `nulls` hold, one each; the caller is
    // connected to SPI and has nothing to drop if the statement raises (the
    // contract).  SPI_processed is read right after the call that set it.
    unsafe {
        let rc = spi_execute_plan_raw(plan, values.as_mut_ptr(), nulls.as_ptr(), read_only, 1);
        if rc < 0 {
            Error::Spi { what: "SPI_execute_plan".into(), rc }.raise();
        }
        pg_sys::SPI_processed
    }
}

/// `SPI_execute` of a statement that may modify rows, without pgrx's error
/// trap (see `execute_plan`): the rows it processed.
///
/// # Safety
/// As for `execute_plan`; `sql` is a NUL-terminated statement.
pub unsafe fn execute(sql: *const core::ffi::c_char) -> u64 {
    // SAFETY: as for execute_plan, with a NUL-terminated statement (the
    // contract) and no parameters.
    unsafe {
        let rc = spi_execute_raw(sql, false, 0);
        if rc < 0 {
            Error::Spi { what: "SPI_execute".into(), rc }.raise();
        }
        pg_sys::SPI_processed
    }
}

/// `SPI_connect`, checked.
pub fn spi_connect() {
    // SAFETY: SPI_connect only pushes a new SPI stack entry; its result is checked.
    let rc = unsafe { pg_sys::SPI_connect() };
    if rc != pg_sys::SPI_OK_CONNECT as core::ffi::c_int {
        Error::Spi { what: "SPI_connect".into(), rc }.raise();
    }
}

/// `SPI_finish`, checked.
pub fn spi_finish() {
    // SAFETY: called after spi_connect by the same function; the result is checked.
    let rc = unsafe { pg_sys::SPI_finish() };
    if rc != pg_sys::SPI_OK_FINISH as core::ffi::c_int {
        Error::Spi { what: "SPI_finish".into(), rc }.raise();
    }
}

/// `SPI_prepare_cursor` inside `SPI_connect`, checked: a plan with one
/// parameter of each of `arg_types`, planned as `cursor_options` say
/// (`CURSOR_OPT_*`, 0 for the plan cache's own choice), which lives until
/// `SPI_finish` unless kept.  `what` names the statement in the error if
/// there is no plan.
pub fn prepare(
    sql: &core::ffi::CStr,
    arg_types: &mut [pg_sys::Oid],
    cursor_options: u32,
    what: impl FnOnce() -> String,
) -> pg_sys::SPIPlanPtr {
    // SAFETY: `sql` is NUL-terminated and `arg_types` holds as many types as
    // the count passed; SPI_prepare_cursor raises for a statement that does
    // not parse, and returns NULL (checked) when it is called unconnected.
    let plan = unsafe {
        pg_sys::SPI_prepare_cursor(
            sql.as_ptr(),
            arg_types.len() as core::ffi::c_int,
            arg_types.as_mut_ptr(),
            cursor_options as core::ffi::c_int,
        )
    };
    if plan.is_null() {
        Error::Prepare { what: what() }.raise();
    }
    plan
}

/// `SPI_prepare` + `SPI_keepplan` inside `SPI_connect`, checked: a plan that
/// lives until `free_plan`.  `what` names the statement in errors.
pub fn keep_plan(sql: &str, arg_types: &mut [pg_sys::Oid], what: impl FnOnce() -> String) -> pg_sys::SPIPlanPtr {
    keep(sql, arg_types, 0, what)
}

/// `keep_plan` of a statement that is always run with the generic plan: for
/// statements whose best plan does not depend on their parameters, so that
/// no call pays for planning (the plan cache otherwise plans anew for every
/// call while it guesses a generic plan to cost more).
pub fn keep_generic_plan(
    sql: &str,
    arg_types: &mut [pg_sys::Oid],
    what: impl FnOnce() -> String,
) -> pg_sys::SPIPlanPtr {
    keep(sql, arg_types, pg_sys::CURSOR_OPT_GENERIC_PLAN, what)
}

fn keep(
    sql: &str,
    arg_types: &mut [pg_sys::Oid],
    cursor_options: u32,
    what: impl FnOnce() -> String,
) -> pg_sys::SPIPlanPtr {
    let text = std::ffi::CString::new(sql).expect("identifiers are quoted");
    let plan = prepare(&text, arg_types, cursor_options, what);
    // SAFETY: a plan SPI_prepare_cursor just returned, not kept yet; the
    // result is checked.
    if unsafe { pg_sys::SPI_keepplan(plan) } != 0 {
        Error::KeepPlan.raise();
    }
    plan
}

/// `keep_plan` in its own SPI connection.
pub fn prepare_kept(sql: &str, arg_types: &mut [pg_sys::Oid], what: impl FnOnce() -> String) -> pg_sys::SPIPlanPtr {
    spi_connect();
    let plan = keep_plan(sql, arg_types, what);
    spi_finish();
    plan
}

/// Runs a read-only query of the extension's own (`what` names it in errors)
/// inside `SPI_connect`, with `args` as `(type, value)` pairs, none NULL; at
/// most `limit` rows (0: all), which stay in `SPI_tuptable` until the next SPI
/// call.  The number of rows.
pub fn select(query: &core::ffi::CStr, args: &[(pg_sys::Oid, pg_sys::Datum)], limit: i64, what: &str) -> u64 {
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|&(typ, _)| typ).collect();
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|&(_, value)| value).collect();
    let nulls = vec![b' ' as core::ffi::c_char; args.len()];
    // SAFETY: the arrays hold one entry per argument; the result is checked.
    unsafe {
        let rc = pg_sys::SPI_execute_with_args(
            query.as_ptr(),
            args.len() as core::ffi::c_int,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_ptr(),
            true,
            limit as core::ffi::c_long,
        );
        if rc != pg_sys::SPI_OK_SELECT as core::ffi::c_int {
            Error::Spi { what: what.to_string().into(), rc }.raise();
        }
        pg_sys::SPI_processed
    }
}

/// The first column of every row `query` returns, as OIDs (inside
/// `SPI_connect`, like `select`); a NULL is `InvalidOid`.
pub fn select_oids(query: &core::ffi::CStr, args: &[(pg_sys::Oid, pg_sys::Datum)], what: &str) -> Vec<pg_sys::Oid> {
    let rows = select(query, args, 0, what);
    (0..rows)
        .map(|row| result_value(row, 1).map_or(pg_sys::InvalidOid, |oid| pg_sys::Oid::from(oid.value() as u32)))
        .collect()
}

/// Row `row` (0-based) of the result of the last statement of the current
/// SPI connection, and its descriptor; raises if there is no such row.
fn result_row(row: u64) -> (pg_sys::HeapTuple, pg_sys::TupleDesc) {
    // SAFETY: SPI_tuptable is NULL or the result of the last statement of
    // the current SPI connection, which SPI keeps until SPI_finish (which
    // puts back the outer connection's); `vals` holds `numvals` rows.
    unsafe {
        let table = pg_sys::SPI_tuptable;
        if table.is_null() || row >= (*table).numvals {
            Error::NoResultRow { row }.raise();
        }
        (*(*table).vals.add(row as usize), (*table).tupdesc)
    }
}

/// Raises if the `SPI_getbinval`/`SPI_getvalue` call just made (`what`)
/// failed: they return NULL both for a NULL and for a column that does not
/// exist, and tell them apart only in `SPI_result`.
fn check_spi_result(what: &'static str) {
    // SAFETY: a backend-global int, which the call just set.
    let rc = unsafe { pg_sys::SPI_result };
    if rc != 0 {
        Error::Spi { what: what.into(), rc }.raise();
    }
}

/// `SPI_getbinval`, checked: column `column` (1-based) of `tuple`, `None`
/// for a NULL.
///
/// # Safety
/// `tuple` is a valid tuple of `tupdesc`.  A by-reference value points into
/// the tuple (or into memory of the current memory context, if it was
/// toasted), and is valid as long as both are.
pub unsafe fn getbinval(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    column: core::ffi::c_int,
) -> Option<pg_sys::Datum> {
    let mut is_null = false;
    // SAFETY: as the function's contract says; SPI_getbinval checks the
    // column number.
    let value = unsafe { pg_sys::SPI_getbinval(tuple, tupdesc, column, &mut is_null) };
    check_spi_result("SPI_getbinval");
    (!is_null).then_some(value)
}

/// `SPI_getvalue`, checked: column `column` (1-based) of `tuple` as its
/// type's output function writes it, `None` for a NULL.
///
/// # Safety
/// `tuple` is a valid tuple of `tupdesc`; the text is palloc'd in the current
/// memory context, which must outlive `'a`.
pub unsafe fn getvalue<'a>(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    column: core::ffi::c_int,
) -> Option<&'a core::ffi::CStr> {
    // SAFETY: as the function's contract says; SPI_getvalue checks the
    // column number.
    let text = unsafe { pg_sys::SPI_getvalue(tuple, tupdesc, column) };
    check_spi_result("SPI_getvalue");
    // SAFETY: not NULL, a NUL-terminated string in the current memory context.
    (!text.is_null()).then(|| unsafe { core::ffi::CStr::from_ptr(text) })
}

/// Whether the last statement of the current SPI connection returned rows
/// (a query, or RETURNING): a plain UPDATE has no result table.
pub fn has_result() -> bool {
    // SAFETY: a backend-global pointer, which every SPI statement sets.
    unsafe { !pg_sys::SPI_tuptable.is_null() }
}

/// Column `column` (1-based) of row `row` (0-based) of the last SPI result,
/// in binary form, `None` for a NULL; raises if there is no such row or
/// column.  A by-reference value lives in SPI's memory, until `SPI_finish`.
pub fn result_value(row: u64, column: core::ffi::c_int) -> Option<pg_sys::Datum> {
    let (tuple, tupdesc) = result_row(row);
    // SAFETY: a row of the result and the result's descriptor.
    unsafe { getbinval(tuple, tupdesc, column) }
}

/// Column `column` of row `row` of the last SPI result as text, copied out
/// of SPI's memory, `None` for a NULL; raises if there is no such row or column.
pub fn result_text(row: u64, column: core::ffi::c_int) -> Option<String> {
    let (tuple, tupdesc) = result_row(row);
    // SAFETY: a row of the result and the result's descriptor; the text is
    // copied before this function returns.
    unsafe { getvalue(tuple, tupdesc, column) }.map(|text| text.to_string_lossy().into_owned())
}

/// `SPI_freeplan` of a plan kept with `SPI_keepplan`, checked.
pub fn free_plan(plan: pg_sys::SPIPlanPtr) {
    // SAFETY: callers pass a kept plan that they drop from their cache, so it
    // is freed once and never executed afterwards; the result is checked.
    let rc = unsafe { pg_sys::SPI_freeplan(plan) };
    if rc != 0 {
        Error::Spi { what: "SPI_freeplan".into(), rc }.raise();
    }
}

/// Kept plans by key (a trigger, say), each with what it was prepared from
/// (its SQL, say): a re-registration that changes the source gets a new plan,
/// and the stale one is freed.  A backend's cache lives in a `thread_local!`.
pub struct KeptPlans<K, S>(RefCell<Map<K, (S, pg_sys::SPIPlanPtr)>>);

impl<K, S> Default for KeptPlans<K, S> {
    fn default() -> Self {
        KeptPlans(RefCell::new(Map::default()))
    }
}

impl<K: Eq + Hash, S: PartialEq> KeptPlans<K, S> {
    /// The plan kept for `key` if it was prepared from `source`, else the
    /// kept plan `prepare` makes from it, which replaces the stale one.
    pub fn get(&self, key: K, source: S, prepare: impl FnOnce() -> pg_sys::SPIPlanPtr) -> pg_sys::SPIPlanPtr {
        if let Some(plan) = self.0.borrow().get(&key).filter(|(s, _)| *s == source).map(|(_, p)| *p) {
            return plan;
        }
        // Prepared with no borrow held: preparing may raise.
        let plan = prepare();
        if let Some((_, stale)) = self.0.borrow_mut().insert(key, (source, plan)) {
            free_plan(stale);
        }
        plan
    }
}

/// The name of an SPI result code, for error messages.
pub fn spi_result(rc: core::ffi::c_int) -> String {
    // SAFETY: SPI_result_code_string returns a static string for any code.
    unsafe { core::ffi::CStr::from_ptr(pg_sys::SPI_result_code_string(rc)) }.to_string_lossy().into_owned()
}

/// `SET search_path = pg_catalog, pg_temp` until `AtEOXact_GUC(true, level)`
/// with the level returned: SQL the extension runs resolves operators and
/// functions in `pg_catalog` only, whatever the caller's `search_path` (an
/// operator the caller created could otherwise run with another role's
/// rights, or change a result).  Also fixes how a `regclass` is written.
///
/// # Safety
/// As for `set_locally`.
pub unsafe fn pin_search_path() -> core::ffi::c_int {
    // SAFETY: the caller closes the level (this function's contract).
    unsafe { set_locally(&[(c"search_path", c"pg_catalog, pg_temp")]) }
}

/// Runs `f` with `search_path` pinned as `pin_search_path` pins it when `pin`
/// is true, and restores it afterwards (an error in `f` restores it by the
/// abort).
///
/// # Safety
/// `f` closes every GUC level it opens.
pub unsafe fn pinned_if<R>(pin: bool, f: impl FnOnce() -> R) -> R {
    // SAFETY: the level opened here is the innermost when `f` returns (the
    // contract), and is closed here.
    unsafe {
        let level = pin.then(|| pin_search_path());
        let result = f();
        if let Some(level) = level {
            pg_sys::AtEOXact_GUC(true, level);
        }
        result
    }
}

/// Sets each `(name, value)` until `AtEOXact_GUC(true, level)` with the level
/// returned, as a function's `SET` clause would.
///
/// # Safety
/// The caller restores the settings with `AtEOXact_GUC`; an error in between
/// restores them when the (sub)transaction aborts.
pub unsafe fn set_locally(settings: &[(&core::ffi::CStr, &core::ffi::CStr)]) -> core::ffi::c_int {
    // SAFETY: a new GUC nest level, which the caller closes (the contract);
    // NUL-terminated names and values, which set_config_option copies, and
    // validates (raising at elevel 0 for a session source).
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in settings {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        level
    }
}

/// Fills `info` with `to_jsonb()` for arguments of type `typ`, in memory
/// context `context`: the polymorphic function reads its argument's type
/// from the call expression, which is made here.
///
/// # Safety
/// `context` lives as long as `info` is called.
pub unsafe fn to_jsonb_of(info: &mut pg_sys::FmgrInfo, typ: pg_sys::Oid, context: pg_sys::MemoryContext) {
    // SAFETY: a built-in function looked up into `info`; the expression is
    // made in `context` (the contract), as the lookup's own data is.
    unsafe {
        pg_sys::fmgr_info_cxt(pg_sys::Oid::from(pg_sys::F_TO_JSONB), info, context);
        let previous = pg_sys::MemoryContextSwitchTo(context);
        let arg = pg_sys::makeNullConst(typ, -1, pg_sys::InvalidOid);
        info.fn_expr = pg_sys::makeFuncExpr(
            pg_sys::Oid::from(pg_sys::F_TO_JSONB),
            pg_sys::JSONBOID,
            pg_sys::lappend(core::ptr::null_mut(), arg.cast()),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        )
        .cast();
        pg_sys::MemoryContextSwitchTo(previous);
    }
}

/// An index scan of `index` (of table `heap`) under `snapshot`, started with
/// `keys`, without ordering operators (PostgreSQL 18 also takes the scan's
/// instrumentation: none).  The caller ends it with `index_endscan`.
///
/// # Safety
/// `heap` and `index` are open, `snapshot` stays valid until the scan ends,
/// and `keys` are scan keys on the index's columns.
pub unsafe fn begin_index_scan(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    keys: &mut [pg_sys::ScanKeyData],
) -> pg_sys::IndexScanDesc {
    let nkeys = keys.len() as core::ffi::c_int;
    // SAFETY: the contract.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        let scan = pg_sys::index_beginscan(heap, index, snapshot, nkeys, 0);
        #[cfg(feature = "pg18")]
        let scan = pg_sys::index_beginscan(heap, index, snapshot, core::ptr::null_mut(), nkeys, 0);
        pg_sys::index_rescan(scan, keys.as_mut_ptr(), nkeys, core::ptr::null_mut(), 0);
        scan
    }
}
