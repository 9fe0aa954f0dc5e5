//! The password file (`~/.pgpass`, `PGPASSFILE`), read as libpq reads it.
//!
//! One entry per line, `host:port:database:user:password`; `#` starts a
//! comment line; a field of just `*` matches anything; `\:` and `\\` stand
//! for `:` and `\` (a backslash escapes any character). The first matching
//! line wins. The file is ignored, with a warning, when it is not a regular
//! file or when its group or others have any access to it.

use std::path::Path;

/// One line of the file: the four match fields and the password.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Entry {
    fields: [Field; 4],
    password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Any,
    Exactly(String),
}

impl Field {
    fn matches(&self, value: &str) -> bool {
        match self {
            Field::Any => true,
            Field::Exactly(v) => v == value,
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("fields", &self.fields)
            .field("password", &"***")
            .finish()
    }
}

/// The entries of the password file at `path`; `None` when it is missing,
/// unreadable, not a regular file or readable by group or others.
pub(super) fn read(path: &Path) -> Option<Vec<Entry>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!(
            path = %path.display(),
            "password file is not a plain file; ignored"
        );
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) \
                 or less; ignored"
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    Some(parse(&text))
}

/// Parses the file's text; malformed lines (fewer than five fields) are
/// skipped, as libpq does.
pub(super) fn parse(text: &str) -> Vec<Entry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let mut fields = Vec::with_capacity(4);
    let mut chars = line.chars();
    while fields.len() < 4 {
        let mut value = String::new();
        let mut escaped_star = false;
        let mut ended = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) => {
                        escaped_star |= n == '*' && value.is_empty();
                        value.push(n);
                    }
                    None => return None,
                },
                ':' => {
                    ended = true;
                    break;
                }
                c => value.push(c),
            }
        }
        if !ended {
            return None;
        }
        fields.push(if value == "*" && !escaped_star {
            Field::Any
        } else {
            Field::Exactly(value)
        });
    }
    // The rest of the line is the password, with its escapes removed.
    let mut password = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => password.extend(chars.next()),
            c => password.push(c),
        }
    }
    let fields: [Field; 4] = fields.try_into().ok()?;
    Some(Entry { fields, password })
}

/// The password of the first entry matching the connection.
pub(super) fn lookup(
    entries: &[Entry],
    host: &str,
    port: u16,
    db: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    entries
        .iter()
        .find(|e| {
            e.fields[0].matches(host)
                && e.fields[1].matches(&port)
                && e.fields[2].matches(db)
                && e.fields[3].matches(user)
        })
        .map(|e| e.password.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_escapes_and_first_match() {
        let entries = parse(
            "# a comment\n\
             \n\
             db.example:5432:game:alice:first\n\
             *:*:game:alice:second\n\
             h\\:x:*:*:bob:co\\:lon\\\\back\n\
             \\*:*:*:carol:literal-star\n\
             *:6543:*:*:any\\\n\
             too:few:fields\n\
             localhost:5432:*:dave:pa:ss:word\r\n",
        );
        assert_eq!(entries.len(), 6, "{entries:?}");
        let pw = |h, p, d, u| lookup(&entries, h, p, d, u);
        assert_eq!(
            pw("db.example", 5432, "game", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(
            pw("other", 5432, "game", "alice").as_deref(),
            Some("second")
        );
        assert_eq!(
            pw("db.example", 5433, "game", "alice").as_deref(),
            Some("second")
        );
        assert_eq!(pw("h:x", 1, "any", "bob").as_deref(), Some("co:lon\\back"));
        assert_eq!(pw("h", 1, "any", "bob"), None);
        // An escaped star is a literal star, not a wildcard.
        assert_eq!(pw("*", 1, "x", "carol").as_deref(), Some("literal-star"));
        assert_eq!(pw("host", 1, "x", "carol"), None);
        // A trailing lone backslash is dropped; the port field matches text.
        assert_eq!(pw("h", 6543, "d", "u").as_deref(), Some("any"));
        // Unescaped colons after the fourth field belong to the password.
        assert_eq!(
            pw("localhost", 5432, "x", "dave").as_deref(),
            Some("pa:ss:word")
        );
        assert_eq!(pw("nowhere", 1, "x", "nobody"), None);
        assert!(!format!("{entries:?}").contains("first"));
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_access_makes_the_file_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        for (mode, used) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read(&path).is_some(), used, "mode {mode:o}");
        }
        assert!(
            read(dir.path()).is_none(),
            "a directory is no password file"
        );
        assert!(read(&dir.path().join("missing")).is_none());
    }
}
