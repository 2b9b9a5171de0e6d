//! Replaying fuzz inputs on stable: the files of a corpus or artifacts folder, each run
//! through a target's checks, every failure named with its file and bytes. Shared by the
//! corpus replay tests (`proxy/tests/*_corpus.rs`), which include it with `#[path]`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The fuzz folder of the proxy crate.
pub const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// The files of `FUZZ_DIR/<rel>`, sorted; none if the folder does not exist.
pub fn files_in(rel: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(Path::new(FUZZ_DIR).join(rel)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on each file; names every file that fails (with its bytes as `show` renders
/// them), not just the first.
pub fn replay(files: &[PathBuf], check: fn(&[u8]), show: fn(&[u8]) -> String) -> Vec<String> {
    let mut failures = Vec::new();
    for path in files {
        let data = std::fs::read(path).expect("reading a corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failures.push(format!(
                "{}: {msg}\n    input: {}",
                path.display(),
                show(&data)
            ));
        }
    }
    failures
}

/// Panics with every failure of `files`, if any: `what` names them (e.g. "corpus inputs").
pub fn assert_replays(files: &[PathBuf], what: &str, check: fn(&[u8]), show: fn(&[u8]) -> String) {
    let failures = replay(files, check, show);
    assert!(
        failures.is_empty(),
        "{} of {} {what} fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
