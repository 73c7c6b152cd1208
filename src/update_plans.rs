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
//! Both halves act only on a table whose every BEFORE UPDATE row trigger is
//! one of these guards (so no other trigger sees the planned version), and
//! either half alone keeps the guarantees: with its trigger kept, the bump
//! finds OLD + 1 already there and keeps it; without the planned version the
//! bump stays.  The executor recognizes only the exact call the planner
//! writes (`_next_version` of the row's own version column, this table, this
//! column): a hand-written call anywhere else leaves the bump in place.
//! Partitions, tables with inheritance children and tables with stored
//! generated columns (computed after BEFORE triggers) keep every trigger, as
//! do UPDATEs inside a CTE, MERGE and ON CONFLICT DO UPDATE.

use core::ffi::{c_char, c_int, CStr};
use std::cell::RefCell;

use pgrx::pg_sys;

use crate::backend_map::Map;
use crate::frozen_columns::{integrity_immutable_guard, integrity_write_once_guard};
use crate::trigger::{
    address_of, column_attnum, function_address, leave_out_of_statement, trigger_args, tuple_desc_attr,
};
use crate::versioning::{
    integrity_next_version_int2, integrity_next_version_int4, integrity_next_version_int8, integrity_version_bump,
    integrity_version_check,
};

const ROW_TIMING: u32 = pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_BEFORE | pg_sys::TRIGGER_TYPE_INSTEAD;

fn is_update_row(trigger: &pg_sys::Trigger, timing: u32) -> bool {
    let tgtype = trigger.tgtype as u32;
    tgtype & ROW_TIMING == pg_sys::TRIGGER_TYPE_ROW | timing && tgtype & pg_sys::TRIGGER_TYPE_UPDATE != 0
}

/// The version column a bump or check trigger keeps (`versioning::version_plan`'s default).
fn version_column(trigger: &pg_sys::Trigger) -> &CStr {
    trigger_args(trigger).next().unwrap_or(c"version")
}

/// The column of a table that a statement may be given the version of.
#[derive(Clone, Copy)]
struct VersionColumn {
    attnum: i16,
    typid: pg_sys::Oid,
    typmod: i32,
    name: pg_sys::NameData,
    /// The bump trigger, and the AFTER checks of the same column.
    bump: pg_sys::Oid,
}

/// What the hooks need to know about a table whose every BEFORE UPDATE row
/// trigger is a versioning, immutable or write-once guard.  Trigger OIDs,
/// attribute numbers and copies of names: nothing that points into the
/// relation cache.
struct TableGuards {
    /// Set when there is one bump, firing on origin writes for every UPDATE
    /// (no WHEN clause, no column list), on an integer column that no guard
    /// protects.
    version: Option<VersionColumn>,
    /// The AFTER checks of that column.
    checks: Vec<pg_sys::Oid>,
    /// Each immutable or write-once guard with the columns it protects
    /// (`None`: one it names is not there, the guard always stays).
    frozen: Vec<(pg_sys::Oid, Option<Vec<i16>>)>,
}

/// A table's guards (`None`: a table the hooks leave alone) with the catalog
/// generation they were found at.
type CachedGuards = (u64, Option<std::rc::Rc<TableGuards>>);

thread_local! {
    static TABLES: RefCell<Map<pg_sys::Oid, CachedGuards>> = RefCell::new(Map::default());
}

/// The guards of `relation` these hooks decide, found once per catalog
/// change; `None` for a table they leave alone.
///
/// # Safety
/// `relation` is open and locked (trigger DDL waits for the lock, so its
/// trigger descriptor stays as it is while it is read).
unsafe fn table_guards(relation: pg_sys::Relation) -> Option<std::rc::Rc<TableGuards>> {
    // SAFETY: an open relation (the contract).
    let relid = unsafe { (*relation).rd_id };
    let generation = crate::invalidation::generation();
    if let Some(found) = TABLES
        .with_borrow(|tables| tables.get(&relid).filter(|(at, _)| *at == generation).map(|(_, guards)| guards.clone()))
    {
        return found;
    }
    // SAFETY: as above.
    let guards = unsafe { summarize(relation) }.map(std::rc::Rc::new);
    TABLES.with_borrow_mut(|tables| tables.insert(relid, (generation, guards.clone())));
    guards
}

/// # Safety
/// As `table_guards`.
unsafe fn summarize(relation: pg_sys::Relation) -> Option<TableGuards> {
    let (bump, check) = (address_of(integrity_version_bump), address_of(integrity_version_check));
    let frozen = [address_of(integrity_immutable_guard), address_of(integrity_write_once_guard)];
    // SAFETY: an open relation (the contract): its pg_class row, descriptor
    // and trigger descriptor, which holds numtriggers triggers.
    unsafe {
        let form = &*(*relation).rd_rel;
        let constraints = (*(*relation).rd_att).constr;
        let desc = (*relation).trigdesc;
        if form.relkind as u8 != pg_sys::RELKIND_RELATION
            || form.relispartition
            || (!constraints.is_null() && (*constraints).has_generated_stored)
            || desc.is_null()
            || !(*desc).trig_update_before_row
        {
            return None;
        }
        let triggers = core::slice::from_raw_parts((*desc).triggers, (*desc).numtriggers as usize);
        let mut guards = TableGuards { version: None, checks: Vec::new(), frozen: Vec::new() };
        let mut bumps = Vec::new();
        for trigger in triggers.iter().filter(|t| is_update_row(t, pg_sys::TRIGGER_TYPE_BEFORE)) {
            let function = function_address(trigger.tgfoid);
            if function == bump {
                bumps.push(trigger);
            } else if frozen.contains(&function) {
                let columns: Option<Vec<i16>> =
                    trigger_args(trigger).map(|name| attribute_named(relation, name).map(|a| a.attnum)).collect();
                guards.frozen.push((trigger.tgoid, columns));
            } else {
                return None;
            }
        }
        if let [trigger] = bumps[..] {
            let attribute = attribute_named(relation, version_column(trigger));
            let protected = |attnum: i16| {
                guards.frozen.iter().any(|(_, columns)| columns.as_ref().is_none_or(|c| c.contains(&attnum)))
            };
            if let Some(attribute) = attribute.filter(|a| {
                matches!(a.atttypid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID) && !protected(a.attnum)
            }) {
                if trigger.tgenabled as u8 == pg_sys::TRIGGER_FIRES_ON_ORIGIN
                    && trigger.tgqual.is_null()
                    && trigger.tgnattr == 0
                {
                    guards.version = Some(VersionColumn {
                        attnum: attribute.attnum,
                        typid: attribute.atttypid,
                        typmod: attribute.atttypmod,
                        name: attribute.attname,
                        bump: trigger.tgoid,
                    });
                    guards.checks = triggers
                        .iter()
                        .filter(|t| {
                            is_update_row(t, 0)
                                && function_address(t.tgfoid) == check
                                && version_column(t) == version_column(trigger)
                        })
                        .map(|t| t.tgoid)
                        .collect();
                }
            }
        }
        Some(guards)
    }
}

/// The live column of `relation` named `name`, if it has one.
///
/// # Safety
/// `relation` is open.
unsafe fn attribute_named<'r>(relation: pg_sys::Relation, name: &CStr) -> Option<&'r pg_sys::FormData_pg_attribute> {
    // SAFETY: an open relation's descriptor, and an attribute number within it.
    unsafe {
        let tupdesc = (*relation).rd_att;
        column_attnum(tupdesc, name).map(|attnum| tuple_desc_attr(tupdesc, attnum))
    }
}

/// Planner hook: adds the next version to an UPDATE that does not assign it
/// (see the module comment).  Returns whether it did: the plan then depends
/// on the role that may run `_next_version`.
///
/// # Safety
/// `parse` is the query being planned, whose relations are locked.
pub unsafe fn add_version(parse: *mut pg_sys::Query) -> bool {
    // SAFETY: the query and its range table (the contract); the result
    // relation is locked, opened and closed again here; the nodes added are
    // made in the planner's memory context, as the query's own.
    unsafe {
        if (*parse).commandType != pg_sys::CmdType::CMD_UPDATE || (*parse).resultRelation <= 0 {
            return false;
        }
        let rte: *mut pg_sys::RangeTblEntry = pg_sys::list_nth((*parse).rtable, (*parse).resultRelation - 1).cast();
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION || (*rte).relkind as u8 != pg_sys::RELKIND_RELATION {
            return false;
        }
        let relid = (*rte).relid;
        let relation = pg_sys::RelationIdGetRelation(relid);
        if relation.is_null() {
            return false;
        }
        let has_children = (*rte).inh && (*(*relation).rd_rel).relhassubclass;
        let guards = table_guards(relation);
        pg_sys::RelationClose(relation);
        let Some(version) = guards.and_then(|guards| guards.version).filter(|_| !has_children) else { return false };
        // The new values come first, in column order, then the hidden
        // entries (a multiple assignment's sub-SELECT): the version goes
        // among the first, before any hidden one.
        let targets = (*parse).targetList;
        let mut position = 0;
        for i in 0..pg_sys::list_length(targets) {
            let entry: *mut pg_sys::TargetEntry = pg_sys::list_nth(targets, i).cast();
            if (*entry).resjunk {
                break;
            }
            if (*entry).resno == version.attnum {
                // The statement writes the version: the bump checks it.
                return false;
            }
            if (*entry).resno < version.attnum {
                position = i + 1;
            }
        }
        let function = next_version_function(version.typid);
        if function == pg_sys::InvalidOid || !may_execute(function) {
            return false;
        }
        let name: *mut pg_sys::NameData = pg_sys::palloc(size_of::<pg_sys::NameData>()).cast();
        name.write(version.name);
        let column = pg_sys::makeVar(
            (*parse).resultRelation as _,
            version.attnum,
            version.typid,
            version.typmod,
            pg_sys::InvalidOid,
            0,
        );
        let table =
            pg_sys::makeConst(pg_sys::REGCLASSOID, -1, pg_sys::InvalidOid, 4, pg_sys::Datum::from(relid), false, true);
        let column_name = pg_sys::makeConst(
            pg_sys::NAMEOID,
            -1,
            pg_sys::C_COLLATION_OID,
            pg_sys::NAMEDATALEN as c_int,
            pg_sys::Datum::from(name),
            false,
            false,
        );
        let args = [column.cast::<core::ffi::c_void>(), table.cast(), column_name.cast()]
            .into_iter()
            .fold(core::ptr::null_mut(), |list, arg| pg_sys::lappend(list, arg));
        let call = pg_sys::makeFuncExpr(
            function,
            version.typid,
            args,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let entry =
            pg_sys::makeTargetEntry(call.cast(), version.attnum, pg_sys::pstrdup(version.name.data.as_ptr()), false);
        (*parse).targetList = pg_sys::list_insert_nth(targets, position, entry.cast());
        true
    }
}

/// Whether the current role may run `function` (every role may, unless
/// EXECUTE was revoked: then the statement keeps the triggers).
fn may_execute(function: pg_sys::Oid) -> bool {
    // SAFETY: a privilege check of an existing function for the current role.
    unsafe {
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        let result = pg_sys::pg_proc_aclcheck(function, pg_sys::GetUserId(), pg_sys::ACL_EXECUTE as pg_sys::AclMode);
        #[cfg(not(any(feature = "pg14", feature = "pg15")))]
        let result = pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            function,
            pg_sys::GetUserId(),
            pg_sys::ACL_EXECUTE as pg_sys::AclMode,
        );
        result == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// `integrity._next_version(<type>, regclass, name)`, `InvalidOid` where the
/// extension's SQL does not declare it (yet: an update not run).  Looked up
/// in the catalog cache, without the schema privilege check of a name
/// lookup (the call is the extension's, not the role's).
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
    // SAFETY: catalog cache lookups by name, argument types and schema; the
    // argument vector is palloc'd; InvalidOid when there is no such schema
    // or function.
    let function = unsafe {
        let schema = pg_sys::get_namespace_oid(c"integrity".as_ptr(), true);
        if schema == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            let arg_types = [typid, pg_sys::REGCLASSOID, pg_sys::NAMEOID];
            pg_sys::GetSysCacheOid(
                pg_sys::SysCacheIdentifier::PROCNAMEARGSNSP as c_int,
                pg_sys::Anum_pg_proc_oid as pg_sys::AttrNumber,
                pg_sys::Datum::from(c"_next_version".as_ptr()),
                pg_sys::Datum::from(pg_sys::buildoidvector(arg_types.as_ptr(), 3)),
                pg_sys::Datum::from(schema),
                pg_sys::Datum::from(0),
            )
        }
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
    // state, and for an UPDATE's ModifyTable its mt_nrels result relations,
    // open and locked.
    unsafe {
        let state = (*query_desc).planstate;
        if (*(*query_desc).plannedstmt).commandType != pg_sys::CmdType::CMD_UPDATE
            || state.is_null()
            || (*state).type_ != pg_sys::NodeTag::T_ModifyTableState
        {
            return;
        }
        let modify = state as *mut pg_sys::ModifyTableState;
        for i in 0..(*modify).mt_nrels as usize {
            let relation = (*modify).resultRelInfo.add(i);
            let desc = (*relation).ri_TrigDesc;
            if desc.is_null() || !(*desc).trig_update_before_row {
                continue;
            }
            let Some(guards) = table_guards((*relation).ri_RelationDesc) else { continue };
            let planned = (*modify).mt_nrels == 1
                && guards.version.is_some_and(|version| {
                    plans_version((*modify).ps.plan.cast(), (*(*relation).ri_RelationDesc).rd_id, &version)
                });
            let updated = pg_sys::ExecGetUpdatedCols(relation, (*query_desc).estate);
            let version = guards.version.map(|v| v.attnum);
            let assigns = |columns: &Option<Vec<i16>>| {
                columns.as_ref().is_none_or(|columns| {
                    columns.iter().any(|&attnum| {
                        Some(attnum) == version
                            || pg_sys::bms_is_member(
                                c_int::from(attnum) - pg_sys::FirstLowInvalidHeapAttributeNumber,
                                updated,
                            )
                    })
                })
            };
            leave_out_of_statement(relation, |trigger| {
                let planned_out = planned
                    && (guards.version.is_some_and(|v| v.bump == trigger.tgoid)
                        || guards.checks.contains(&trigger.tgoid));
                planned_out || guards.frozen.iter().any(|(tgoid, columns)| *tgoid == trigger.tgoid && !assigns(columns))
            });
        }
    }
}

/// Whether the plan of an UPDATE of table `relid` (its one result relation)
/// computes the new version exactly as `add_version` writes it: the value it
/// assigns to the version column is `_next_version` of that column of the
/// row being updated, with this table and column as its constants.  The
/// subplan's target list holds the new values in the order of the column
/// numbers.
///
/// # Safety
/// `plan` is the ModifyTable of a started UPDATE with one result relation.
unsafe fn plans_version(plan: *const pg_sys::ModifyTable, relid: pg_sys::Oid, version: &VersionColumn) -> bool {
    let functions = [
        address_of(integrity_next_version_int2),
        address_of(integrity_next_version_int4),
        address_of(integrity_next_version_int8),
    ];
    // SAFETY: the plan's lists, of the node types they hold (checked where
    // they vary); the subplan's target list begins with one entry per column
    // number.
    unsafe {
        let columns: *mut pg_sys::List = pg_sys::list_nth((*plan).updateColnosLists, 0).cast();
        let Some(position) = (0..pg_sys::list_length(columns))
            .find(|&i| pg_sys::list_nth_int(columns, i) == c_int::from(version.attnum))
        else {
            return false;
        };
        let subplan = (*plan).plan.lefttree;
        if subplan.is_null() || pg_sys::list_length((*subplan).targetlist) <= position {
            return false;
        }
        let expr = (*(pg_sys::list_nth((*subplan).targetlist, position) as *mut pg_sys::TargetEntry)).expr;
        if (*expr).type_ != pg_sys::NodeTag::T_FuncExpr {
            return false;
        }
        let call = expr as *mut pg_sys::FuncExpr;
        let args = (*call).args;
        if pg_sys::list_length(args) != 3 || !functions.contains(&function_address((*call).funcid)) {
            return false;
        }
        let (row, table, column) = (
            pg_sys::list_nth(args, 0) as *mut pg_sys::Var,
            pg_sys::list_nth(args, 1) as *mut pg_sys::Const,
            pg_sys::list_nth(args, 2) as *mut pg_sys::Const,
        );
        // The row's own column: a Var of the scanned result relation (a
        // join or a Result node above the scan refers to it otherwise, and
        // is not recognized).
        let result_relation = pg_sys::list_nth_int((*plan).resultRelations, 0);
        (*row).xpr.type_ == pg_sys::NodeTag::T_Var
            && (*row).varno as c_int == result_relation
            && (*row).varattno == version.attnum
            && (*row).varlevelsup == 0
            && (*table).xpr.type_ == pg_sys::NodeTag::T_Const
            && !(*table).constisnull
            && pg_sys::Oid::from((*table).constvalue.value() as u32) == relid
            && (*column).xpr.type_ == pg_sys::NodeTag::T_Const
            && !(*column).constisnull
            && CStr::from_ptr((*column).constvalue.cast_mut_ptr::<c_char>())
                == CStr::from_ptr(version.name.data.as_ptr())
    }
}
