//! The planner and executor start-up hooks, installed by `_PG_init`: each
//! passes the statement to the guards that act on it and chains to the hook
//! installed before.

use core::ffi::{c_char, c_int};

use pgrx::pg_sys;

use crate::{soft_delete, update_plans};

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

/// Installs the hooks.
pub fn init() {
    // SAFETY: _PG_init runs once per process, before any statement of the
    // process is planned or started; the previous hooks are chained.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(plan);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn plan(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the planner's own call, whose query's relations are locked,
    // passed on after the guards' additions; the plan it returns is the
    // caller's to keep.
    unsafe {
        let added_version = update_plans::add_version(parse);
        let planned = match PREV_PLANNER {
            Some(previous) => previous(parse, query_string, cursor_options, bound_params),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        };
        if added_version {
            // Planned for a role that may run _next_version: another role
            // plans again (a kept plan is checked against its role).
            (*planned).dependsOnRole = true;
        }
        planned
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    // SAFETY: the executor's own call, passed on unchanged; once it returns,
    // the statement's result relations are open, with their trigger
    // descriptors copied for this statement alone (InitResultRelInfo), and
    // no trigger of theirs has fired yet.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(previous) => previous(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
        soft_delete::skip_sanctioned(query_desc);
        update_plans::skip_planned_guards(query_desc);
    }
}
