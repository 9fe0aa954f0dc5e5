//! `Config::from_url` on arbitrary input: never panics, and neither
//! `redacted_url()`, `Debug` nor an error message shows a password.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| persist_fuzz::config_url(data));
