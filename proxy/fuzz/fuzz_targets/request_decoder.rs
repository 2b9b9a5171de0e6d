//! Fuzzes the client request decoder. The properties live in `src/check.rs`, shared with the
//! stable corpus replay test `proxy/tests/decoder_corpus.rs`; see docs/FUZZING.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::check(data);
});
