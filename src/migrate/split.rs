//! Splits a migration file into its statements, for migrations that run
//! outside a transaction one statement at a time.
//!
//! A lexical scan, not a parse: it knows PostgreSQL's and SQLite's quoting
//! (`'...'` with `''`, `"..."`, `E'...'` with backslash escapes, dollar quotes
//! `$tag$...$tag$`) and comments (`-- ...`, nested `/* ... */`), and cuts at
//! every `;` outside them. Each statement keeps its exact text (comments
//! inside it included); pieces that hold only comments and blanks are
//! dropped.

/// The statements of `sql`, in order, trimmed, without the `;`.
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        i = match b[i] {
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'E' | b'e') && !ident_byte(b, i - 1);
                skip_quoted(b, i, b'\'', escapes)
            }
            b'"' => skip_quoted(b, i, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1),
            b'/' if b.get(i + 1) == Some(&b'*') => skip_block_comment(b, i),
            b'$' => skip_dollar(b, i),
            b';' => {
                push(&mut out, &sql[start..i]);
                start = i + 1;
                i + 1
            }
            _ => i + 1,
        };
    }
    push(&mut out, &sql[start.min(sql.len())..]);
    out
}

/// The first line of a statement that is neither blank nor a comment.
pub(crate) fn first_line(sql: &str) -> String {
    let line = sql
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .unwrap_or("");
    const MAX: usize = 120;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

/// Whether the byte before `i` continues an identifier (so `E` is part of a
/// word, not the escape-string prefix).
fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn push(out: &mut Vec<String>, piece: &str) {
    let t = piece.trim();
    if !only_comments(t) {
        out.push(t.to_string());
    }
}

/// True when `s` holds nothing but comments and blanks.
fn only_comments(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
        } else if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
            i = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1);
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(b, i);
        } else {
            return false;
        }
    }
    true
}

/// The index just past the quoted text opening at `i` (or the end).
fn skip_quoted(b: &[u8], i: usize, q: u8, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if backslash && b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// The index just past the (nested) block comment opening at `i`.
fn skip_block_comment(b: &[u8], i: usize) -> usize {
    let (mut depth, mut j) = (0usize, i);
    while j < b.len() {
        if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// The index just past a dollar-quoted string opening at `i`, or `i + 1`
/// when the `$` opens none (a parameter `$1`, a `$` inside a word).
fn skip_dollar(b: &[u8], i: usize) -> usize {
    if ident_byte(b, i) {
        return i + 1;
    }
    let tag_end = match b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
    {
        Some(p) if b[i + 1 + p] == b'$' => i + 1 + p,
        _ => return i + 1,
    };
    if tag_end > i + 1 && b[i + 1].is_ascii_digit() {
        return i + 1; // $1$ is not a tag
    }
    let tag = &b[i..=tag_end];
    let body = tag_end + 1;
    b[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(b.len(), |p| body + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn cuts_at_semicolons_outside_quotes_and_comments() {
        let sql = "-- persist:no-transaction\n\
                   CREATE INDEX CONCURRENTLY i ON t (a); -- a; comment\n\
                   /* a ; /* nested ; */ still */ SELECT 'x;''y', \"we;ird\", E'\\';', $f$ a; b $f$;\n\
                   SELECT $1::int; DROP INDEX CONCURRENTLY IF EXISTS j\n-- trailing ; comment\n";
        assert_eq!(
            statements(sql),
            [
                "-- persist:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a)",
                "-- a; comment\n/* a ; /* nested ; */ still */ SELECT 'x;''y', \"we;ird\", E'\\';', $f$ a; b $f$",
                "SELECT $1::int",
                "DROP INDEX CONCURRENTLY IF EXISTS j\n-- trailing ; comment",
            ]
        );
        assert!(statements("-- only\n/* comments */ ;\n ; ").is_empty());
        assert_eq!(
            statements("SELECT 'unterminated; x"),
            ["SELECT 'unterminated; x"]
        );
    }
}
