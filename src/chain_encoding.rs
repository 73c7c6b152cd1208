//! `integrity._chain_encoding(VARIADIC "any")`: the canonical encoding a
//! chained row is hashed with, `convert_to(jsonb_build_array(<values>)::text,
//! 'UTF8')`, written directly.
//!
//! `_chain_encoding_sql()` (sql/hash_chain.sql) puts it in the trigger's
//! statement and in what `verify_chain()` reads, with the session-independent
//! forms of the settled types as its arguments: the encoding exists once.
//! Building a jsonb to print it costs more than the rest of verification.
//!
//! Each value is printed as the jsonb element `jsonb_build_array()` would
//! make of it: the common scalar types as `datum_to_jsonb_internal()` writes
//! them (integers and numerics by their output function, a numeric that is
//! not a JSON number, text, dates and timestamps as JSON strings escaped by
//! `escape_json()`), every other type through `to_jsonb()` itself, so that
//! arrays, json, enums, ranges and types with a cast to json come out as they
//! always have.  Tests compare it with the jsonb expression on every type.

use core::ffi::{c_char, CStr};

use pgrx::pg_sys;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::fmgr::{guarded_function, to_jsonb_of, Verdict};

unsafe extern "C-unwind" {
    /// The C functions behind `numeric_out` and `jsonb_out`, for
    /// `DirectFunctionCall1Coll`.
    #[link_name = "numeric_out"]
    fn numeric_out_raw(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    #[link_name = "jsonb_out"]
    fn jsonb_out_raw(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// A row's hash: SHA-256 of the previous row's hash (or its chain's anchor,
/// or nothing) and the row's encoding, for the trigger and for
/// `verify_chain()` (PostgreSQL's sha256() makes an OpenSSL context per call,
/// which costs more than the hashing).
pub(crate) fn link_hash(previous: &[u8], encoding: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(previous).chain_update(encoding).finalize().into()
}

guarded_function!(
    /// `_chain_encoding(VARIADIC "any") RETURNS bytea`.
    integrity_chain_encoding,
    pg_finfo_integrity_chain_encoding,
    chain_encoding
);

/// How an argument is written.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int2,
    Int4,
    Int8,
    Numeric,
    Bool,
    Text,
    /// date or timestamp, by `JsonEncodeDateTime()`.
    DateTime,
    /// Through `to_jsonb()`.
    Other,
}

/// An argument's kind, resolved once per call site and kept in `fn_extra`.
#[repr(C)]
struct Argument {
    kind: Kind,
    /// The base type (for `DateTime`).
    base: pg_sys::Oid,
    /// `to_jsonb()`, called as if on an argument of the argument's type.
    to_jsonb: pg_sys::FmgrInfo,
}

/// How a value of base type `base` is written.
fn kind(base: pg_sys::Oid) -> Kind {
    match base {
        pg_sys::INT2OID => Kind::Int2,
        pg_sys::INT4OID => Kind::Int4,
        pg_sys::INT8OID => Kind::Int8,
        pg_sys::NUMERICOID => Kind::Numeric,
        pg_sys::BOOLOID => Kind::Bool,
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => Kind::Text,
        pg_sys::DATEOID | pg_sys::TIMESTAMPOID => Kind::DateTime,
        _ => Kind::Other,
    }
}

/// Whether a value of type `typ` is written by the code here alone: no
/// output function of the type, nothing that reads the search path (a
/// `regclass`) or runs code a user wrote.
pub(crate) fn written_here(typ: pg_sys::Oid) -> bool {
    // SAFETY: a type cache lookup, which raises rather than return garbage.
    kind(unsafe { pg_sys::getBaseType(typ) }) != Kind::Other
}

/// # Safety
/// `fcinfo` is the running call's, of a function declared as
/// `_chain_encoding(VARIADIC "any")`.
unsafe fn chain_encoding(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the running call's fcinfo (the contract): its arguments are
    // `nargs` datums whose types get_fn_expr_argtype() gives; the result is
    // a palloc'd bytea of the length written into its header.
    unsafe {
        let nargs = (*fcinfo).nargs as usize;
        let arguments = arguments(fcinfo, nargs);
        let mut out = Vec::with_capacity(128);
        out.push(b'[');
        for (i, arg) in (*fcinfo).args.as_slice(nargs).iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            if arg.isnull {
                out.extend_from_slice(b"null");
            } else {
                write_value(&mut out, &mut *arguments.add(i), arg.value);
            }
        }
        out.push(b']');
        // convert_to(…, 'UTF8'): from the database's encoding to UTF-8, as
        // pg_convert() converts (none from SQL_ASCII).
        let converted;
        let database = pg_sys::GetDatabaseEncoding();
        let bytes = if database == pg_sys::pg_enc::PG_UTF8 as i32 {
            &out[..]
        } else {
            out.push(0);
            let text = pg_sys::pg_do_encoding_conversion(
                out.as_mut_ptr(),
                out.len() as i32 - 1,
                database,
                pg_sys::pg_enc::PG_UTF8 as i32,
            );
            converted = CStr::from_ptr(text.cast()).to_bytes();
            converted
        };
        let result = pg_sys::palloc(bytes.len() + pg_sys::VARHDRSZ) as *mut pg_sys::varlena;
        pgrx::set_varsize_4b(result, (bytes.len() + pg_sys::VARHDRSZ) as i32);
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), pgrx::vardata_any(result).cast::<u8>().cast_mut(), bytes.len());
        Verdict::Allow(pg_sys::Datum::from(result))
    }
}

/// The bytes of a varlena value, detoasted (in the current memory context)
/// only if it is compressed or out of line.
///
/// # Safety
/// `datum` is a varlena, valid for `'a`.
pub(crate) unsafe fn varlena_bytes<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: a varlena (the contract), read in place when its header says
    // the data follows it uncompressed.
    unsafe {
        let mut value = datum.cast_mut_ptr::<pg_sys::varlena>();
        if pgrx::varatt_is_1b_e(value) || pgrx::varatt_is_4b_c(value) {
            value = pg_sys::pg_detoast_datum_packed(value);
        }
        core::slice::from_raw_parts(pgrx::vardata_any(value).cast::<u8>(), pgrx::varsize_any_exhdr(value))
    }
}

/// Appends the binary form of a column's value (None for NULL) to `key`,
/// length-prefixed so that the forms of several values never run into each
/// other: rows whose chain columns have the same binary values belong to one
/// chain, a new row whose key has the same values is the same target row.
///
/// # Safety
/// `value` is a datum of the column `attribute` describes.
pub(crate) unsafe fn push_value(
    key: &mut Vec<u8>,
    value: Option<pg_sys::Datum>,
    attribute: &pg_sys::FormData_pg_attribute,
) {
    let Some(value) = value else {
        key.push(0);
        return;
    };
    // SAFETY: the attribute says how the datum holds the value (the
    // contract): by value, a varlena, a C string or `attlen` bytes.
    let data: &[u8] = unsafe {
        if attribute.attbyval {
            &value.value().to_ne_bytes()[..attribute.attlen as usize]
        } else if attribute.attlen == -1 {
            varlena_bytes(value)
        } else if attribute.attlen == -2 {
            core::ffi::CStr::from_ptr(value.cast_mut_ptr()).to_bytes()
        } else {
            core::slice::from_raw_parts(value.cast_mut_ptr::<u8>(), attribute.attlen as usize)
        }
    };
    key.push(1);
    key.extend_from_slice(&data.len().to_ne_bytes());
    key.extend_from_slice(data);
}

/// Appends `text` as a JSON string, as PostgreSQL's `escape_json()` writes
/// it: `"`, `\` and the control characters escaped (those without a short
/// form as `\u` and four lowercase hex digits), every other byte as it is.
fn escape_json(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    let mut plain = 0;
    let mut unicode = *b"\\u0000";
    for (i, &byte) in text.iter().enumerate() {
        let escaped: &[u8] = match byte {
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            byte if byte < b' ' => {
                unicode[4] = HEX[usize::from(byte >> 4)];
                unicode[5] = HEX[usize::from(byte & 15)];
                &unicode
            }
            _ => continue,
        };
        // The bytes before it as they are, in one copy.
        out.extend_from_slice(&text[plain..i]);
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(&text[plain..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The arguments' kinds, from `fn_extra` or resolved now.
///
/// # Safety
/// As for `chain_encoding`.
unsafe fn arguments(fcinfo: pg_sys::FunctionCallInfo, nargs: usize) -> *mut Argument {
    // SAFETY: the running call's flinfo; fn_extra is this function's, NULL or
    // the array allocated here, in fn_mcxt, which lives as long as it.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if !(*flinfo).fn_extra.is_null() {
            return (*flinfo).fn_extra.cast();
        }
        if pg_sys::get_fn_expr_variadic(flinfo) {
            Error::UnexpectedResult { what: "_chain_encoding", result: "a VARIADIC array".into() }.raise();
        }
        let arguments =
            pg_sys::MemoryContextAllocZero((*flinfo).fn_mcxt, nargs * size_of::<Argument>()).cast::<Argument>();
        let previous = pg_sys::MemoryContextSwitchTo((*flinfo).fn_mcxt);
        for i in 0..nargs {
            let typ = pg_sys::get_fn_expr_argtype(flinfo, i as i32);
            if typ == pg_sys::InvalidOid {
                Error::UnexpectedResult { what: "_chain_encoding", result: "an argument of unknown type".into() }
                    .raise();
            }
            let base = pg_sys::getBaseType(typ);
            let argument = &mut *arguments.add(i);
            argument.base = base;
            argument.kind = kind(base);
            if argument.kind == Kind::Other {
                to_jsonb_of(&mut argument.to_jsonb, typ, (*flinfo).fn_mcxt);
            }
        }
        pg_sys::MemoryContextSwitchTo(previous);
        (*flinfo).fn_extra = arguments.cast();
        arguments
    }
}

/// Appends `value` as the element `jsonb_build_array()` makes of it.
///
/// # Safety
/// `value` is a non-NULL datum of the argument's type.
unsafe fn write_value(out: &mut Vec<u8>, argument: &mut Argument, value: pg_sys::Datum) {
    use std::io::Write;
    // SAFETY: a datum of the argument's type (the contract), read as that
    // type; the output functions return palloc'd NUL-terminated strings.
    unsafe {
        // Writing into a Vec does not fail.
        let _ = match argument.kind {
            Kind::Int2 => write!(out, "{}", value.value() as i16),
            Kind::Int4 => write!(out, "{}", value.value() as i32),
            Kind::Int8 => write!(out, "{}", value.value() as i64),
            Kind::Bool => out.write_all(if value.value() != 0 { b"true" } else { b"false" }),
            Kind::Numeric => {
                // A JSON number unless it is NaN or ±Infinity (a string then).
                let text: *mut c_char =
                    pg_sys::DirectFunctionCall1Coll(Some(numeric_out_raw), pg_sys::InvalidOid, value).cast_mut_ptr();
                let text = CStr::from_ptr(text).to_bytes();
                if text.iter().any(|&b| b == b'N' || b == b'n') {
                    escape_json(out, text);
                } else {
                    out.extend_from_slice(text);
                }
                Ok(())
            }
            Kind::Text => {
                escape_json(out, varlena_bytes(value));
                Ok(())
            }
            Kind::DateTime => {
                let text = pg_sys::JsonEncodeDateTime(core::ptr::null_mut(), value, argument.base, core::ptr::null());
                escape_json(out, CStr::from_ptr(text).to_bytes());
                Ok(())
            }
            Kind::Other => {
                let jsonb = pg_sys::FunctionCall1Coll(&mut argument.to_jsonb, pg_sys::InvalidOid, value);
                let text: *mut c_char =
                    pg_sys::DirectFunctionCall1Coll(Some(jsonb_out_raw), pg_sys::InvalidOid, jsonb).cast_mut_ptr();
                out.write_all(CStr::from_ptr(text).to_bytes())
            }
        };
    }
}
