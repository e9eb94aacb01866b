//! Compile-time behaviour of the macros: every mistake a user can make has a
//! case under `ui/fail` with the exact message (`.stderr`), and every
//! supported form a case under `ui/pass`.
//!
//! The `.stderr` files track the toolchain on the project's machines;
//! regenerate them with `TRYBUILD=overwrite cargo test --test ui` and read
//! the diff before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
