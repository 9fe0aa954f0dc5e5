//! Unit tests of the error types.

use super::*;

#[test]
fn refusals_explain_themselves() {
    let r = CopyRefusal::TargetNotEmpty {
        tables: vec!["accounts".into(), "sessions".into()],
    };
    assert_eq!(
        Error::CopyRefused(r).to_string(),
        "copy refused: the target already holds data (in accounts, sessions); \
         copy with force (--force) to delete it first"
    );
}
