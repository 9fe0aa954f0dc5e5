//! The data rule an input broke.

use std::fmt;

/// The data rule an input broke, carried by [`Error::InvalidInput`](crate::Error::InvalidInput).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Empty text or bytes.
    Empty,
    /// Longer than the cap (characters for text, bytes for byte strings).
    TooLong {
        /// The cap.
        max: usize,
    },
    /// Contains a NUL character.
    Nul,
    /// Contains another control character.
    ControlCharacter,
    /// Contains an invisible character: a default-ignorable code point or a
    /// format (`Cf`) character other than the two joiners (zero-width spaces,
    /// soft hyphens, bidi controls, fillers, variation selectors, tags).
    InvisibleCharacter,
    /// Shorter than the floor (characters).
    TooShort {
        /// The floor.
        min: usize,
    },
    /// Negative where only zero or more is allowed.
    Negative,
    /// Outside the allowed range.
    OutOfRange {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// The result of an arithmetic update would overflow its column.
    Overflow,
    /// The result of an arithmetic update would be negative.
    WouldBeNegative,
    /// Not in the expected format; the text says which.
    Malformed(&'static str),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Empty => f.write_str("must not be empty"),
            Violation::TooLong { max } => write!(f, "must be at most {max} long"),
            Violation::Nul => f.write_str("must not contain NUL"),
            Violation::ControlCharacter => f.write_str("must not contain control characters"),
            Violation::InvisibleCharacter => f.write_str(
                "must not contain invisible or format characters (zero-width, bidi controls, fillers)",
            ),
            Violation::TooShort { min } => write!(f, "must be at least {min} long"),
            Violation::Negative => f.write_str("must not be negative"),
            Violation::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Violation::Overflow => f.write_str("would overflow"),
            Violation::WouldBeNegative => f.write_str("would make the value negative"),
            Violation::Malformed(what) => write!(f, "malformed: {what}"),
        }
    }
}
