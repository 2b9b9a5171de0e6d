//! Fuzzes whole client sessions through a real proxy to stub backends. The properties live
//! in `src/session_check.rs`, shared with the stable corpus replay test
//! `proxy/tests/session_corpus.rs`; see docs/FUZZING.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/session_check.rs"]
mod session_check;

fuzz_target!(|data: &[u8]| {
    session_check::check(data);
});
