//! Reading the DDL commands an event trigger sees.  `pg_ddl_command` can only
//! be inspected from C: the event trigger needs to tell `ATTACH PARTITION`
//! apart from the other `ALTER TABLE` subcommands, so that it covers newly
//! attached partitions without acting on, say, the `ENABLE ALWAYS TRIGGER`
//! commands that pg_restore replays; and a rename or schema move, after which
//! a table is no longer found under the name a guard keeps, from the rest.

use core::ffi::{c_char, CStr};
use std::cell::RefCell;
use std::ffi::CString;

use pgrx::pg_guard;
use pgrx::pg_sys;

use crate::error::Error;
use crate::fmgr::{execute_plan, function_info_v1, prepare, result_value, select_oids, spi_connect, spi_finish};

thread_local! {
    /// The partitions (and their own partitions) the running `DROP TABLE`
    /// names that hold only rows past their table's retention: the sql_drop
    /// event trigger lets them go.  Filled by the command's ddl_command_start,
    /// emptied by the next command's; nothing else writes it.
    static EXPIRED_DROPS: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

/// `integrity._drops_expired_partition(oid) RETURNS boolean`: whether the
/// running `DROP TABLE` named this partition, past its table's retention.
///
/// # Safety
/// Called by fmgr with the arguments its SQL declaration gives it.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn integrity_drops_expired_partition(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the function is STRICT and declared with one oid argument.
    let relid = pg_sys::Oid::from(unsafe { (*fcinfo).args.as_slice(1)[0].value.value() } as u32);
    EXPIRED_DROPS.with_borrow(|dropped| dropped.contains(&relid)).into()
}

function_info_v1!(pg_finfo_integrity_drops_expired_partition);

/// `integrity._attaches_partition(pg_ddl_command) RETURNS boolean`
///
/// # Safety
/// Called by fmgr with the arguments its SQL declaration gives it.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn integrity_attaches_partition(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the function is STRICT and declared with one pg_ddl_command
    // argument, which ddl_command_end passes as a pointer to a live
    // CollectedCommand; an AlterTable command's subcommands are
    // CollectedATSubcmds whose parse trees are AlterTableCmds.
    unsafe {
        let command = (*fcinfo).args.as_slice(1)[0].value.cast_mut_ptr::<pg_sys::CollectedCommand>();
        if command.is_null() || (*command).type_ != pg_sys::CollectedCommandType::SCT_AlterTable {
            return false.into();
        }
        let subcommands = (*command).d.alterTable.subcmds;
        let attaches = (0..pg_sys::list_length(subcommands)).any(|i| {
            let subcommand = pg_sys::list_nth(subcommands, i) as *const pg_sys::CollectedATSubcmd;
            let parsetree = (*subcommand).parsetree as *const pg_sys::AlterTableCmd;
            (*parsetree).subtype == pg_sys::AlterTableType::AT_AttachPartition
        });
        attaches.into()
    }
}

function_info_v1!(pg_finfo_integrity_attaches_partition);

/// `integrity._renames(pg_ddl_command) RETURNS boolean`: `… RENAME` and
/// `… SET SCHEMA` commands.
///
/// # Safety
/// Called by fmgr with the arguments its SQL declaration gives it.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn integrity_renames(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: as above; every collected command keeps its parse tree, a Node
    // whose tag can be read whatever its type.
    unsafe {
        let command = (*fcinfo).args.as_slice(1)[0].value.cast_mut_ptr::<pg_sys::CollectedCommand>();
        if command.is_null() || (*command).parsetree.is_null() {
            return false.into();
        }
        matches!(
            (*(*command).parsetree).type_,
            pg_sys::NodeTag::T_RenameStmt | pg_sys::NodeTag::T_AlterObjectSchemaStmt
        )
        .into()
    }
}

function_info_v1!(pg_finfo_integrity_renames);

/// `integrity._on_ddl_command_start()`, run by the `integrity_ddl_command_start`
/// event trigger: the commands that would rewrite or remove guarded rows are
/// refused before they do any work.  Only the parse tree tells which
/// subcommands an `ALTER TABLE` has and which extension a `DROP EXTENSION`
/// names; what is refused, and how it is worded, is decided in SQL
/// (`_refuse_history_ddl`, `_refuse_extension_drop`).
///
/// # Safety
/// Called by fmgr with the arguments its SQL declaration gives it.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn integrity_on_ddl_command_start(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the event trigger manager passes an EventTriggerData context
    // (checked) whose parse tree is the command's; each tree is cast to the
    // struct its node tag names.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            Error::NotCalledAsEventTrigger { function: "integrity._on_ddl_command_start()" }.raise();
        }
        let tree = (*context.cast::<pg_sys::EventTriggerData>()).parsetree;
        EXPIRED_DROPS.with_borrow_mut(Vec::clear);
        match (*tree).type_ {
            pg_sys::NodeTag::T_AlterTableStmt => alter_table(tree.cast()),
            pg_sys::NodeTag::T_DropStmt => drop(tree.cast()),
            _ => {}
        }
    }
    pg_sys::Datum::from(0)
}

function_info_v1!(pg_finfo_integrity_on_ddl_command_start);

/// `ALTER TABLE` (and `ALTER TYPE` of a composite type): the subcommands that
/// rewrite or remove the rows of an append-only table, or the values of a
/// column a guard keeps.
///
/// # Safety
/// `stmt` is the parse tree of the command being run.
unsafe fn alter_table(stmt: *mut pg_sys::AlterTableStmt) {
    // SAFETY: an AlterTableStmt's cmds are AlterTableCmds, and a DETACH
    // PARTITION's def is a PartitionCmd.
    unsafe {
        let relid = pg_sys::RangeVarGetRelidExtended(
            (*stmt).relation,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            core::ptr::null_mut(),
        );
        if relid == pg_sys::InvalidOid {
            return;
        }
        for i in 0..pg_sys::list_length((*stmt).cmds) {
            let cmd = pg_sys::list_nth((*stmt).cmds, i).cast::<pg_sys::AlterTableCmd>();
            let column = || format!("column \"{}\"", CStr::from_ptr((*cmd).name).to_string_lossy());
            let action = match (*cmd).subtype {
                pg_sys::AlterTableType::AT_AlterColumnType => {
                    refuse(
                        c"SELECT integrity._refuse_column_rewrite($1, $2)",
                        &[
                            (pg_sys::REGCLASSOID, pg_sys::Datum::from(relid)),
                            (pg_sys::TEXTOID, text_datum(CStr::from_ptr((*cmd).name).to_string_lossy().into_owned())),
                        ],
                    );
                    format!("change the type of {}", column())
                }
                pg_sys::AlterTableType::AT_DropColumn => format!("drop {}", column()),
                #[cfg(any(feature = "pg17", feature = "pg18"))]
                pg_sys::AlterTableType::AT_SetExpression => format!("change the generation expression of {}", column()),
                pg_sys::AlterTableType::AT_DetachPartition | pg_sys::AlterTableType::AT_DetachPartitionFinalize => {
                    // A partition past the table's retention may go (a
                    // hash-chained one not CONCURRENTLY).
                    let partition_cmd = (*cmd).def.cast::<pg_sys::PartitionCmd>();
                    let partition = pg_sys::RangeVarGetRelidExtended(
                        (*partition_cmd).name,
                        pg_sys::NoLock as pg_sys::LOCKMODE,
                        pg_sys::RVROption::RVR_MISSING_OK,
                        None,
                        core::ptr::null_mut(),
                    );
                    refuse(
                        c"SELECT integrity._refuse_detach($1, $2, $3)",
                        &[
                            (pg_sys::REGCLASSOID, pg_sys::Datum::from(relid)),
                            (pg_sys::REGCLASSOID, pg_sys::Datum::from(partition)),
                            (pg_sys::BOOLOID, pg_sys::Datum::from((*partition_cmd).concurrent)),
                        ],
                    );
                    continue;
                }
                _ => continue,
            };
            refuse(
                c"SELECT integrity._refuse_history_ddl($1, $2)",
                &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(relid)), (pg_sys::TEXTOID, text_datum(action))],
            );
        }
    }
}

/// `DROP EXTENSION pg_integrity` and `DROP SCHEMA integrity`, which would take
/// every guard with them; and `DROP TABLE` of a partition past its append-only
/// table's retention, which the sql_drop event trigger then lets through (the
/// anchors of a hash-chained table's chains moved past it first).
///
/// # Safety
/// `stmt` is the parse tree of the command being run.
unsafe fn drop(stmt: *mut pg_sys::DropStmt) {
    // SAFETY: extensions and schemas are named by lists of String nodes,
    // tables by lists of String nodes that make a qualified name; nothing
    // here needs dropping when a refusal raises.
    unsafe {
        let ours = match (*stmt).removeType {
            pg_sys::ObjectType::OBJECT_EXTENSION => c"pg_integrity",
            pg_sys::ObjectType::OBJECT_SCHEMA => c"integrity",
            pg_sys::ObjectType::OBJECT_TABLE => {
                let names = (*stmt).objects;
                for i in 0..pg_sys::list_length(names) {
                    let name = pg_sys::makeRangeVarFromNameList(pg_sys::list_nth(names, i).cast());
                    let relid = pg_sys::RangeVarGetRelidExtended(
                        name,
                        pg_sys::NoLock as pg_sys::LOCKMODE,
                        pg_sys::RVROption::RVR_MISSING_OK,
                        None,
                        core::ptr::null_mut(),
                    );
                    if relid != pg_sys::InvalidOid && pg_sys::get_rel_relispartition(relid) {
                        remember_expired_partition(relid);
                    }
                }
                return;
            }
            _ => return,
        };
        let names = (*stmt).objects;
        if (0..pg_sys::list_length(names)).any(|i| CStr::from_ptr(str_val(pg_sys::list_nth(names, i).cast())) == ours) {
            refuse(c"SELECT integrity._refuse_extension_drop()", &[]);
        }
    }
}

/// Remembers `relid` and its own partitions when it is a partition that may
/// go (`integrity._release_partition`, which refuses a hash-chained partition
/// that does not start its chains, and moves their anchors).  Run on the raw
/// SPI path, as `refuse` runs, so that its refusal reaches the client whole.
///
/// # Safety
/// Nothing that needs dropping may be pending in the callers' frames.
unsafe fn remember_expired_partition(relid: pg_sys::Oid) {
    spi_connect();
    let plan = prepare(c"SELECT integrity._release_partition($1, 'drop')", &mut [pg_sys::REGCLASSOID], 0, || {
        "releasing an expired partition".into()
    });
    // SAFETY: the statement takes one regclass; nothing here needs dropping
    // if it raises, nor in the callers' frames (the contract).
    unsafe { execute_plan(plan, &mut [pg_sys::Datum::from(relid)], &[b' ' as c_char], false) };
    if result_value(0, 1).is_some_and(|released| released.value() != 0) {
        let partitions = select_oids(
            c"SELECT t.relid::oid FROM pg_catalog.pg_partition_tree($1) t",
            &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(relid))],
            "looking up an expired partition",
        );
        EXPIRED_DROPS.with_borrow_mut(|dropped| dropped.extend(partitions));
    }
    spi_finish();
}

/// The string of a String node (a Value node before PostgreSQL 15).
///
/// # Safety
/// `node` is a String (Value) node.
unsafe fn str_val(node: *mut pg_sys::Node) -> *const c_char {
    #[cfg(feature = "pg14")]
    // SAFETY: a Value node of type T_String keeps its string in val.str_.
    unsafe {
        (*node.cast::<pg_sys::Value>()).val.str_
    }
    #[cfg(not(feature = "pg14"))]
    // SAFETY: as the function's contract says.
    unsafe {
        (*node.cast::<pg_sys::String>()).sval
    }
}

/// A text datum, palloc'd, of `s` (which is dropped here, before any error).
fn text_datum(s: String) -> pg_sys::Datum {
    let c = CString::new(s).expect("catalog names have no NUL");
    // SAFETY: cstring_to_text copies the string into the current memory context.
    pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(c.as_ptr()) })
}

/// Runs one of the refusal functions, which raises the error itself when the
/// command is refused: the raw SPI call lets the error reach the client with
/// all its fields.  Not read-only: a detach that is let through moves the
/// anchors of a hash-chained table first.
///
/// # Safety
/// Nothing that needs dropping may be pending in the callers' frames.
unsafe fn refuse(query: &CStr, args: &[(pg_sys::Oid, pg_sys::Datum)]) {
    let mut types = [pg_sys::InvalidOid; 3];
    let mut values = [pg_sys::Datum::from(0); 3];
    for (i, &(typ, value)) in args.iter().enumerate() {
        (types[i], values[i]) = (typ, value);
    }
    spi_connect();
    let plan = prepare(query, &mut types[..args.len()], 0, || format!("{query:?}"));
    // SAFETY: the statement takes arguments of the types passed with them.
    unsafe { execute_plan(plan, &mut values[..args.len()], &[b' ' as c_char; 3][..args.len()], false) };
    spi_finish();
}
