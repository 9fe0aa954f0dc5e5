//! `canonical_key`, `SessionId::from_str` and the input validation of the
//! account and session repositories (on an in-memory SQLite database) on
//! arbitrary input: never a panic, only typed errors, exact round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| persist_fuzz::input_validation(data));
