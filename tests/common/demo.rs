//! What `persist demo` documents about its players and its summary, for the
//! tests that run the binary and check its output.

/// The username of player `index` of a run with `seed`, as `persist demo`
/// names it (`demo-<seed in hex>-<index, 4 digits at least>`).
pub fn player_username(seed: u64, index: u32) -> String {
    format!("demo-{seed:x}-{index:04}")
}

/// The operation kinds of the demo's summary table, in its order.
pub const OPERATIONS: [&str; 9] = [
    "register",
    "login",
    "login_failed",
    "session_lookup",
    "loadout_save",
    "battle",
    "logout",
    "password_change",
    "account_delete",
];
