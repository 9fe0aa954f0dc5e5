//! Embeds `migrations/<dialect>/NNNN_name.sql` into the binary: generates a
//! list of `(version, name, include_str!(file))` per dialect. Validation of the
//! set (gaps, duplicates) happens at run time in `Migrations::new`, where it is
//! unit-tested and also covers caller-supplied sets.
//!
//! Also checks the SQLite build setting: libsqlite3-sys compiles SQLite with
//! the flags in the `LIBSQLITE3_FLAGS` environment variable and offers no
//! cargo feature for it, so nothing in a manifest can set it. This script
//! sees the same environment that build does, wherever cargo was started, and
//! warns when the variable does not give each connection its own page cache.

use std::fmt::Write as _;
use std::path::Path;

/// The flag that gives each SQLite connection a page cache of its own.
const PAGE_CACHE_FLAG: &str = "-USQLITE_ENABLE_MEMORY_MANAGEMENT";

fn main() {
    check_sqlite_flags();
    println!("cargo:rerun-if-changed=migrations");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut out = String::new();
    for (dialect, konst) in [("sqlite", "SQLITE"), ("postgres", "POSTGRES")] {
        let dir = root.join(dialect);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        writeln!(out, "pub(crate) static {konst}: &[(i64, &str, &str)] = &[").unwrap();
        for path in files {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_else(|| panic!("migration file name is not UTF-8: {}", path.display()));
            let (num, name) = stem
                .split_once('_')
                .unwrap_or_else(|| panic!("migration file {stem}.sql is not named NNNN_name.sql"));
            let version: i64 = num.parse().unwrap_or_else(|_| {
                panic!("migration file {stem}.sql does not start with a version number")
            });
            writeln!(
                out,
                "    ({version}, {name:?}, include_str!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded_migrations.rs");
    std::fs::write(&dest, out).expect("write embedded_migrations.rs");
}

/// Warns (a `cargo:warning`, shown for builds of this workspace and of path
/// dependencies) when SQLite is being built with one process-wide page cache.
fn check_sqlite_flags() {
    println!("cargo:rerun-if-env-changed=LIBSQLITE3_FLAGS");
    let flags = std::env::var("LIBSQLITE3_FLAGS").unwrap_or_default();
    if !flags.split_whitespace().any(|f| f == PAGE_CACHE_FLAG) {
        println!(
            "cargo:warning=LIBSQLITE3_FLAGS does not contain {PAGE_CACHE_FLAG}: SQLite is built \
             with one page cache shared by every connection, and some connections read much \
             slower than others. Cargo reads .cargo/config.toml only from the directory it is \
             started in and its parents: start it inside this repository, or set the variable \
             in the environment or in your own .cargo/config.toml (README: Embedding persist)."
        );
    }
}
