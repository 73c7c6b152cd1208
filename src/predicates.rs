//! Stored predicates read as trees: `integrity._conjuncts` splits an index
//! predicate (or any stored boolean expression of one table) into its AND-ed
//! terms by walking the node tree PostgreSQL stored: the terms' boundaries are
//! the tree's, whatever a literal or an identifier holds (parentheses, quotes,
//! the word AND), with no tokeniser of deparsed text that has to track quoting
//! to find them.

use core::ffi::{c_char, c_int, CStr};

use pgrx::pg_sys;

use crate::fmgr::{guarded_function, Verdict};

guarded_function!(
    /// `integrity._conjuncts(expr pg_node_tree, relation oid) RETURNS text[]`:
    /// the top-level AND-ed terms of a stored expression over `relation`'s
    /// columns (`pg_index.indpred`, say), nested ANDs flattened, in order,
    /// each deparsed as `pg_get_expr` deparses it (but on one line: a CASE
    /// gets no line breaks) and without the parentheses that enclose the
    /// whole term: `(a IS NULL) AND ((b = 1) OR (c = 2))`
    /// gives `{a IS NULL, (b = 1) OR (c = 2)}`.  NULL when there is no such
    /// relation (dropped meanwhile: `pg_get_expr` gives NULL then too).
    integrity_conjuncts,
    pg_finfo_integrity_conjuncts,
    conjuncts
);

/// # Safety
/// `fcinfo` is the call of a STRICT function with `(pg_node_tree, oid)`.
unsafe fn conjuncts(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the function is STRICT: both arguments are there and not NULL;
    // a pg_node_tree is a text datum (text_to_cstring detoasts it).
    let (tree, relation) = unsafe {
        let args = (*fcinfo).args.as_slice(2);
        (pg_sys::text_to_cstring(args[0].value.cast_mut_ptr()), pg_sys::Oid::from(args[1].value.value() as u32))
    };
    // SAFETY: as pg_get_expr does, the relation is locked while its columns
    // are named; a relation dropped meanwhile gives NULL (fcinfo is ours).
    let rel = unsafe { pg_sys::try_relation_open(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    if rel.is_null() {
        // SAFETY: the result of this call is NULL.
        unsafe { (*fcinfo).isnull = true };
        return Verdict::Allow(pg_sys::Datum::from(0));
    }
    // SAFETY: a pg_node_tree holds what nodeToString wrote, which
    // stringToNode reads back; the relation is open, so its name is valid.
    let (node, context) = unsafe {
        (
            pg_sys::stringToNode(tree) as *mut pg_sys::Node,
            pg_sys::deparse_context_for((*(*rel).rd_rel).relname.data.as_ptr(), relation),
        )
    };
    let mut terms = Vec::new();
    // SAFETY: a node tree just read, and a deparse context for its one table.
    unsafe { collect(node, context, &mut terms) };
    // SAFETY: opened above with the same lock mode.
    unsafe { pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    // SAFETY: text datums, one per term; text[] is -1 long, not by value, int aligned.
    let array = unsafe {
        pg_sys::construct_array(
            terms.as_mut_ptr(),
            terms.len() as c_int,
            pg_sys::TEXTOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as c_char,
        )
    };
    Verdict::Allow(pg_sys::Datum::from(array))
}

/// Appends the AND-ed terms of `node` to `terms` as text datums, depth first.
///
/// # Safety
/// `node` is an expression tree over the relation `context` was made for.
unsafe fn collect(node: *mut pg_sys::Node, context: *mut pg_sys::List, terms: &mut Vec<pg_sys::Datum>) {
    // SAFETY: check_stack_depth raises an error on a tree too deep to walk;
    // every node starts with its tag; an AND's args is a List of at least
    // two expression nodes.
    unsafe {
        pg_sys::check_stack_depth();
        if (*node).type_ == pg_sys::NodeTag::T_BoolExpr {
            let expr = node as *mut pg_sys::BoolExpr;
            if (*expr).boolop == pg_sys::BoolExprType::AND_EXPR {
                let args = (*expr).args;
                for i in 0..(*args).length as usize {
                    collect((*(*args).elements.add(i)).ptr_value as *mut pg_sys::Node, context, terms);
                }
                return;
            }
        }
    }
    // SAFETY: deparse_expression returns a palloc'd NUL-terminated string.
    let text = unsafe { CStr::from_ptr(pg_sys::deparse_expression(node, context, false, false)) };
    // Without pretty-printing, the deparser encloses every operator, boolean,
    // NULL and IS tests in parentheses; nothing else that is boolean both
    // starts with "(" and ends with ")" (a cast ends with its type's name), so
    // these two bytes are the enclosing pair, whatever the term contains.
    let bytes = text.to_bytes();
    let term = match bytes {
        [b'(', inner @ .., b')'] => inner,
        _ => bytes,
    };
    // SAFETY: term points into the deparsed string, term.len() bytes long.
    let datum = unsafe { pg_sys::cstring_to_text_with_len(term.as_ptr() as *const c_char, term.len() as c_int) };
    terms.push(pg_sys::Datum::from(datum));
}
