//! The canonical key under which emails and usernames are unique, and the
//! characters a stored email or username may not contain.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The canonical, case- and Unicode-insensitive form of an email or username.
///
/// Two strings collide (as emails, or as usernames) exactly when their keys are
/// equal. The key is Unicode's *compatibility caseless match* form
/// (`NFKD(casefold(NFKD(casefold(NFD(s)))))`, Unicode 3.13 D146) with every
/// default-ignorable code point removed (as Unicode's identifier matching,
/// `NFKC_Casefold`, removes them), stored NFC-composed: `Bob`/`bob`,
/// `Foo@X.com`/`foo@x.com`, `é` precomposed or decomposed, `ß`/`ss`, full-width
/// `Ａ`/`A`, and `ada`/`a\u{200d}da`/`ada\u{200b}` (joiners, zero-width
/// spaces, soft hyphens, bidi controls, variation selectors) all collide. It
/// is computed here, not by the database, so both backends agree whatever
/// their collation or locale.
pub fn canonical_key(s: &str) -> String {
    // ASCII is its own NFD, NFKD and NFC, holds no default-ignorable code
    // point, and case-folds by lowering A-Z: the five passes below give
    // exactly this (a property test holds the two paths equal).
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    unicode_key(s)
}

/// [`canonical_key`] by the full Unicode passes.
fn unicode_key(s: &str) -> String {
    let nfd: String = s.nfd().filter(|c| !is_default_ignorable(*c)).collect();
    let folded = caseless::default_case_fold_str(&nfd);
    let nfkd: String = folded.nfkd().collect();
    let folded = caseless::default_case_fold_str(&nfkd);
    folded
        .nfkd()
        .filter(|c| !is_default_ignorable(*c))
        .nfc()
        .collect()
}

/// Unicode's `Default_Ignorable_Code_Point` property (DerivedCoreProperties,
/// Unicode 16.0; the property has not changed since Unicode 11).
///
/// A fixed table rather than a crate's tables on purpose: keys are stored,
/// so the set of characters they drop must not move under a dependency
/// update (a change needs a migration that recomputes the keys, as 0003 did).
const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // soft hyphen
    (0x034F, 0x034F),   // combining grapheme joiner
    (0x061C, 0x061C),   // Arabic letter mark
    (0x115F, 0x1160),   // Hangul choseong / jungseong fillers
    (0x17B4, 0x17B5),   // Khmer inherent vowels
    (0x180B, 0x180F),   // Mongolian variation selectors, vowel separator
    (0x200B, 0x200F),   // zero-width space, ZWNJ, ZWJ, LRM, RLM
    (0x202A, 0x202E),   // bidi embeddings and overrides
    (0x2060, 0x206F),   // word joiner, invisible operators, bidi isolates
    (0x3164, 0x3164),   // Hangul filler
    (0xFE00, 0xFE0F),   // variation selectors
    (0xFEFF, 0xFEFF),   // zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),   // half-width Hangul filler
    (0xFFF0, 0xFFF8),   // unassigned specials
    (0x1BCA0, 0x1BCA3), // shorthand format controls
    (0x1D173, 0x1D17A), // musical symbol format controls
    (0xE0000, 0xE0FFF), // tags, variation selectors supplement, reserved
];

/// Whether `c` is a default-ignorable code point: invisible in normal
/// rendering (zero-width characters, joiners, bidi controls, fillers,
/// variation selectors, tags).
pub(crate) fn is_default_ignorable(c: char) -> bool {
    let c = u32::from(c);
    DEFAULT_IGNORABLE
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether a stored email or username may not contain `c`: a default-ignorable
/// code point or a format (`Cf`) character, except ZERO WIDTH NON-JOINER and
/// ZERO WIDTH JOINER.
///
/// These are invisible or change how the text around them is shown (U+202E
/// shows `nimda` as "admin"), so a name holding one can pass for another.
/// PRECIS (RFC 8264/8265) disallows them in identifiers and UTS #39 marks them
/// restricted, both save the two joiners, which spell words in Persian and
/// Indic scripts and join emoji sequences; those are allowed, and the
/// canonical key drops them, so they never tell two names apart.
pub(crate) fn is_refused_invisible(c: char) -> bool {
    if matches!(c, '\u{200C}' | '\u{200D}') {
        return false;
    }
    is_default_ignorable(c) || c.general_category() == GeneralCategory::Format
}

/// Which key of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum KeyField {
    Email,
    Username,
}

impl KeyField {
    /// The key column.
    pub(crate) fn column(self) -> &'static str {
        match self {
            KeyField::Email => "email_key",
            KeyField::Username => "username_key",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            KeyField::Email => "email",
            KeyField::Username => "username",
        }
    }
}

/// A stored key that differs from [`canonical_key`] of its display form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rekey {
    pub user_id: i64,
    pub field: KeyField,
    pub key: String,
}

/// The keys of one `accounts` row that must change, if any.
pub(crate) fn rekeys(
    user_id: i64,
    email: &str,
    email_key: &str,
    username: &str,
    username_key: &str,
) -> Vec<Rekey> {
    let mut out = Vec::new();
    for (field, display, stored) in [
        (KeyField::Email, email, email_key),
        (KeyField::Username, username, username_key),
    ] {
        let key = canonical_key(display);
        if key != stored {
            out.push(Rekey {
                user_id,
                field,
                key,
            });
        }
    }
    out
}

/// What stands in the way of storing `changes`: empty keys, and new keys
/// equal to another account's (another changed one, or a holder of that key
/// today, from `holders`: the user ids storing each new key now). Empty when
/// the keys can be written.
pub(crate) fn rekey_problems(
    changes: &[Rekey],
    holders: &std::collections::HashMap<(KeyField, String), Vec<i64>>,
) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let moving: BTreeSet<(KeyField, i64)> = changes.iter().map(|c| (c.field, c.user_id)).collect();
    let mut owners: BTreeMap<(KeyField, &str), BTreeSet<i64>> = BTreeMap::new();
    let mut problems = Vec::new();
    for c in changes {
        if c.key.is_empty() {
            problems.push(format!(
                "the {} of account {} has no character left once invisible characters are dropped",
                c.field.noun(),
                c.user_id
            ));
            continue;
        }
        let ids = owners.entry((c.field, c.key.as_str())).or_default();
        ids.insert(c.user_id);
        for id in holders.get(&(c.field, c.key.clone())).into_iter().flatten() {
            if !moving.contains(&(c.field, *id)) {
                ids.insert(*id);
            }
        }
    }
    for ((field, _), ids) in owners {
        if ids.len() > 1 {
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            problems.push(format!(
                "accounts {} would have the same {}",
                ids.join(", "),
                field.noun()
            ));
        }
    }
    problems
}

/// The message of a key recompute that cannot proceed.
pub(crate) fn rekey_refusal(problems: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut msg = format!(
        "recomputing the canonical email and username keys (invisible characters no longer \
         count) found {} conflict(s); nothing was changed: {}",
        problems.len(),
        problems[..problems.len().min(SHOWN)].join("; ")
    );
    if problems.len() > SHOWN {
        msg.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    msg.push_str(
        ". Change the email or username of one account of each pair (or delete it), \
         then migrate again",
    );
    msg
}

#[cfg(test)]
mod tests {
    use super::{canonical_key, is_default_ignorable, is_refused_invisible, unicode_key};
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

    #[test]
    fn case_and_normalisation_forms_collide() {
        assert_eq!(canonical_key("Bob"), canonical_key("bob"));
        assert_eq!(canonical_key("Foo@X.com"), canonical_key("foo@x.com"));
        // NFC vs NFD of "José".
        assert_eq!(canonical_key("Jos\u{e9}"), canonical_key("Jose\u{301}"));
        assert_eq!(canonical_key("STRASSE"), canonical_key("straße"));
        assert_eq!(canonical_key("\u{ff21}da"), canonical_key("ada"));
        // Final and medial sigma fold together.
        assert_eq!(canonical_key("ΟΔΟΣ"), canonical_key("οδος"));
    }

    #[test]
    fn default_ignorables_are_folded_out() {
        let ada = canonical_key("ada");
        for s in [
            "a\u{ad}da",
            "ada\u{200b}",
            "a\u{200d}da",
            "a\u{200c}da",
            "\u{feff}ada",
            "\u{202e}ada",
            "\u{2066}ada\u{2069}",
            "a\u{34f}da",
            "ada\u{fe0f}",
            "ad\u{e0061}a",
            "A\u{2060}DA",
        ] {
            assert_eq!(canonical_key(s), ada, "{s:?}");
        }
        // A combining grapheme joiner no longer blocks composition.
        assert_eq!(canonical_key("e\u{34f}\u{301}"), canonical_key("\u{e9}"));
        // Names made only of invisible characters have an empty key.
        assert_eq!(canonical_key("\u{3164}\u{200b}\u{115f}"), "");
    }

    #[test]
    fn distinct_names_stay_distinct() {
        assert_ne!(canonical_key("bob"), canonical_key("bobby"));
        assert_ne!(canonical_key("bob"), canonical_key("b0b"));
        assert_ne!(canonical_key("ada"), canonical_key("ada "));
        // Confusables across scripts are not folded (UTS #39 skeletons are not).
        assert_ne!(canonical_key("ada"), canonical_key("\u{430}da"));
    }

    #[test]
    fn key_is_idempotent() {
        for s in [
            "Bob",
            "Jose\u{301}",
            "ﷺ",
            "ǅemal",
            "İstanbul",
            "a\u{200d}\u{301}b",
            "\u{ffa0}x",
        ] {
            let k = canonical_key(s);
            assert_eq!(canonical_key(&k), k, "{s}");
        }
    }

    #[test]
    fn rekey_finds_changes_and_conflicts() {
        use super::{rekey_problems, rekeys, KeyField, Rekey};
        use std::collections::HashMap;
        assert!(rekeys(1, "a@x", "a@x", "ada", "ada").is_empty());
        let c = rekeys(2, "a@x", "a@x", "ada\u{200b}", "ada\u{200b}");
        assert_eq!(
            c,
            [Rekey {
                user_id: 2,
                field: KeyField::Username,
                key: "ada".into()
            }]
        );
        // Account 1 holds "ada" today: a conflict naming both.
        let mut holders = HashMap::new();
        holders.insert((KeyField::Username, "ada".to_string()), vec![1]);
        let p = rekey_problems(&c, &holders);
        assert_eq!(p, ["accounts 1, 2 would have the same username"]);
        assert!(rekey_problems(&c, &HashMap::new()).is_empty());
        // Two changed rows landing on one key, and an empty key.
        let mut both = c.clone();
        both.extend(rekeys(3, "b@x", "b@x", "a\u{ad}da", "a\u{ad}da"));
        both.extend(rekeys(4, "c@x", "c@x", "\u{200b}", "\u{200b}"));
        let p = rekey_problems(&both, &HashMap::new());
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("account 4"), "{p:?}");
        assert_eq!(p[1], "accounts 2, 3 would have the same username");
    }

    #[test]
    fn table_is_sorted_and_disjoint() {
        for w in super::DEFAULT_IGNORABLE.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:x?}");
        }
    }

    #[test]
    fn refused_characters() {
        for c in [
            '\u{ad}',
            '\u{200b}',
            '\u{feff}',
            '\u{202e}',
            '\u{2066}',
            '\u{3164}',
            '\u{fe0f}',
            '\u{e0041}',
            '\u{600}',
            '\u{fff9}',
            '\u{110bd}',
            '\u{61c}',
            '\u{200e}',
        ] {
            assert!(is_refused_invisible(c), "{c:?}");
        }
        for c in [
            'a',
            ' ',
            '\u{200c}',
            '\u{200d}',
            '\u{301}',
            '\u{5d0}',
            '\u{1f600}',
        ] {
            assert!(!is_refused_invisible(c), "{c:?}");
        }
        // Every format character except the few Unicode excludes is default
        // ignorable (a check of the table against the crate's categories).
        let not_ignorable = |c: u32| {
            matches!(c, 0x600..=0x605 | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2
                | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0xFFF9..=0xFFFB)
        };
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if c.general_category() == GeneralCategory::Format && !not_ignorable(u32::from(c)) {
                assert!(is_default_ignorable(c), "{:04X}", u32::from(c));
            }
        }
    }

    proptest::proptest! {
        /// The ASCII fast path gives what the Unicode passes give.
        #[test]
        fn the_ascii_fast_path_is_the_unicode_key(s in "[\\x00-\\x7f]{0,40}") {
            proptest::prop_assert_eq!(canonical_key(&s), unicode_key(&s));
        }
    }

    #[test]
    fn every_ascii_character_keys_as_the_unicode_passes_key_it() {
        for b in 0u8..=0x7f {
            let s = format!("x{}Y", char::from(b));
            assert_eq!(canonical_key(&s), unicode_key(&s), "byte {b:#04x}");
            // What lets `validate::stored_text` skip its invisible check.
            assert!(!is_refused_invisible(char::from(b)), "byte {b:#04x}");
        }
    }
}
