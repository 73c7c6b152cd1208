//! Reading the DDL commands an event trigger sees.  `pg_ddl_command` can only
//! be inspected from C: the event trigger needs to tell `ATTACH PARTITION`
//! apart from the other `ALTER TABLE` subcommands, so that it covers newly
//! attached partitions without acting on, say, the `ENABLE ALWAYS TRIGGER`
//! commands that pg_restore replays; and a rename or schema move, after which
//! a table is no longer found under the name a guard keeps, from the rest.

use pgrx::pg_guard;
use pgrx::pg_sys;

use crate::fmgr::function_info_v1;

/// `integrity._attaches_partition(pg_ddl_command) RETURNS boolean`
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
