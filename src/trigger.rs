//! What every guard trigger shares: the entry-point shape, access to the
//! firing `TriggerData`, and the row key that errors report.

use core::ffi::{c_char, c_int, CStr};
use core::marker::PhantomData;
use std::cell::RefCell;

use pgrx::pg_sys;

use crate::error::{Error, Refusal, Registration};
use crate::fmgr::getvalue;

unsafe extern "C-unwind" {
    pub(crate) fn datum_image_eq(
        value1: pg_sys::Datum,
        value2: pg_sys::Datum,
        typ_by_val: bool,
        typ_len: core::ffi::c_int,
    ) -> bool;
}

pub use crate::fmgr::Verdict;

/// Declares a trigger function callable from SQL: `$guard(&Firing) ->
/// Verdict`.  A `Firing` exists only inside its trigger call (see
/// `Firing::with`), so most guards are safe functions; the ones that run SQL
/// through `execute_plan` are `unsafe fn`s whose contract is that no frame
/// of theirs or their callers' needs dropping, which holds here: the entry
/// point's frames are `guarded_function!`'s and `Firing::with`'s.
macro_rules! trigger_entry {
    ($(#[$doc:meta])* $symbol:ident, $finfo:ident, $guard:path) => {
        $crate::fmgr::guarded_function!(
            $(#[$doc])*
            $symbol,
            $finfo,
            |fcinfo| {
                // SAFETY: fcinfo is the running call's (the body's contract);
                // the guard runs on its firing, and its callers' frames hold
                // nothing that needs dropping (a guard's contract, if unsafe).
                unsafe { $crate::trigger::Firing::with(fcinfo, |firing| $guard(firing)) }
            }
        );
    };
}
pub(crate) use trigger_entry;

/// One firing of a guard trigger: the `TriggerData` PostgreSQL passed,
/// borrowed for the trigger call `'a` (it lives in the executor's memory for
/// at least that long, and no longer than the statement).
pub struct Firing<'a> {
    fcinfo: pg_sys::FunctionCallInfo,
    pub data: &'a pg_sys::TriggerData,
}

impl Firing<'_> {
    /// Runs `guard` on the firing PostgreSQL passed in `fcinfo`; raises if the
    /// function was not called as a trigger.  The firing is lent to `guard`
    /// for the call only: nothing it borrows can outlive the call.
    ///
    /// # Safety
    /// `fcinfo` must be the call info PostgreSQL passed to the running
    /// function, valid until it returns.
    pub unsafe fn with<R>(fcinfo: pg_sys::FunctionCallInfo, guard: impl FnOnce(&Firing<'_>) -> R) -> R {
        // SAFETY: fcinfo is valid for the call (the contract); a context of
        // tag T_TriggerData is the TriggerData the trigger manager passes,
        // which stays valid and unchanged until the trigger function returns.
        let data = unsafe {
            let context = (*fcinfo).context;
            if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
                Error::NotCalledAsTrigger.raise();
            }
            &*(context as *const pg_sys::TriggerData)
        };
        guard(&Firing { fcinfo, data })
    }
}

/// A row the trigger manager passed with a firing, its `tg_trigtuple` or
/// `tg_newtuple`: a tuple of the firing relation's descriptor, valid for the
/// trigger call `'a`.  Only `Firing::trigtuple` and `Firing::newtuple` make
/// one, so a `Row` is always one of a firing's rows.
#[derive(Clone, Copy, PartialEq)]
pub struct Row<'a> {
    tuple: pg_sys::HeapTuple,
    call: PhantomData<&'a pg_sys::HeapTupleData>,
}

impl Row<'_> {
    /// The tuple, for the backend functions that take one.
    pub fn as_ptr(self) -> pg_sys::HeapTuple {
        self.tuple
    }

    /// The row as a trigger function returns it.
    pub fn datum(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.tuple)
    }
}

impl<'a> Firing<'a> {
    /// The row of a row trigger: the one inserted or deleted, or the old row
    /// of an UPDATE.  A guard function attached to a statement trigger by
    /// hand has none: that is a misuse.
    pub fn trigtuple(&self) -> Row<'a> {
        self.row(self.data.tg_trigtuple)
    }

    /// The new row of an UPDATE row trigger (a misuse elsewhere).
    pub fn newtuple(&self) -> Row<'a> {
        self.row(self.data.tg_newtuple)
    }

    fn row(&self, tuple: pg_sys::HeapTuple) -> Row<'a> {
        if tuple.is_null() {
            self.misuse();
        }
        Row { tuple, call: PhantomData }
    }

    pub fn event(&self) -> u32 {
        self.data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK
    }

    pub fn is_before(&self) -> bool {
        self.data.tg_event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE
    }

    pub fn is_row(&self) -> bool {
        self.data.tg_event & pg_sys::TRIGGER_EVENT_ROW != 0
    }

    pub fn relation(&self) -> pg_sys::Relation {
        self.data.tg_relation
    }

    pub fn tupdesc(&self) -> pg_sys::TupleDesc {
        // SAFETY: tg_relation is the open relation the trigger fires on, valid
        // for the whole call.
        unsafe { (*self.data.tg_relation).rd_att }
    }

    pub fn trigger(&self) -> &'a pg_sys::Trigger {
        // SAFETY: tg_trigger points into the relation's trigger descriptor,
        // which the executor keeps, unchanged, for at least the call.
        unsafe { &*self.data.tg_trigger }
    }

    /// The trigger's name, reported as the error's constraint name.
    pub fn trigger_name(&self) -> *const c_char {
        self.trigger().tgname
    }

    /// The trigger's name, for messages.
    pub fn trigger_name_text(&self) -> String {
        // SAFETY: tgname is the trigger's NUL-terminated name, as long-lived
        // as the Trigger it belongs to.
        unsafe { CStr::from_ptr(self.trigger_name()) }.to_string_lossy().into_owned()
    }

    /// The arguments of `CREATE TRIGGER … EXECUTE FUNCTION f(args)`.
    pub fn args(&self) -> impl Iterator<Item = &'a CStr> + 'a {
        trigger_args(self.trigger())
    }

    /// The plan `make` resolves at the trigger's first firing in a statement,
    /// kept in `fn_extra` for the rest of it.  Each partition has its own
    /// `FmgrInfo`, so a plan is per partition too (its attribute numbers can
    /// differ).  `make` may raise: nothing is stored until it returns.
    pub fn statement_plan<T>(&self, make: impl FnOnce() -> T) -> &T {
        // The plan lives in fn_mcxt, which PostgreSQL frees without running
        // destructors, in memory aligned for any C type (MAXALIGN).
        const { assert!(!core::mem::needs_drop::<T>()) };
        const { assert!(core::mem::align_of::<T>() <= 8) };
        // SAFETY: flinfo is the trigger's FmgrInfo, which lives as long as the
        // statement's executor state, longer than the returned borrow of
        // self; fn_extra is null or a plan this function stored with the same
        // T (each trigger function plans one type), initialized before the
        // pointer is published.
        unsafe {
            let flinfo = (*self.fcinfo).flinfo;
            if (*flinfo).fn_extra.is_null() {
                let plan = make();
                let memory = pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, size_of::<T>()) as *mut T;
                memory.write(plan);
                (*flinfo).fn_extra = memory.cast();
            }
            &*((*flinfo).fn_extra as *const T)
        }
    }

    pub fn plan_memory_context(&self) -> pg_sys::MemoryContext {
        // SAFETY: fcinfo and its flinfo are valid for the call.
        unsafe { (*(*self.fcinfo).flinfo).fn_mcxt }
    }

    /// A guard function attached by hand with events or a level it does not handle.
    pub fn misuse(&self) -> ! {
        Error::UnhandledEvents { trigger: self.trigger_name_text(), table: self.table_name() }.raise()
    }

    /// A column the trigger's arguments name whose type the guard cannot
    /// handle: registration refuses such columns, but anyone can attach a guard
    /// function to a table of their own by hand, and `ALTER COLUMN … TYPE` can
    /// change a column later.
    pub fn wrong_column_type(&self, attnum: i16, expected: &str) -> ! {
        let attribute = self.attribute(attnum);
        // SAFETY: format_type_be returns a palloc'd NUL-terminated name (or
        // raises), copied out below before the context can be reset.
        let type_name = unsafe { CStr::from_ptr(pg_sys::format_type_be(attribute.atttypid)) };
        Error::WrongColumnType {
            column: pgrx::name_data_to_str(&attribute.attname).to_string(),
            trigger: self.trigger_name_text(),
            table: self.table_name(),
            actual: type_name.to_string_lossy().into_owned(),
            expected: expected.to_string(),
        }
        .raise()
    }

    /// A guarded column that was dropped or renamed since registration.
    pub fn missing_column(&self, column: &CStr) -> ! {
        Error::MissingColumn {
            column: column.to_string_lossy().into_owned(),
            trigger: self.trigger_name_text(),
            table: self.table_name(),
        }
        .raise()
    }

    /// A guard trigger whose table has no registration of its kind: the
    /// registry row was deleted, or the function attached by hand.
    pub fn not_registered(&self, guard: Registration) -> ! {
        Error::NotRegistered { trigger: self.trigger_name_text(), table: self.table_name(), guard }.raise()
    }

    /// Refuses with `refusal`, reported against this trigger's table.
    pub fn refuse(&self, refusal: Refusal) -> Verdict {
        // SAFETY: the relation and the trigger's name stay valid until the
        // verdict is raised, at the end of this same trigger call.
        Verdict::Refuse(unsafe { refusal.violation(self.relation(), self.trigger_name()) })
    }

    /// Unqualified table name, for messages (`"ledger_entries"`).
    pub fn table_name(&self) -> String {
        // SAFETY: the firing relation is open, and its rd_rel with it.
        unsafe { pgrx::name_data_to_str(&(*(*self.relation()).rd_rel).relname).to_string() }
    }

    /// Schema-qualified, quoted table name, for DETAIL (`public.ledger_entries`).
    pub fn qualified_table_name(&self) -> String {
        // SAFETY: the firing relation is open for the whole call.
        qualified_name(unsafe { (*self.relation()).rd_id })
    }

    /// Attribute number of `name` in the firing relation, if it is a live column.
    pub fn attnum(&self, name: &CStr) -> Option<i16> {
        // SAFETY: the relation's descriptor, valid for the call.
        unsafe { column_attnum(self.tupdesc(), name) }
    }

    /// Raises unless `attnum` is one of the firing relation's attribute
    /// numbers (1 ..= natts): every attribute number comes from `attnum` or
    /// the relation's own indexes, so this never raises, but what reads the
    /// descriptor or a row at `attnum` relies on it.
    fn check_attnum(&self, attnum: i16) {
        // SAFETY: the firing relation's descriptor, valid for the call.
        let natts = unsafe { (*self.tupdesc()).natts };
        if attnum < 1 || i32::from(attnum) > natts {
            Error::NoSuchAttribute { table: self.table_name(), attnum }.raise();
        }
    }

    /// The firing relation's attribute `attnum` (1-based).
    pub fn attribute(&self, attnum: i16) -> &'a pg_sys::FormData_pg_attribute {
        self.check_attnum(attnum);
        // SAFETY: the trigger's relation descriptor outlives the call ('a),
        // and attnum is one of its attribute numbers (checked).
        unsafe { tuple_desc_attr(self.tupdesc(), attnum) }
    }

    /// The column's value in `row` and whether it is null.  A by-reference
    /// value points into the row (or into a detoasted copy in the current
    /// memory context).
    pub fn value(&self, row: Row<'_>, attnum: i16) -> (pg_sys::Datum, bool) {
        self.check_attnum(attnum);
        let mut is_null = false;
        // SAFETY: one of the firing's rows, a tuple of this relation's
        // descriptor valid for the call, and one of its attribute numbers
        // (checked); heap_getattr handles attributes the tuple predates.
        let value = unsafe { pg_sys::heap_getattr(row.tuple, attnum.into(), self.tupdesc(), &mut is_null) };
        (value, is_null)
    }

    /// Whether column `attnum` holds the same value in both tuples, compared
    /// binarily (detoasting as needed): `1.0` and `1.00` differ, as they would
    /// to anyone reading the row back; two NULLs are the same.
    pub fn same_value(&self, a: Row<'_>, b: Row<'_>, attnum: i16) -> bool {
        let ((a, a_null), (b, b_null)) = (self.value(a, attnum), self.value(b, attnum));
        if a_null || b_null {
            return a_null == b_null;
        }
        let attribute = self.attribute(attnum);
        if attribute.attbyval {
            return a == b;
        }
        // SAFETY: both datums are by-reference values of attribute attnum of
        // rows of this relation (`value`), at least attlen bytes long for a
        // fixed-length type, or varlenas (possibly TOAST pointers) whose
        // header gives their size; datum_image_eq (which may raise:
        // guarded) compares two values of the attribute's type.
        unsafe {
            let (pa, pb) = (a.cast_mut_ptr::<u8>() as *const u8, b.cast_mut_ptr::<u8>() as *const u8);
            let same_bytes = |len: usize| core::slice::from_raw_parts(pa, len) == core::slice::from_raw_parts(pb, len);
            match attribute.attlen {
                len if len > 0 => return same_bytes(len as usize),
                // An unchanged column keeps its bytes, its TOAST pointer
                // included: equal without detoasting anything.
                -1 if pgrx::varlena::varsize_any(pa.cast()) == pgrx::varlena::varsize_any(pb.cast())
                    && same_bytes(pgrx::varlena::varsize_any(pa.cast())) =>
                {
                    return true
                }
                _ => {}
            }
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                datum_image_eq(a, b, attribute.attbyval, core::ffi::c_int::from(attribute.attlen))
            })
        }
    }

    /// The column's value in `row` as text, `NULL` for a null.
    pub fn value_text(&self, row: Row<'_>, attnum: i16) -> String {
        // SAFETY: one of the firing's rows, a tuple of this relation's
        // descriptor (SPI_getvalue checks the attribute number); the text is
        // copied out at once.
        unsafe { getvalue(row.tuple, self.tupdesc(), attnum.into()) }
            .map_or_else(|| "NULL".to_string(), |text| text.to_string_lossy().into_owned())
    }

    /// What the refusal of an UPDATE of column `attnum` says about it.
    pub fn column_change(&self, attnum: i16) -> ColumnChange<'a> {
        let (old, new) = (self.trigtuple(), self.newtuple());
        ColumnChange {
            column: pgrx::name_data_to_str(&self.attribute(attnum).attname),
            table: self.table_name(),
            key: self.row_key(old),
            qualified: self.qualified_table_name(),
            old: self.value_text(old, attnum),
            new: self.value_text(new, attnum),
        }
    }

    /// `Key (a, b)=(1, 2)`, from the primary key, else the replica identity
    /// index, else the tuple's physical location, as PostgreSQL's own unique
    /// violations word it.
    pub fn row_key(&self, row: Row<'_>) -> String {
        let columns = self.key_columns();
        if columns.is_empty() {
            // SAFETY: one of the firing's rows, valid for the call.
            let tid = unsafe { (*row.tuple).t_self };
            let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
            return format!("Row (ctid)=({block},{})", tid.ip_posid);
        }
        let names: Vec<&str> =
            columns.iter().map(|&attnum| pgrx::name_data_to_str(&self.attribute(attnum).attname)).collect();
        let values: Vec<String> = columns.iter().map(|&attnum| self.value_text(row, attnum)).collect();
        format!("Key ({})=({})", names.join(", "), values.join(", "))
    }

    /// The columns that identify a row, in column order: those of the primary
    /// key (deferrable or not), else those of the replica identity index,
    /// else none; the choice `integrity._key_columns()` makes for reports
    /// (tests/sql/15_row_key.sql holds the two to it).
    fn key_columns(&self) -> Vec<i16> {
        let rel = self.relation();
        let mut identity = Vec::new();
        // SAFETY: the firing relation is open; its index list is a palloc'd
        // list of OIDs (NIL when empty), read only here.
        let indexes = unsafe { pg_sys::RelationGetIndexList(rel) };
        // SAFETY: a non-NIL list has length elements.
        let count = if indexes.is_null() { 0 } else { unsafe { (*indexes).length } };
        for i in 0..count as usize {
            // SAFETY: i < length; the cells of an OID list hold OIDs.
            let index = unsafe { (*(*indexes).elements.add(i)).oid_value };
            // SAFETY: a syscache lookup by OID, checked for NULL; the fixed
            // part of a pg_index tuple (indkey included) is a FormData_pg_index
            // whose indkey holds indnatts attribute numbers, read before the
            // tuple is released.
            let (primary, replica_identity, mut columns) = unsafe {
                let tuple = pg_sys::SearchSysCache1(
                    pg_sys::SysCacheIdentifier::INDEXRELID as c_int,
                    pg_sys::Datum::from(index),
                );
                if tuple.is_null() {
                    Error::CacheLookup(index).raise();
                }
                let form = &*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_index);
                let columns = form.indkey.values.as_slice(form.indnkeyatts as usize).to_vec();
                let found = (form.indisprimary, form.indisreplident, columns);
                pg_sys::ReleaseSysCache(tuple);
                found
            };
            columns.sort_unstable();
            if primary {
                return columns;
            }
            // SAFETY: the open relation's pg_class entry.
            if replica_identity && unsafe { (*(*rel).rd_rel).relreplident } == b'i' as c_char {
                identity = columns;
            }
        }
        identity
    }
}

/// A column an UPDATE changed, in the words of its refusal: the names for the
/// message, the row and both values (as text, `NULL` for a null) for DETAIL.
pub struct ColumnChange<'a> {
    pub column: &'a str,
    /// Unqualified (`Firing::table_name`).
    pub table: String,
    /// `Firing::row_key` of the old row.
    pub key: String,
    /// Schema-qualified, quoted (`Firing::qualified_table_name`).
    pub qualified: String,
    pub old: String,
    pub new: String,
}

/// The owner of relation `relid`; raises if there is no such relation.
pub fn relation_owner(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: a syscache lookup by OID, NULL (checked) when there is no such
    // relation; a pg_class tuple's fixed part is a FormData_pg_class, read
    // before the tuple is released, and nothing can fail in between.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as c_int, pg_sys::Datum::from(relid));
        if tuple.is_null() {
            Error::CacheLookup(relid).raise();
        }
        let owner = (*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_class)).relowner;
        pg_sys::ReleaseSysCache(tuple);
        owner
    }
}

/// Schema-qualified, quoted name of relation `relid` (its OID, as `regclass`
/// prints it, if there is no such relation: callers hold it open or locked).
pub fn qualified_name(relid: pg_sys::Oid) -> String {
    // SAFETY: catalog lookups by OID, which return palloc'd names or NULL for
    // a relation (or schema) that is gone; quote_qualified_identifier takes a
    // NULL schema but not a NULL name, which is checked.  The result is
    // palloc'd and copied out at once.
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        if name.is_null() {
            return relid.to_u32().to_string();
        }
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        let qualified = pg_sys::quote_qualified_identifier(schema, name);
        CStr::from_ptr(qualified).to_string_lossy().into_owned()
    }
}

/// `TupleDescAttr(tupdesc, attnum - 1)`, a static inline function in C (so not
/// in the bindings): the descriptor's attribute array moved behind
/// `compact_attrs` in PostgreSQL 18.
///
/// # Safety
/// `tupdesc` must be a valid descriptor that outlives `'a`, and `attnum` one of
/// its attribute numbers (1 ..= natts).
pub unsafe fn tuple_desc_attr<'a>(tupdesc: pg_sys::TupleDesc, attnum: i16) -> &'a pg_sys::FormData_pg_attribute {
    // SAFETY: a valid descriptor (the contract).
    debug_assert!(attnum >= 1 && i32::from(attnum) <= unsafe { (*tupdesc).natts });
    let index = attnum as usize - 1;
    #[cfg(not(feature = "pg18"))]
    // SAFETY: a valid descriptor (the contract), whose attrs array follows it.
    let attrs = unsafe { (*tupdesc).attrs.as_ptr() };
    #[cfg(feature = "pg18")]
    // SAFETY: a valid descriptor (the contract): in PostgreSQL 18 the natts
    // FormData_pg_attribute follow its natts CompactAttributes, as
    // TupleDescAttr computes.
    let attrs = unsafe {
        (*tupdesc).compact_attrs.as_ptr().add((*tupdesc).natts as usize).cast::<pg_sys::FormData_pg_attribute>()
    };
    // SAFETY: index < natts (the contract), and the descriptor outlives 'a.
    unsafe { &*attrs.add(index) }
}

/// Takes the row triggers for which `leave_out` holds out of `relation`'s
/// triggers for one statement, and clears the descriptor's row-level flags
/// that no remaining trigger sets (statement-level triggers are kept).
///
/// # Safety
/// `relation` is a result relation of a statement that started (its trigger
/// descriptor is the statement's own copy, `InitResultRelInfo`) and whose
/// triggers have not fired yet: the descriptor's arrays of functions and
/// WHEN clauses, indexed like its triggers, are still empty, so triggers may
/// move down in it.
pub unsafe fn leave_out_of_statement(
    relation: *mut pg_sys::ResultRelInfo,
    leave_out: impl Fn(&pg_sys::Trigger) -> bool,
) {
    // SAFETY: an open result relation with the statement's own descriptor
    // (the contract), whose array holds numtriggers triggers.
    unsafe {
        let desc = (*relation).ri_TrigDesc;
        if desc.is_null() {
            return;
        }
        let all = core::slice::from_raw_parts_mut((*desc).triggers, (*desc).numtriggers as usize);
        let mut kept = 0;
        for i in 0..all.len() {
            if all[i].tgtype as u32 & pg_sys::TRIGGER_TYPE_ROW == 0 || !leave_out(&all[i]) {
                all[kept] = all[i];
                kept += 1;
            }
        }
        if kept == all.len() {
            return;
        }
        (*desc).numtriggers = kept as c_int;
        let kept = &all[..kept];
        // As SetTriggerFlags sets them, for the row triggers left.
        let any = |timing: u32, event: u32| {
            kept.iter().any(|t| {
                let tgtype = t.tgtype as u32;
                tgtype & pg_sys::TRIGGER_TYPE_ROW != 0
                    && tgtype & (pg_sys::TRIGGER_TYPE_BEFORE | pg_sys::TRIGGER_TYPE_INSTEAD) == timing
                    && tgtype & event != 0
            })
        };
        let (before, after, instead) = (pg_sys::TRIGGER_TYPE_BEFORE, 0, pg_sys::TRIGGER_TYPE_INSTEAD);
        let (insert, update, delete) =
            (pg_sys::TRIGGER_TYPE_INSERT, pg_sys::TRIGGER_TYPE_UPDATE, pg_sys::TRIGGER_TYPE_DELETE);
        (*desc).trig_insert_before_row = any(before, insert);
        (*desc).trig_insert_after_row = any(after, insert);
        (*desc).trig_insert_instead_row = any(instead, insert);
        (*desc).trig_update_before_row = any(before, update);
        (*desc).trig_update_after_row = any(after, update);
        (*desc).trig_update_instead_row = any(instead, update);
        (*desc).trig_delete_before_row = any(before, delete);
        (*desc).trig_delete_after_row = any(after, delete);
        (*desc).trig_delete_instead_row = any(instead, delete);
    }
}

/// The arguments of `CREATE TRIGGER … EXECUTE FUNCTION f(args)`.
pub fn trigger_args(trigger: &pg_sys::Trigger) -> impl Iterator<Item = &CStr> {
    (0..trigger.tgnargs as usize).map(move |i| {
        // SAFETY: tgargs holds tgnargs NUL-terminated strings, which live as
        // long as the Trigger.
        unsafe { CStr::from_ptr(*trigger.tgargs.add(i)) }
    })
}

/// Attribute number of the live (not dropped) user column `name` of
/// `tupdesc`, if there is one.
///
/// # Safety
/// `tupdesc` is a valid descriptor.
pub unsafe fn column_attnum(tupdesc: pg_sys::TupleDesc, name: &CStr) -> Option<i16> {
    // SAFETY: a valid descriptor (the contract) and a NUL-terminated name; an
    // unknown name is a negative result (system columns too), not an error.
    let attnum = unsafe { pg_sys::SPI_fnumber(tupdesc, name.as_ptr()) };
    (attnum > 0).then_some(attnum as i16)
}

/// The address of one of this library's trigger functions, to compare with
/// `function_address`.
pub fn address_of(function: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum) -> usize {
    function as *const () as usize
}

/// The address of the C function that function `foid` runs (for a function
/// in SQL or a procedural language, its language's handler), found once per
/// backend and catalog change: guards recognize their trigger functions by
/// it, whatever their names.
pub fn function_address(foid: pg_sys::Oid) -> usize {
    thread_local! {
        static ADDRESSES: RefCell<Vec<(pg_sys::Oid, u64, usize)>> = const { RefCell::new(Vec::new()) };
    }
    let generation = crate::invalidation::generation();
    if let Some(address) = ADDRESSES.with_borrow(|addresses| {
        addresses.iter().find(|&&(oid, at, _)| oid == foid && at == generation).map(|&(_, _, address)| address)
    }) {
        return address;
    }
    let mut info = pg_sys::FmgrInfo::default();
    // SAFETY: looks the function up (raising if it is gone) into a local
    // FmgrInfo, of which only the address is read.
    unsafe { pg_sys::fmgr_info(foid, &mut info) };
    let address = info.fn_addr.map_or(0, |address| address as usize);
    ADDRESSES.with_borrow_mut(|addresses| {
        addresses.retain(|&(oid, at, _)| oid != foid && at == generation);
        addresses.push((foid, generation, address));
    });
    address
}
