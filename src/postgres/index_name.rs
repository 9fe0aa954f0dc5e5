//! The index a `CREATE INDEX CONCURRENTLY` statement builds, read from its
//! text: a no-transaction migration drops that index first when a failed
//! build left it INVALID.

/// The index name of `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS]
/// name ...`, unquoted; `None` for other statements and unnamed indexes.
pub(crate) fn concurrent_index_name(statement: &str) -> Option<String> {
    let code: String = statement
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let mut words = code.split_whitespace().flat_map(|w| {
        let cut = w.find('(').unwrap_or(w.len());
        [&w[..cut]].into_iter().filter(|s| !s.is_empty())
    });
    let mut next = || words.next().map(str::to_string);
    let is = |w: &Option<String>, k: &str| w.as_deref().is_some_and(|w| w.eq_ignore_ascii_case(k));
    if !is(&next(), "CREATE") {
        return None;
    }
    let mut w = next();
    if is(&w, "UNIQUE") {
        w = next();
    }
    if !is(&w, "INDEX") || !is(&next(), "CONCURRENTLY") {
        return None;
    }
    let mut name = next();
    if is(&name, "IF") {
        let (a, b) = (next(), next());
        if !is(&a, "NOT") || !is(&b, "EXISTS") {
            return None;
        }
        name = next();
    }
    let name = name.filter(|n| !n.eq_ignore_ascii_case("ON"))?;
    let last = name.rsplit('.').next().unwrap_or(&name);
    Some(
        match last.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(q) => q.replace("\"\"", "\""),
            None => last.to_lowercase(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::concurrent_index_name as name;

    #[test]
    fn finds_the_name_of_a_concurrent_index_build() {
        assert_eq!(
            name("-- c\nCREATE INDEX CONCURRENTLY IF NOT EXISTS Sessions_X ON sessions (a)"),
            Some("sessions_x".into())
        );
        assert_eq!(
            name("create unique index concurrently \"Odd\"\"Name\" on t(a)"),
            Some("Odd\"Name".into())
        );
        assert_eq!(
            name("CREATE INDEX CONCURRENTLY public.ix ON t (a)"),
            Some("ix".into())
        );
        assert_eq!(name("CREATE INDEX CONCURRENTLY ON t (a)"), None);
        assert_eq!(name("CREATE INDEX ix ON t (a)"), None);
        assert_eq!(name("DROP INDEX CONCURRENTLY ix"), None);
    }
}
