//! A small tokenizer for the `CREATE` text SQLite stores in `sqlite_schema`:
//! quotes and comments respected, whitespace collapsed, unquoted words
//! lower-cased. SQLite keeps CHECK constraints, `AUTOINCREMENT` and
//! partial-index predicates nowhere else.

use crate::types::schema::Check;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    /// An unquoted word: keyword, identifier or number.
    Word(&'a str),
    /// A quoted string or identifier, quotes included.
    Quoted(&'a str),
    /// Punctuation or an operator (`(`, `,`, `>=`, ...).
    Punct(&'a str),
}

fn is_word_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_' || ch == '$' || !ch.is_ascii()
}

pub(super) fn tokens(sql: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut it = sql.char_indices().peekable();
    while let Some((i, ch)) = it.next() {
        if ch.is_whitespace() {
            continue;
        }
        let rest = &sql[i..];
        if rest.starts_with("--") {
            for (_, c) in it.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            continue;
        }
        if let Some(body) = rest.strip_prefix("/*") {
            let end = body.find("*/").map_or(sql.len(), |e| i + 2 + e + 2);
            while it.peek().is_some_and(|(j, _)| *j < end) {
                it.next();
            }
            continue;
        }
        let close = match ch {
            '\'' => Some('\''),
            '"' => Some('"'),
            '`' => Some('`'),
            '[' => Some(']'),
            _ => None,
        };
        if let Some(close) = close {
            let mut end = sql.len();
            while let Some((j, c)) = it.next() {
                if c == close {
                    // A doubled quote is an escaped quote (not for `[...]`).
                    if close != ']' && it.peek().is_some_and(|(_, n)| *n == close) {
                        it.next();
                        continue;
                    }
                    end = j + c.len_utf8();
                    break;
                }
            }
            out.push(Tok::Quoted(&sql[i..end]));
            continue;
        }
        if is_word_char(ch) {
            let mut end = i + ch.len_utf8();
            while let Some((j, c)) = it.peek().copied() {
                if is_word_char(c) {
                    end = j + c.len_utf8();
                    it.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Word(&sql[i..end]));
            continue;
        }
        let is_op = |c: char| matches!(c, '<' | '>' | '=' | '!' | '|');
        let mut end = i + ch.len_utf8();
        if is_op(ch) {
            while let Some((j, c)) = it.peek().copied() {
                if is_op(c) {
                    end = j + c.len_utf8();
                    it.next();
                } else {
                    break;
                }
            }
        }
        out.push(Tok::Punct(&sql[i..end]));
    }
    out
}

/// Tokens joined canonically: one space between tokens except inside
/// parentheses and before commas and around dots; unquoted words lower-cased.
pub(super) fn normalise(toks: &[Tok<'_>]) -> String {
    let mut s = String::new();
    let mut prev: Option<Tok<'_>> = None;
    for t in toks {
        let text = match t {
            Tok::Word(w) => w.to_lowercase(),
            Tok::Quoted(q) | Tok::Punct(q) => (*q).to_string(),
        };
        let space = match (prev, t) {
            (None, _) => false,
            (Some(Tok::Punct("(" | ".")), _) => false,
            (_, Tok::Punct(")" | "," | ".")) => false,
            // A function call: `length(x)`, not `length (x)`.
            (Some(Tok::Word(_) | Tok::Quoted(_)), Tok::Punct("(")) => {
                matches!(prev, Some(Tok::Word(w)) if is_keyword(w))
            }
            _ => true,
        };
        if space {
            s.push(' ');
        }
        s.push_str(&text);
        prev = Some(*t);
    }
    s
}

/// Keywords after which a parenthesis is not a call (`IN (...)`, `AND (...)`).
fn is_keyword(w: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "and", "or", "not", "in", "between", "is", "like", "glob", "check", "when", "then", "else",
        "case", "exists", "where",
    ];
    KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k))
}

/// An identifier token without its quotes.
fn unquote(t: &Tok<'_>) -> String {
    match t {
        Tok::Word(w) => (*w).to_string(),
        Tok::Quoted(q) => {
            let mut chars = q.chars();
            let open = chars.next();
            let inner = q
                .get(1..q.len().saturating_sub(1))
                .unwrap_or("")
                .to_string();
            match open {
                Some('"') => inner.replace("\"\"", "\""),
                Some('`') => inner.replace("``", "`"),
                Some('\'') => inner.replace("''", "'"),
                _ => inner,
            }
        }
        Tok::Punct(p) => (*p).to_string(),
    }
}

/// The CHECK constraints of a `CREATE TABLE` text.
pub(super) fn checks(toks: &[Tok<'_>]) -> Vec<Check> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let is_check = matches!(toks[i], Tok::Word(w) if w.eq_ignore_ascii_case("CHECK"))
            && matches!(toks.get(i + 1), Some(Tok::Punct("(")));
        if !is_check {
            i += 1;
            continue;
        }
        let name = match (i.checked_sub(2).map(|j| &toks[j]), i.checked_sub(1)) {
            (Some(Tok::Word(w)), Some(j)) if w.eq_ignore_ascii_case("CONSTRAINT") => {
                Some(unquote(&toks[j]))
            }
            _ => None,
        };
        let start = i + 2;
        let mut depth = 1usize;
        let mut j = start;
        while j < toks.len() {
            match toks[j] {
                Tok::Punct("(") => depth += 1,
                Tok::Punct(")") => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let inner = &toks[start..j.min(toks.len())];
        out.push(Check {
            name,
            definition: format!("CHECK ({})", normalise(inner)),
        });
        i = j + 1;
    }
    out
}

/// The predicate of a partial index: the text after a top-level `WHERE`.
pub(super) fn where_clause(sql: &str) -> Option<String> {
    let toks = tokens(sql);
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct("(") => depth += 1,
            Tok::Punct(")") => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case("WHERE") => {
                let rest = toks.get(i + 1..).unwrap_or(&[]);
                let rest = match rest.last() {
                    Some(Tok::Punct(";")) => &rest[..rest.len() - 1],
                    _ => rest,
                };
                return Some(normalise(rest));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_found_named_and_normalised() {
        let sql = "CREATE TABLE t (\n  a INTEGER NOT NULL CHECK (a   BETWEEN 0 AND 5), -- c\n  \
                   b TEXT CONSTRAINT \"b len\" CHECK(length(b)<=3 /* x */),\n  \
                   c TEXT DEFAULT 'CHECK (no)',\n  CHECK (a >= length( b )) , CHECK(b IN ('X','y'))\n) STRICT";
        let got = checks(&tokens(sql));
        assert_eq!(
            got,
            vec![
                Check {
                    name: None,
                    definition: "CHECK (a between 0 and 5)".into()
                },
                Check {
                    name: Some("b len".into()),
                    definition: "CHECK (length(b) <= 3)".into()
                },
                Check {
                    name: None,
                    definition: "CHECK (a >= length(b))".into()
                },
                Check {
                    name: None,
                    definition: "CHECK (b in ('X', 'y'))".into()
                },
            ]
        );
    }

    #[test]
    fn where_clauses_of_partial_indexes() {
        assert_eq!(
            where_clause("CREATE INDEX i ON t (a) WHERE a  >  0 AND (b IS NULL)"),
            Some("a > 0 and (b is null)".into())
        );
        assert_eq!(where_clause("CREATE INDEX i ON t (a)"), None);
    }

    #[test]
    fn tokenizer_survives_unterminated_input() {
        for sql in ["CHECK (", "'abc", "/* x", "\"q", "CHECK", "[x", "a -- b"] {
            let _ = checks(&tokens(sql));
            let _ = where_clause(sql);
        }
    }
}
