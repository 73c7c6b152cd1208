//! Reading the DDL commands an event trigger sees.  `pg_ddl_command` can only
//! be inspected from C: the event trigger needs to tell `ATTACH PARTITION`
//! apart from the other `ALTER TABLE` subcommands, so that it covers newly
//! attached partitions without acting on, say, the `ENABLE ALWAYS TRIGGER`
//! commands that pg_restore replays.

use pgrx::pg_guard;
use pgrx::pg_sys;

use crate::fmgr::function_info_v1;

/// `integrity._attaches_partition(pg_ddl_command) RETURNS boolean`
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn integrity_attaches_partition(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
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
