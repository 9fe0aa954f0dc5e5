//! Input rules, checked in Rust before any SQL runs so that both backends
//! reject the same inputs with the same error.

use crate::error::{Error, Result, Violation};
use crate::models::{Loadout, UserId};

/// Longest email, in characters (RFC 5321 path limit).
pub(crate) const EMAIL_MAX: usize = 254;
/// Longest username, in characters.
pub(crate) const USERNAME_MAX: usize = 32;
/// Longest password hash, in bytes.
pub(crate) const PASS_HASH_MAX: usize = 512;
/// Longest bearer token, in bytes.
pub(crate) const TOKEN_MAX: usize = 512;
/// Longest canonical key (the `*_key` column cap), and so the longest input a
/// lookup by email or username accepts: case folding can make a matching
/// input longer than the stored display form ("SS" for "ß").
pub(crate) const KEY_MAX: usize = 8192;
/// Latest accepted timestamp: 9999-12-31T23:59:59Z.
pub(crate) const TIMESTAMP_MAX: i64 = 253_402_300_799;

/// Display text: non-empty, at most `max` characters, no NUL or other control
/// character.
pub(crate) fn text(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, Violation::Empty));
    }
    if s.contains('\0') {
        return Err(Error::invalid(field, Violation::Nul));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, Violation::ControlCharacter));
    }
    if s.chars().count() > max {
        return Err(Error::invalid(field, Violation::TooLong { max }));
    }
    Ok(())
}

/// Validates display text and returns its canonical key.
pub(crate) fn keyed_text(field: &'static str, s: &str, max: usize) -> Result<String> {
    text(field, s, max)?;
    let key = crate::keys::canonical_key(s);
    if key.is_empty() {
        return Err(Error::invalid(field, Violation::Empty));
    }
    Ok(key)
}

pub(crate) fn bytes(field: &'static str, b: &[u8], max: usize) -> Result<()> {
    if b.is_empty() {
        return Err(Error::invalid(field, Violation::Empty));
    }
    if b.len() > max {
        return Err(Error::invalid(field, Violation::TooLong { max }));
    }
    Ok(())
}

pub(crate) fn timestamp(field: &'static str, t: i64) -> Result<()> {
    if !(0..=TIMESTAMP_MAX).contains(&t) {
        return Err(Error::invalid(
            field,
            Violation::OutOfRange {
                min: 0,
                max: TIMESTAMP_MAX,
            },
        ));
    }
    Ok(())
}

pub(crate) fn user_id(id: UserId) -> Result<()> {
    if id.0 < 1 {
        return Err(Error::invalid(
            "user_id",
            Violation::OutOfRange {
                min: 1,
                max: i64::MAX,
            },
        ));
    }
    Ok(())
}

pub(crate) fn non_negative(field: &'static str, v: i64) -> Result<()> {
    if v < 0 {
        return Err(Error::invalid(field, Violation::Negative));
    }
    Ok(())
}

pub(crate) fn token(token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(Error::invalid("token", Violation::Empty));
    }
    if token.len() > TOKEN_MAX {
        return Err(Error::invalid(
            "token",
            Violation::TooLong { max: TOKEN_MAX },
        ));
    }
    Ok(())
}

pub(crate) fn loadout(l: &Loadout) -> Result<()> {
    user_id(l.user_id)?;
    non_negative("element_id", l.element_id.into())?;
    for a in l.army_abilities {
        non_negative("army_abilities", a.into())?;
    }
    for a in l.piece_abilities.to_array() {
        non_negative("piece_abilities", a.into())?;
    }
    for i in l.items {
        non_negative("items", i.into())?;
    }
    timestamp("updated_at", l.updated_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(r: Result<()>) -> Violation {
        match r {
            Err(Error::InvalidInput { violation, .. }) => violation,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn text_rules() {
        assert_eq!(violation(text("f", "", 5)), Violation::Empty);
        assert_eq!(violation(text("f", "a\0b", 5)), Violation::Nul);
        assert_eq!(violation(text("f", "a\nb", 5)), Violation::ControlCharacter);
        assert_eq!(
            violation(text("f", "abcdef", 5)),
            Violation::TooLong { max: 5 }
        );
        // Characters, not bytes: five 3-byte characters fit a cap of 5.
        text("f", "ééééé", 5).unwrap();
        text("f", "名前名前名", 5).unwrap();
    }

    #[test]
    fn number_rules() {
        assert_eq!(violation(non_negative("f", -1)), Violation::Negative);
        non_negative("f", 0).unwrap();
        assert!(matches!(
            violation(timestamp("t", -1)),
            Violation::OutOfRange { .. }
        ));
        assert!(matches!(
            violation(timestamp("t", TIMESTAMP_MAX + 1)),
            Violation::OutOfRange { .. }
        ));
        timestamp("t", TIMESTAMP_MAX).unwrap();
        assert!(matches!(
            violation(user_id(UserId(0))),
            Violation::OutOfRange { .. }
        ));
        assert!(matches!(
            violation(user_id(UserId(i64::MIN))),
            Violation::OutOfRange { .. }
        ));
        user_id(UserId(1)).unwrap();
    }
}
