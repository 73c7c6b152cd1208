//! `integrity.enable_versioning`: optimistic locking in the database.
//!
//! `integrity_version_bump` (BEFORE UPDATE FOR EACH ROW) leaves every updated
//! row at `OLD.version + 1`.  In strict mode an UPDATE that sets the column to
//! anything but `OLD.version` (the "what you read" convention) or
//! `OLD.version + 1` (the "read + 1" convention) is a stale write and fails with
//! 40001, which clients already retry.  `integrity_version_check` (AFTER UPDATE
//! FOR EACH ROW WHEN the version is not `OLD.version + 1`) refuses a row whose
//! version a later BEFORE trigger rewrote; it runs no function otherwise.
//!
//! Both triggers are enabled for origin writes only: rows applied by logical
//! replication (`session_replication_role = replica`) already carry the version
//! their origin gave them and must not be bumped twice.
//!
//! An UPDATE that does not assign the version gets it from its own plan
//! instead (`update_plans`): `integrity._next_version(version, tbl, column)`
//! in its target list computes what the bump would, and the statement runs
//! without the triggers.
//!
//! The bump runs on every updated row, so its plan (attribute number, integer
//! width, mode) is resolved once per statement and kept in `fn_extra`; per row it
//! reads two attributes and returns a copy of the new row with the version
//! overwritten in place.

use core::ffi::{c_char, c_int, CStr};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::error::{Error, Refusal};
use crate::fmgr::guarded_function;
use crate::trigger::{trigger_entry, ColumnChange, Firing, Row, Verdict};

trigger_entry!(
    /// `BEFORE UPDATE FOR EACH ROW`, arguments `(version_column, 'strict' | 'lenient')`.
    integrity_version_bump,
    pg_finfo_integrity_version_bump,
    bump
);

trigger_entry!(
    /// `AFTER UPDATE FOR EACH ROW WHEN (NEW.v IS DISTINCT FROM COALESCE(OLD.v + 1, 1))`,
    /// argument `(version_column)`.
    integrity_version_check,
    pg_finfo_integrity_version_check,
    refuse_rewritten_version
);

guarded_function!(
    /// `integrity._next_version(version smallint, tbl regclass, column name) RETURNS smallint`
    integrity_next_version_int2,
    pg_finfo_integrity_next_version_int2,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { next_version(fcinfo, i16::MAX as i64) }
    }
);

guarded_function!(
    /// `integrity._next_version(version integer, tbl regclass, column name) RETURNS integer`
    integrity_next_version_int4,
    pg_finfo_integrity_next_version_int4,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { next_version(fcinfo, i32::MAX as i64) }
    }
);

guarded_function!(
    /// `integrity._next_version(version bigint, tbl regclass, column name) RETURNS bigint`
    integrity_next_version_int8,
    pg_finfo_integrity_next_version_int8,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { next_version(fcinfo, i64::MAX) }
    }
);

/// The version the bump would give a row at `version`: one more (1 for a
/// row without one); the row's own where the bump would not fire, in a
/// session that applies replicated rows.
///
/// # Safety
/// `fcinfo` is a call of one of the `_next_version` declarations, whose
/// version is an integer of `max`'s width.
unsafe fn next_version(fcinfo: pg_sys::FunctionCallInfo, max: i64) -> Verdict {
    // SAFETY: three arguments (the declaration); the column name, once
    // checked not NULL, is a NameData.
    unsafe {
        let args = (*fcinfo).args.as_slice(3);
        if pg_sys::SessionReplicationRole == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as i32 {
            (*fcinfo).isnull = args[0].isnull;
            return Verdict::Allow(args[0].value);
        }
        for (argument, name) in [(&args[1], "tbl"), (&args[2], "version_column")] {
            if argument.isnull {
                Error::NullArgument { caller: "_next_version".into(), argument: name }.raise();
            }
        }
        if args[0].isnull {
            return Verdict::Allow(pg_sys::Datum::from(1));
        }
        let version = datum_to_i64(args[0].value, max);
        if version >= max {
            let relid = pg_sys::Oid::from(args[1].value.value() as u32);
            let column = &*(args[2].value.cast_mut_ptr::<pg_sys::NameData>());
            let table = pg_sys::get_rel_name(relid);
            Error::VersionOutOfRange {
                column: pgrx::name_data_to_str(column).to_string(),
                table: if table.is_null() {
                    relid.to_u32().to_string()
                } else {
                    CStr::from_ptr(table).to_string_lossy().into_owned()
                },
            }
            .raise()
        }
        Verdict::Allow(pg_sys::Datum::from(version + 1))
    }
}

/// Resolved once per statement.
struct VersionPlan {
    attnum: i16,
    /// Largest value the column's integer type holds.
    max: i64,
    strict: bool,
}

fn bump(firing: &Firing) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_UPDATE || !firing.is_row() || !firing.is_before() {
        firing.misuse();
    }
    let plan = version_plan(firing);
    let (old, new) = (firing.trigtuple(), firing.newtuple());
    let (old_value, old_null) = firing.value(old, plan.attnum);
    let (new_value, new_null) = firing.value(new, plan.attnum);
    let read = (!old_null).then(|| datum_to_i64(old_value, plan.max));
    let written = (!new_null).then(|| datum_to_i64(new_value, plan.max));

    // A row without a version (legacy data) starts counting at 1.
    let next = match read {
        None => 1,
        Some(v) if v >= plan.max => out_of_range(firing, plan),
        Some(v) => v + 1,
    };
    if plan.strict {
        if let Some(read) = read {
            if written != Some(read) && written != Some(next) {
                return firing.refuse(stale_write(firing, plan, read, written));
            }
        }
    }
    if written == Some(next) {
        return Verdict::Allow(new.datum());
    }
    if let Some(bumped) = overwrite_in_copy(firing, plan, new, next) {
        return Verdict::Allow(pg_sys::Datum::from(bumped));
    }
    let mut replace_col: c_int = plan.attnum.into();
    let mut value = pg_sys::Datum::from(next);
    let mut is_null = false;
    // SAFETY: the firing's new row and its relation's descriptor; one
    // replacement for an attribute number resolved in that descriptor.
    let bumped = unsafe {
        pg_sys::heap_modify_tuple_by_cols(
            new.as_ptr(),
            firing.tupdesc(),
            1,
            &raw mut replace_col,
            &raw mut value,
            &raw mut is_null,
        )
    };
    Verdict::Allow(pg_sys::Datum::from(bumped))
}

/// The bumped row as a copy of `new` with the version overwritten where it
/// lies: one memcpy, instead of deforming and forming the whole row as
/// `heap_modify_tuple_by_cols` does.  `None` when the version in `new` is NULL
/// or missing from the tuple (a column added later): the caller rebuilds the
/// row then.
fn overwrite_in_copy(firing: &Firing, plan: &VersionPlan, new: Row, next: i64) -> Option<pg_sys::HeapTuple> {
    let offset = attribute_offset(firing, new, plan.attnum)?;
    if cfg!(debug_assertions) {
        // SAFETY: `new` is the firing's new row and `offset` was just
        // computed for its version column.
        unsafe { cross_check_offset(firing, plan, new, offset) };
    }
    // SAFETY: the copy has the same layout as `new`, so the version (not
    // NULL, an integer of plan.max's width) lies at `offset` in its data
    // area; the data area is MAXALIGN'd (t_hoff, and palloc's copy), and the
    // offset aligned for the column's type, so the write is aligned.
    unsafe {
        let copy = pg_sys::heap_copytuple(new.as_ptr());
        let header = (*copy).t_data;
        let field = (header as *mut u8).add((*header).t_hoff as usize + offset);
        match plan.max {
            m if m == i16::MAX as i64 => (field as *mut i16).write(next as i16),
            m if m == i32::MAX as i64 => (field as *mut i32).write(next as i32),
            _ => (field as *mut i64).write(next),
        }
        Some(copy)
    }
}

/// Byte offset of attribute `attnum` in the data area of `tuple`, walking the
/// attributes before it as `nocachegetattr` does; `None` if it is NULL or
/// beyond the tuple's attributes.
fn attribute_offset(firing: &Firing, tuple: Row, attnum: i16) -> Option<usize> {
    // SAFETY: one of the firing's rows, a well-formed tuple of the relation's
    // descriptor: its null bitmap (if HEAP_HASNULL) covers its natts
    // attributes, and its data area holds each attribute that is not NULL,
    // aligned as the descriptor says, which is what the walk reads; only
    // attributes up to `attnum` (<= the tuple's natts, checked, and one of
    // the descriptor's: `Firing::attribute` checks) are read.
    unsafe {
        let header = (*tuple.as_ptr()).t_data;
        if attnum as u16 > pg_sys::HeapTupleHeaderGetNatts(header) {
            return None;
        }
        let has_nulls = (*header).t_infomask & pg_sys::HEAP_HASNULL as u16 != 0;
        let bits = (*header).t_bits.as_ptr();
        let data = (header as *const u8).add((*header).t_hoff as usize);
        let mut offset = 0usize;
        for index in 0..attnum as usize {
            let is_null = has_nulls && *bits.add(index >> 3) & (1 << (index & 7)) == 0;
            let target = index + 1 == attnum as usize;
            if is_null {
                if target {
                    return None;
                }
                continue;
            }
            let attribute = firing.attribute(index as i16 + 1);
            // A varlena with a 1-byte header is not aligned (att_align_pointer).
            if attribute.attlen != -1 || *data.add(offset) == 0 {
                offset = align(offset, attribute.attalign as u8);
            }
            if target {
                return Some(offset);
            }
            offset += match attribute.attlen {
                -1 => pgrx::varlena::varsize_any(data.add(offset) as *const pg_sys::varlena),
                -2 => CStr::from_ptr(data.add(offset) as *const c_char).to_bytes().len() + 1,
                len => len as usize,
            };
        }
        None
    }
}

/// Debug builds: the version that `attribute_offset` found in `tuple` is the
/// one PostgreSQL's own `nocachegetattr` reads there (it walks the same
/// attributes, or uses the descriptor's cached offsets).
///
/// # Safety
/// `tuple` is a row of the firing relation, and `offset` what
/// `attribute_offset` returned for its version column (which is not NULL).
unsafe fn cross_check_offset(firing: &Firing, plan: &VersionPlan, tuple: Row, offset: usize) {
    // SAFETY: the field lies within the tuple's data area (the contract), and
    // nocachegetattr reads an attribute that is not NULL of a tuple of the
    // descriptor.
    let (ours, theirs) = unsafe {
        let header = (*tuple.as_ptr()).t_data;
        let field = (header as *const u8).add((*header).t_hoff as usize + offset);
        let ours = match plan.max {
            m if m == i16::MAX as i64 => i64::from(field.cast::<i16>().read_unaligned()),
            m if m == i32::MAX as i64 => i64::from(field.cast::<i32>().read_unaligned()),
            _ => field.cast::<i64>().read_unaligned(),
        };
        let theirs = pg_sys::nocachegetattr(tuple.as_ptr(), plan.attnum.into(), firing.tupdesc());
        (ours, datum_to_i64(theirs, plan.max))
    };
    debug_assert_eq!(ours, theirs, "attribute_offset disagrees with nocachegetattr at offset {offset}");
}

fn align(offset: usize, alignment: u8) -> usize {
    let to = match alignment {
        pg_sys::TYPALIGN_CHAR => 1,
        pg_sys::TYPALIGN_SHORT => 2,
        pg_sys::TYPALIGN_INT => 4,
        _ => 8,
    };
    (offset + to - 1) & !(to - 1)
}

/// The integer widths a version column may have, read back from a datum
/// (PostgreSQL stores int2/int4 datums sign-extended).
fn datum_to_i64(value: pg_sys::Datum, max: i64) -> i64 {
    let raw = value.value() as i64;
    match max {
        m if m == i16::MAX as i64 => raw as i16 as i64,
        m if m == i32::MAX as i64 => raw as i32 as i64,
        _ => raw,
    }
}

fn version_plan<'f>(firing: &'f Firing) -> &'f VersionPlan {
    firing.statement_plan(|| {
        let mut args = firing.args();
        let column = args.next().unwrap_or(c"version");
        let strict = args.next() != Some(c"lenient");
        let attnum = firing.attnum(column).unwrap_or_else(|| firing.missing_column(column));
        let attribute = firing.attribute(attnum);
        let max = match attribute.atttypid {
            pg_sys::INT2OID => i16::MAX as i64,
            pg_sys::INT4OID => i32::MAX as i64,
            pg_sys::INT8OID => i64::MAX,
            _ => firing.wrong_column_type(attnum, "smallint, integer or bigint"),
        };
        VersionPlan { attnum, max, strict }
    })
}

fn refuse_rewritten_version(firing: &Firing) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_UPDATE || !firing.is_row() {
        firing.misuse();
    }
    let column = firing.args().next().unwrap_or(c"version");
    let attnum = firing.attnum(column).unwrap_or_else(|| firing.missing_column(column));
    let ColumnChange { column, table, key, qualified, old, new } = firing.column_change(attnum);
    firing.refuse(Refusal {
        code: PgSqlErrorCode::ERRCODE_RESTRICT_VIOLATION,
        message: format!("version column \"{column}\" of table \"{table}\" must advance by exactly one per update"),
        detail: format!("{key} in table {qualified}: {column} would go from {old} to {new}."),
        hint: format!(
            "A BEFORE UPDATE trigger that runs after integrity_version_bump rewrote {column}; leave the column to pg_integrity."
        ),
        column: Some(attnum),
    })
}

fn stale_write(firing: &Firing, plan: &VersionPlan, read: i64, written: Option<i64>) -> Refusal {
    let column = pgrx::name_data_to_str(&firing.attribute(plan.attnum).attname);
    let written = written.map_or_else(|| "NULL".to_string(), |v| v.to_string());
    Refusal {
        code: PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        message: format!("could not update row of table \"{}\": stale {column}", firing.table_name()),
        detail: format!(
            "{} in table {}: the UPDATE sets {column} to {written}, but the row is at {column} {read} (expected {read} or {}).",
            firing.row_key(firing.trigtuple()),
            firing.qualified_table_name(),
            read + 1
        ),
        hint: "Another transaction changed the row after it was read: re-read it and retry with its current version."
            .into(),
        column: Some(plan.attnum),
    }
}

fn out_of_range(firing: &Firing, plan: &VersionPlan) -> ! {
    Error::VersionOutOfRange {
        column: pgrx::name_data_to_str(&firing.attribute(plan.attnum).attname).to_string(),
        table: firing.table_name(),
    }
    .raise()
}
