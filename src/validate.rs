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
/// Shortest bearer token a session may be created with, in characters: 16
/// random bytes in base64url. The stored digest is an unsalted SHA-256, safe
/// only for tokens with at least 128 bits of entropy.
pub(crate) const TOKEN_MIN: usize = 22;
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

/// Validates lookup input (an email or username to find) and returns its
/// canonical key. Invisible characters are accepted here: the key drops them,
/// so `ada\u{200b}` finds `ada`.
pub(crate) fn keyed_text(field: &'static str, s: &str, max: usize) -> Result<String> {
    text(field, s, max)?;
    let key = crate::keys::canonical_key(s);
    if key.is_empty() {
        return Err(Error::invalid(field, Violation::Empty));
    }
    Ok(key)
}

/// An email or username as it is stored: its NFC display form and its
/// canonical key.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The display form, NFC-composed.
    pub display: String,
    /// [`canonical_key`](crate::canonical_key) of it.
    pub key: String,
}

/// Validates an email or username to store (create, update): the text rules,
/// no invisible character ([`Violation::InvisibleCharacter`]), and at most
/// `max` characters counted on its NFC form, the form it is stored in, so
/// that a name precomposed or decomposed by the client is one name with one
/// length.
pub(crate) fn stored_text(field: &'static str, s: &str, max: usize) -> Result<Stored> {
    use unicode_normalization::UnicodeNormalization;
    if s.is_empty() {
        return Err(Error::invalid(field, Violation::Empty));
    }
    if s.contains('\0') {
        return Err(Error::invalid(field, Violation::Nul));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, Violation::ControlCharacter));
    }
    // No ASCII character is invisible (the controls are refused above).
    if !s.is_ascii() && s.chars().any(crate::keys::is_refused_invisible) {
        return Err(Error::invalid(field, Violation::InvisibleCharacter));
    }
    // Bound the work before normalising: any string canonically equivalent
    // to an NFC string of `max` characters has at most as many characters
    // as its NFD form, which UAX #15 bounds by 4x (18x is the bound of every
    // normalisation form), so longer input cannot fit.
    if s.chars().count() > max.saturating_mul(18) {
        return Err(Error::invalid(field, Violation::TooLong { max }));
    }
    // ASCII is already NFC (one character per byte): no composing pass.
    let display: String = if s.is_ascii() {
        s.to_owned()
    } else {
        s.nfc().collect()
    };
    if display.chars().count() > max {
        return Err(Error::invalid(field, Violation::TooLong { max }));
    }
    let key = crate::keys::canonical_key(&display);
    if key.is_empty() {
        return Err(Error::invalid(field, Violation::Empty));
    }
    Ok(Stored { display, key })
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

/// A token a session is created with: [`token`]'s rules and at least
/// [`TOKEN_MIN`] characters.
pub(crate) fn new_token(t: &str) -> Result<()> {
    token(t)?;
    if t.chars().count() < TOKEN_MIN {
        return Err(Error::invalid(
            "token",
            Violation::TooShort { min: TOKEN_MIN },
        ));
    }
    Ok(())
}

/// A token to look up or delete: non-empty, at most [`TOKEN_MAX`] bytes.
/// Shorter tokens than [`TOKEN_MIN`] are looked up (and not found): an
/// authenticated request with a garbage bearer token stays `NotFound`.
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

    fn stored(s: &str, max: usize) -> Result<Stored> {
        stored_text("f", s, max)
    }

    #[test]
    fn stored_text_rules() {
        let v = |r: Result<Stored>| violation(r.map(drop));
        assert_eq!(v(stored("", 5)), Violation::Empty);
        assert_eq!(v(stored("a\0b", 5)), Violation::Nul);
        assert_eq!(v(stored("a\nb", 5)), Violation::ControlCharacter);
        for s in [
            "a\u{ad}da",
            "ada\u{200b}",
            "\u{feff}ada",
            "\u{202e}ada",
            "\u{3164}",
        ] {
            assert_eq!(v(stored(s, 32)), Violation::InvisibleCharacter, "{s:?}");
        }
        // The joiners are allowed (and dropped from the key); alone they are
        // an empty name.
        let s = stored("a\u{200d}da", 32).unwrap();
        assert_eq!(s.key, crate::keys::canonical_key("ada"));
        assert_eq!(v(stored("\u{200d}", 32)), Violation::Empty);
        // The cap counts the NFC form, which is what is stored.
        let pre = "\u{e9}".repeat(20);
        let dec = "e\u{301}".repeat(20);
        let a = stored(&pre, 20).unwrap();
        let b = stored(&dec, 20).unwrap();
        assert_eq!(a.display, pre);
        assert_eq!(b.display, pre);
        assert_eq!(a.key, b.key);
        assert_eq!(
            v(stored(&"e\u{301}".repeat(21), 20)),
            Violation::TooLong { max: 20 }
        );
        // Far past the bound: refused before normalising.
        assert_eq!(
            v(stored(&"e".repeat(18 * 20 + 1), 20)),
            Violation::TooLong { max: 20 }
        );
    }

    #[test]
    fn token_rules() {
        assert_eq!(violation(new_token("")), Violation::Empty);
        assert_eq!(
            violation(new_token("abc")),
            Violation::TooShort { min: TOKEN_MIN }
        );
        assert_eq!(
            violation(new_token(&"a".repeat(TOKEN_MIN - 1))),
            Violation::TooShort { min: TOKEN_MIN }
        );
        new_token(&"a".repeat(TOKEN_MIN)).unwrap();
        assert_eq!(
            violation(new_token(&"a".repeat(TOKEN_MAX + 1))),
            Violation::TooLong { max: TOKEN_MAX }
        );
        // Lookups keep accepting short input.
        token("abc").unwrap();
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
