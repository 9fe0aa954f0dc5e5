//! The canonical key under which emails and usernames are unique.

use unicode_normalization::UnicodeNormalization;

/// The canonical, case- and Unicode-insensitive form of an email or username.
///
/// Two strings collide (as emails, or as usernames) exactly when their keys are
/// equal. The key is Unicode's *compatibility caseless match* form
/// (`NFKD(casefold(NFKD(casefold(NFD(s)))))`, Unicode 3.13 D146), stored NFC-composed:
/// `Bob`/`bob`, `Foo@X.com`/`foo@x.com`, `é` precomposed or decomposed,
/// `ß`/`ss` and full-width `Ａ`/`A` all collide. It is computed here, not by the
/// database, so both backends agree whatever their collation or locale.
pub fn canonical_key(s: &str) -> String {
    let nfd: String = s.nfd().collect();
    let folded = caseless::default_case_fold_str(&nfd);
    let nfkd: String = folded.nfkd().collect();
    let folded = caseless::default_case_fold_str(&nfkd);
    folded.nfkd().nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::canonical_key;

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
    fn distinct_names_stay_distinct() {
        assert_ne!(canonical_key("bob"), canonical_key("bobby"));
        assert_ne!(canonical_key("bob"), canonical_key("b0b"));
        assert_ne!(canonical_key("ada"), canonical_key("ada "));
    }

    #[test]
    fn key_is_idempotent() {
        for s in ["Bob", "Jose\u{301}", "ﷺ", "ǅemal", "İstanbul"] {
            let k = canonical_key(s);
            assert_eq!(canonical_key(&k), k, "{s}");
        }
    }
}
