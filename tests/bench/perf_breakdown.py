#!/usr/bin/env python3
"""Where a backend's time went, by trigger machinery, from `perf script` call stacks.

usage: perf_breakdown.py LABEL=FILE [LABEL=FILE ...]
FILE: output of `perf script -F ip,sym` for a `perf record -g` of one backend.

Prints a markdown table: one row per category, one column per profile, each
cell the share of the samples whose call stack contains one of the category's
functions (a sample can count in several rows: "…" rows are parts of the row
above them).  Only exported
PostgreSQL symbols can be named in Debian's stripped binaries, which is enough
for the executor's trigger entry points.
"""
import sys

PGI = {"integrity_version_bump", "integrity_immutable_guard", "integrity_write_once_guard",
       "integrity_version_check"}
# Self time of pgrx's per-call machinery: the catch_unwind/PG_TRY guard around
# every entry point and the sigsetjmp around every guarded FFI call.
GUARD = ("leaf-under", PGI, {"pgrx_pg_sys::submodules::panic::run_guarded",
                             "cee_scape::asm_based::call_with_sigsetjmp",
                             "cee_scape::asm_based::call_with_sigsetjmp::call_from_c_to_rust",
                             "__sigsetjmp", "__GI___sigsetjmp", "__GI___sigsetjmp (inlined)", "__sigjmp_save",
                             "pgrx_pg_sys::submodules::thread_check::check_active_thread", "__tls_get_addr"})

CATEGORIES = [
    ("BEFORE row triggers, all of it (`ExecBRUpdateTriggers`)", {"ExecBRUpdateTriggers", "ExecBRUpdateTriggersNew"}),
    ("… re-fetching and locking the old row (`heap_lock_tuple`)", {"heap_lock_tuple"}),
    ("… PL/pgSQL trigger functions", {"plpgsql_exec_trigger"}),
    ("… pg_integrity trigger functions", PGI),
    ("… … of which in pgrx's guards themselves (`run_guarded`, `sigsetjmp`, thread check; self time)", GUARD),
    ("… moddatetime", {"moddatetime"}),
    ("AFTER row triggers, all of it (`ExecARUpdateTriggers`)", {"ExecARUpdateTriggers", "ExecARUpdateTriggersNew"}),
    ("… compiling `WHEN` clauses (`stringToNode`, `ExecPrepareQual`)", {"stringToNode", "ExecPrepareQual"}),
    ("executor start-up (`standard_ExecutorStart`)", {"standard_ExecutorStart"}),
    ("index maintenance (`ExecInsertIndexTuples`)", {"ExecInsertIndexTuples"}),
    ("heap update (`heap_update`)", {"heap_update"}),
]


def matches(category, stack, leaf):
    if isinstance(category, tuple):
        _, under, leaves = category
        return leaf in leaves and bool(stack & under)
    return bool(stack & category)


def shares(path):
    total = 0
    counts = [0] * len(CATEGORIES)
    with open(path, errors="replace") as f:
        frames = []
        for line in list(f) + [""]:
            line = line.strip()
            if not line:
                if frames:
                    total += 1
                    stack = set(frames)
                    for i, (_, category) in enumerate(CATEGORIES):
                        if matches(category, stack, frames[0]):
                            counts[i] += 1
                frames = []
                continue
            parts = line.split(None, 1)
            frames.append(parts[1].split("+0x")[0].strip() if len(parts) == 2 else "")
    return total, [100.0 * c / total if total else 0.0 for c in counts]


def main(args):
    profiles = [a.split("=", 1) for a in args]
    results = [(label, *shares(path)) for label, path in profiles]
    print("| share of samples | " + " | ".join(label for label, _, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for i, (name, _) in enumerate(CATEGORIES):
        print(f"| {name} | " + " | ".join(f"{s[i]:.1f} %" for _, _, s in results) + " |")
    print("| samples | " + " | ".join(str(t) for _, t, _ in results) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
