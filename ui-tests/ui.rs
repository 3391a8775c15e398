//! Compile-fail and compile-pass cases of the `projections` macros, driven by one test so
//! trybuild builds them in one go.
//!
//! Regenerate the expected `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p projections-ui-tests`, then read every diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("fail/*.rs");
    cases.pass("pass/*.rs");
}
