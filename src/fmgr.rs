//! The fmgr glue for functions declared by hand in `sql/` (`LANGUAGE c`):
//! PostgreSQL looks for `pg_finfo_<symbol>` to learn the calling convention.

/// Emits the V1 function-info record `$finfo` for a C-callable function.
macro_rules! function_info_v1 {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1_API: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }
    };
}
pub(crate) use function_info_v1;
