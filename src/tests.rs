//! `#[pg_test]`s: what the SQL-level suites cannot see.
use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn placeholder() {}
}
