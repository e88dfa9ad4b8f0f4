//! Every shape `#[redwood::remote]` and `#[redwood::main]` refuse gives a clear compile error
//! naming what to write instead; the expected messages are in `tests/ui/*.stderr`.
//! (`TRYBUILD=overwrite cargo test -p redwood-macros` rewrites them after a deliberate change.)

#[test]
fn refused_shapes_have_clear_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/pass/*.rs");
}
