//! The SQLite sweep's checkpoint setting: a benchmark aid, not an option.

use super::Config;

impl Config {
    /// Benchmark aid, not part of the API: `true` makes SQLite sweep batches
    /// keep the automatic WAL checkpoint inside the writer gate, as before
    /// the passive checkpoint between batches, so `persist-bench` can
    /// measure both side by side. Default `false`.
    #[doc(hidden)]
    pub fn with_sqlite_sweep_autocheckpoint(mut self, inside_batches: bool) -> Self {
        self.sqlite_sweep_autocheckpoint = inside_batches;
        self
    }
}
