//! Versioning and frozen columns decided by an UPDATE's own plan.
//!
//! PostgreSQL locks every row before it calls a BEFORE UPDATE row trigger
//! (`GetTupleForTrigger`), and compiles the WHEN clause of an AFTER row
//! trigger for every statement: for a full-table UPDATE that is most of what
//! the versioning and immutable guards cost, for a single-row UPDATE more
//! than their checks.  Most UPDATEs assign neither the version nor a
//! protected column, and then the statement itself can do the guards' work:
//!
//! - `add_version`, from the planner hook, adds
//!   `version = integrity._next_version(version, tbl, 'version')` to the
//!   target list of an UPDATE that does not assign the version of a table
//!   whose bump trigger fires on origin writes (`versioning::next_version`
//!   computes what the bump would);
//! - `skip_planned_guards`, at executor start-up, takes the guards' triggers
//!   out of the statement's copy of the relation's triggers: the bump and
//!   its AFTER check when the plan computes the version so, the immutable and
//!   write-once guards when the statement assigns none of their columns
//!   (counting the version, which it now assigns).  Only while every BEFORE
//!   UPDATE row trigger of the relation is one of these guards: any other
//!   could change a column after them.
//!
//! Either half alone keeps the guarantees: with its trigger kept, the bump
//! finds OLD + 1 already there and keeps it; without the planned version the
//! bump stays.  Partitions, tables with inheritance children and tables with
//! stored generated columns (computed after BEFORE triggers) keep every
//! trigger, as do UPDATEs inside a CTE, MERGE and ON CONFLICT DO UPDATE.

use core::ffi::{c_char, c_int, CStr};
use std::cell::RefCell;

use pgrx::pg_sys;

use crate::frozen_columns::{integrity_immutable_guard, integrity_write_once_guard};
use crate::trigger::{function_address, leave_out_of_statement, tuple_desc_attr};
use crate::versioning::{
    integrity_next_version_int2, integrity_next_version_int4, integrity_next_version_int8, integrity_version_bump,
    integrity_version_check,
};

const ROW_TIMING: u32 = pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_BEFORE | pg_sys::TRIGGER_TYPE_INSTEAD;

fn is_before_update_row(trigger: &pg_sys::Trigger) -> bool {
    let tgtype = trigger.tgtype as u32;
    tgtype & ROW_TIMING == pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_BEFORE
        && tgtype & pg_sys::TRIGGER_TYPE_UPDATE != 0
}

fn is_after_update_row(trigger: &pg_sys::Trigger) -> bool {
    let tgtype = trigger.tgtype as u32;
    tgtype & ROW_TIMING == pg_sys::TRIGGER_TYPE_ROW && tgtype & pg_sys::TRIGGER_TYPE_UPDATE != 0
}

fn address_of(function: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum) -> usize {
    function as *const () as usize
}

/// The arguments of `CREATE TRIGGER … EXECUTE FUNCTION f(args)`.
fn trigger_args(trigger: &pg_sys::Trigger) -> impl Iterator<Item = &CStr> {
    (0..trigger.tgnargs as usize).map(move |i| {
        // SAFETY: tgargs holds tgnargs NUL-terminated strings, as long-lived
        // as the Trigger.
        unsafe { CStr::from_ptr(*trigger.tgargs.add(i)) }
    })
}

/// The version column a bump trigger keeps (`versioning::version_plan`'s default).
fn version_column(bump: &pg_sys::Trigger) -> &CStr {
    trigger_args(bump).next().unwrap_or(c"version")
}

/// The attribute of `relation` named `name`, if it has one.
///
/// # Safety
/// `relation` is open.
unsafe fn attribute_named<'r>(relation: pg_sys::Relation, name: &CStr) -> Option<&'r pg_sys::FormData_pg_attribute> {
    // SAFETY: an open relation's descriptor, and attribute numbers within it.
    unsafe {
        let tupdesc = (*relation).rd_att;
        (1..=(*tupdesc).natts as i16)
            .map(|attnum| tuple_desc_attr(tupdesc, attnum))
            .find(|attribute| !attribute.attisdropped && CStr::from_ptr(attribute.attname.data.as_ptr()) == name)
    }
}

/// Whether the relation is one whose guards a statement may decide: a plain
/// table, not a partition, without stored generated columns.
///
/// # Safety
/// `relation` is open.
unsafe fn decidable(relation: pg_sys::Relation) -> bool {
    // SAFETY: an open relation's pg_class row and descriptor.
    unsafe {
        let form = &*(*relation).rd_rel;
        let constraints = (*(*relation).rd_att).constr;
        form.relkind as u8 == pg_sys::RELKIND_RELATION
            && !form.relispartition
            && (constraints.is_null() || !(*constraints).has_generated_stored)
    }
}

/// Planner hook: adds the next version to an UPDATE that does not assign it
/// (see the module comment).
///
/// # Safety
/// `parse` is the query being planned, whose relations are locked.
pub unsafe fn add_version(parse: *mut pg_sys::Query) {
    // SAFETY: the query and its range table (the contract); the result
    // relation is locked, opened and closed again here; the nodes added are
    // made in the planner's memory context, as the query's own.
    unsafe {
        if (*parse).commandType != pg_sys::CmdType::CMD_UPDATE || (*parse).resultRelation <= 0 {
            return;
        }
        let rte: *mut pg_sys::RangeTblEntry = pg_sys::list_nth((*parse).rtable, (*parse).resultRelation - 1).cast();
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION || (*rte).relkind as u8 != pg_sys::RELKIND_RELATION {
            return;
        }
        let relid = (*rte).relid;
        let relation = pg_sys::RelationIdGetRelation(relid);
        if relation.is_null() {
            return;
        }
        let version = versioned(relation, (*rte).inh);
        pg_sys::RelationClose(relation);
        let Some((attnum, typid, typmod, attname)) = version else { return };
        let column = CStr::from_ptr(attname.data.as_ptr());
        let targets = (*parse).targetList;
        let mut position = 0;
        for i in 0..pg_sys::list_length(targets) {
            let entry: *mut pg_sys::TargetEntry = pg_sys::list_nth(targets, i).cast();
            if (*entry).resjunk || (*entry).resno < attnum {
                position = i + 1;
            } else if (*entry).resno == attnum {
                // The statement writes the version: the bump checks it.
                return;
            }
        }
        let function = next_version_function(typid);
        if function == pg_sys::InvalidOid {
            return;
        }
        let name: *mut pg_sys::NameData = pg_sys::palloc0(size_of::<pg_sys::NameData>()).cast();
        name.write(attname);
        let mut args = pg_sys::lappend(
            core::ptr::null_mut(),
            pg_sys::makeVar((*parse).resultRelation as _, attnum, typid, typmod, pg_sys::InvalidOid, 0).cast(),
        );
        args = pg_sys::lappend(
            args,
            pg_sys::makeConst(pg_sys::REGCLASSOID, -1, pg_sys::InvalidOid, 4, pg_sys::Datum::from(relid), false, true)
                .cast(),
        );
        args = pg_sys::lappend(
            args,
            pg_sys::makeConst(
                pg_sys::NAMEOID,
                -1,
                pg_sys::C_COLLATION_OID,
                pg_sys::NAMEDATALEN as c_int,
                pg_sys::Datum::from(name),
                false,
                false,
            )
            .cast(),
        );
        let call = pg_sys::makeFuncExpr(
            function,
            typid,
            args,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let entry = pg_sys::makeTargetEntry(call.cast(), attnum, pg_sys::pstrdup(column.as_ptr()), false);
        (*parse).targetList = pg_sys::list_insert_nth(targets, position, entry.cast());
    }
}

/// The version column of a table whose one bump trigger fires on origin
/// writes, as (attribute number, type, typmod, name).
///
/// # Safety
/// `relation` is open.
unsafe fn versioned(
    relation: pg_sys::Relation,
    with_children: bool,
) -> Option<(i16, pg_sys::Oid, i32, pg_sys::NameData)> {
    // SAFETY: an open relation (the contract), its pg_class row and trigger
    // descriptor, which hold numtriggers triggers.
    unsafe {
        if !decidable(relation) || (with_children && (*(*relation).rd_rel).relhassubclass) {
            return None;
        }
        let desc = (*relation).trigdesc;
        if desc.is_null() || !(*desc).trig_update_before_row {
            return None;
        }
        let bump = address_of(integrity_version_bump);
        let triggers = core::slice::from_raw_parts((*desc).triggers, (*desc).numtriggers as usize);
        let mut bumps = triggers.iter().filter(|t| is_before_update_row(t) && function_address(t.tgfoid) == bump);
        let (Some(trigger), None) = (bumps.next(), bumps.next()) else { return None };
        if trigger.tgenabled as u8 != pg_sys::TRIGGER_FIRES_ON_ORIGIN {
            return None;
        }
        let attribute = attribute_named(relation, version_column(trigger))?;
        matches!(attribute.atttypid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID).then_some((
            attribute.attnum,
            attribute.atttypid,
            attribute.atttypmod,
            attribute.attname,
        ))
    }
}

/// `integrity._next_version(<type>, regclass, name)`, `InvalidOid` where the
/// extension's SQL does not declare it (yet: an update not run).
fn next_version_function(typid: pg_sys::Oid) -> pg_sys::Oid {
    thread_local! {
        static FUNCTIONS: RefCell<Vec<(pg_sys::Oid, u64, pg_sys::Oid)>> = const { RefCell::new(Vec::new()) };
    }
    let generation = crate::invalidation::generation();
    if let Some(function) = FUNCTIONS.with_borrow(|functions| {
        functions.iter().find(|&&(t, at, _)| t == typid && at == generation).map(|&(_, _, function)| function)
    }) {
        return function;
    }
    // SAFETY: a lookup by qualified name and argument types that returns
    // InvalidOid (missing_ok) when there is no such function; the name list
    // is made of palloc'd strings.
    let function = unsafe {
        let names = pg_sys::lappend(
            pg_sys::lappend(core::ptr::null_mut(), pg_sys::makeString(pg_sys::pstrdup(c"integrity".as_ptr())).cast()),
            pg_sys::makeString(pg_sys::pstrdup(c"_next_version".as_ptr())).cast(),
        );
        let arg_types = [typid, pg_sys::REGCLASSOID, pg_sys::NAMEOID];
        pg_sys::LookupFuncName(names, 3, arg_types.as_ptr(), true)
    };
    FUNCTIONS.with_borrow_mut(|functions| {
        functions.retain(|&(t, at, _)| t != typid && at == generation);
        functions.push((typid, generation, function));
    });
    function
}

/// Executor start-up: takes out of the statement the guards its plan decides
/// (see the module comment).
///
/// # Safety
/// `query_desc` is a statement that started and whose triggers have not
/// fired yet.
pub unsafe fn skip_planned_guards(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: a started statement (the contract): its plan, its top plan
    // state, and for an UPDATE's ModifyTable its mt_nrels result relations.
    unsafe {
        let state = (*query_desc).planstate;
        if (*(*query_desc).plannedstmt).commandType != pg_sys::CmdType::CMD_UPDATE
            || state.is_null()
            || (*state).type_ != pg_sys::NodeTag::T_ModifyTableState
        {
            return;
        }
        let modify = state as *mut pg_sys::ModifyTableState;
        let planned = if (*modify).mt_nrels == 1 { planned_version((*modify).ps.plan.cast()) } else { None };
        for i in 0..(*modify).mt_nrels as usize {
            skip_guards((*modify).resultRelInfo.add(i), (*query_desc).estate, planned);
        }
    }
}

/// The column whose next version the UPDATE's plan computes with
/// `_next_version`, by name: its subplan's target list holds the new values
/// of the updated columns in the order of the column numbers.
///
/// # Safety
/// `plan` is the ModifyTable of a started UPDATE with one result relation.
unsafe fn planned_version<'p>(plan: *const pg_sys::ModifyTable) -> Option<&'p CStr> {
    let functions = [
        address_of(integrity_next_version_int2),
        address_of(integrity_next_version_int4),
        address_of(integrity_next_version_int8),
    ];
    // SAFETY: the plan's lists, of the node types they hold; the subplan's
    // target list is at least as long as the column numbers.
    unsafe {
        let columns: *mut pg_sys::List = pg_sys::list_nth((*plan).updateColnosLists, 0).cast();
        let subplan = (*plan).plan.lefttree;
        if subplan.is_null() {
            return None;
        }
        let targets = (*subplan).targetlist;
        (0..pg_sys::list_length(columns).min(pg_sys::list_length(targets))).find_map(|i| {
            let expr = (*(pg_sys::list_nth(targets, i) as *mut pg_sys::TargetEntry)).expr;
            if (*expr).type_ != pg_sys::NodeTag::T_FuncExpr {
                return None;
            }
            let call = expr as *mut pg_sys::FuncExpr;
            if pg_sys::list_length((*call).args) != 3 || !functions.contains(&function_address((*call).funcid)) {
                return None;
            }
            let column: *mut pg_sys::Const = pg_sys::list_nth((*call).args, 2).cast();
            if (*column).xpr.type_ != pg_sys::NodeTag::T_Const || (*column).constisnull {
                return None;
            }
            Some(CStr::from_ptr((*column).constvalue.cast_mut_ptr::<c_char>()))
        })
    }
}

/// Takes out of `relation`'s triggers for the statement the guards it
/// decides: see the module comment.
///
/// # Safety
/// `relation` is a result relation of the started statement `estate`, whose
/// triggers have not fired yet.
unsafe fn skip_guards(relation: *mut pg_sys::ResultRelInfo, estate: *mut pg_sys::EState, planned: Option<&CStr>) {
    let (bump, check) = (address_of(integrity_version_bump), address_of(integrity_version_check));
    let frozen = [address_of(integrity_immutable_guard), address_of(integrity_write_once_guard)];
    // SAFETY: an open result relation with the statement's own copy of its
    // triggers (the contract), which holds numtriggers of them.
    unsafe {
        let desc = (*relation).ri_TrigDesc;
        let table = (*relation).ri_RelationDesc;
        if desc.is_null() || !(*desc).trig_update_before_row || !decidable(table) {
            return;
        }
        let triggers = core::slice::from_raw_parts((*desc).triggers, (*desc).numtriggers as usize);
        let mut version = None;
        for trigger in triggers.iter().filter(|t| is_before_update_row(t)) {
            let function = function_address(trigger.tgfoid);
            if function == bump && version.is_none() {
                version = Some((version_column(trigger), trigger.tgenabled as u8));
            } else if !frozen.contains(&function) {
                return;
            }
        }
        let planned = match (version, planned) {
            (Some((column, enabled)), Some(planned)) => column == planned && enabled == pg_sys::TRIGGER_FIRES_ON_ORIGIN,
            _ => false,
        };
        let updated = pg_sys::ExecGetUpdatedCols(relation, estate);
        let version_attnum = version.and_then(|(column, _)| attribute_named(table, column)).map(|a| a.attnum);
        let assigns = |trigger: &pg_sys::Trigger| {
            trigger_args(trigger).any(|column| {
                attribute_named(table, column).is_none_or(|attribute| {
                    Some(attribute.attnum) == version_attnum
                        || pg_sys::bms_is_member(
                            c_int::from(attribute.attnum) - pg_sys::FirstLowInvalidHeapAttributeNumber,
                            updated,
                        )
                })
            })
        };
        leave_out_of_statement(relation, |trigger| {
            let function = function_address(trigger.tgfoid);
            if is_before_update_row(trigger) {
                (function == bump && planned) || (frozen.contains(&function) && !assigns(trigger))
            } else {
                planned
                    && is_after_update_row(trigger)
                    && function == check
                    && Some(version_column(trigger)) == version.map(|(column, _)| column)
            }
        });
    }
}
